"""Write the per-utterance BERT features `<wav>.bert.pt` for a voice (spec §7.8), and for a Bert-VITS2
2.2-CLAP voice each clip's CLAP audio embedding `<wav>.emo.npy` (2.2 spec §8.1).

    python -m pipeline.features Data/<voice> [--device cuda] [--num-gpus 2] [--download] [--clap auto]

Reads every line of filelists/train.list and val.list (7 fields, wav paths relative to the voice
folder), skips files that are already valid ([hidden, 2N+1] float32; emo: float32 [512, 1]), computes the
rest in batches and writes them atomically next to the wav (`x.wav` -> `x.bert.pt`, `x.emo.npy`). The
CLAP files are made for 2.2 voices only (config.json `"version": "2.2"` without `model.slm`; --clap yes/no
overrides). Lines whose fields are broken or whose word2ph does not match the tokenizer are listed as
`file:line: problem` at the end; the exit status is 1 if any line failed, else 0. Progress: KOE_PROGRESS
lines (stage "features"). The models come from `python -m pipeline.download bert` / `clap` (or
--download). The work itself is done by prep/features.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pipeline import cli
from prep.features import (
    CLIPS_PER_CLAP_BATCH,
    DEFAULT_LISTS,
    MAX_BATCH_TOKENS,
    UTTERANCES_PER_BATCH,
    compute_emo_features,
    compute_features,
    load_clap,
    load_models,
    pending,
    pending_emo,
    read_lists,
    run_shards,
)
from vits.progress import ProgressMeter

STAGE = "features"


def _parser() -> argparse.ArgumentParser:
    p = cli.parser(STAGE, __doc__)
    p.add_argument("voice_dir", help=cli.VOICE_HELP)
    p.add_argument("--lists", nargs="+", default=list(DEFAULT_LISTS),
                   help="list files relative to the voice folder (default: train.list and val.list)")
    p.add_argument("--config", default=None, help="config.yml with the bert: model folders (default: the repo's)")
    p.add_argument("--bert-zh", default=None, help="Chinese BERT folder (default from config.yml)")
    p.add_argument("--bert-jp", default=None, help="Japanese BERT folder (default from config.yml)")
    p.add_argument("--bert-en", default=None, help="English BERT folder (default from config.yml)")
    p.add_argument("--bert-ko", default=None, help="Korean BERT folder, klue/roberta-large (default from config.yml)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default from config.yml)")
    p.add_argument("--num-gpus", type=int, default=1, help="split the work over this many GPUs (cuda:0..N-1)")
    p.add_argument("--batch-size", type=int, default=UTTERANCES_PER_BATCH,
                   help=f"utterances per BERT batch (default {UTTERANCES_PER_BATCH}; not the training batch size)")
    p.add_argument("--max-batch-tokens", type=int, default=MAX_BATCH_TOKENS, help="padded tokens per forward")
    p.add_argument("--fp16", action="store_true", help="run the models in float16 (GPU only)")
    p.add_argument("--force", action="store_true", help="recompute files that are already valid")
    p.add_argument("--download", action="store_true",
                   help="download missing BERT models first (as python -m pipeline.download bert)")
    p.add_argument("--clap", choices=["auto", "yes", "no"], default="auto",
                   help="CLAP emotion files <clip>.emo.npy: auto = for 2.2-CLAP voices only (default)")
    p.add_argument("--clap-model", default=None, help="CLAP model folder (default: clap: in config.yml)")
    p.add_argument("--clap-batch-size", type=int, default=CLIPS_PER_CLAP_BATCH,
                   help=f"clips per CLAP batch (default {CLIPS_PER_CLAP_BATCH})")
    p.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/N": worker of --num-gpus
    return p


def _model_dirs(args) -> tuple[dict[str, Path], str, Path]:
    from settings import load_settings

    settings = load_settings(args.config)
    dirs = dict(settings.bert)
    for lang, value in (("ZH", args.bert_zh), ("JP", args.bert_jp), ("EN", args.bert_en), ("KO", args.bert_ko)):
        if value:
            dirs[lang] = Path(value).resolve()
    settings.use_hub_endpoint()
    clap_dir = Path(args.clap_model).resolve() if args.clap_model else settings.clap
    return dirs, args.device or settings.resolved_device(), clap_dir


def _wants_clap(args, voice_dir: Path) -> bool:
    if args.clap != "auto":
        return args.clap == "yes"
    from prep.voice_version import voice_version

    return voice_version(voice_dir) == "2.2"


def _clap_stage(args, items, clap_dir: Path, device: str, meter: ProgressMeter, offset: int) -> list[str]:
    """Write the missing `<clip>.emo.npy` files; returns the failed lines. Progress continues after `offset`."""
    todo = pending_emo(items, args.force)
    print(f"features: CLAP emotion: {len(todo)} to compute, {len(items) - len(todo)} already valid", flush=True)
    if not todo:
        return []
    if args.download:
        from vits.clap import download_clap

        download_clap(clap_dir, log=lambda m: print(m, flush=True))
    clap = load_clap(clap_dir, device)
    t0 = time.monotonic()
    result = compute_emo_features(clap, todo, batch_size=args.clap_batch_size, progress=lambda done, item: print(
        meter.update(offset + done, item=item, message="CLAP emotion"), flush=True))
    print(f"features: CLAP emotion: {result.written} written, {len(result.failed)} failed "
          f"({time.monotonic() - t0:.1f} s on {device})", flush=True)
    return result.failed


def _body(args, argv: list[str]) -> int:
    voice_dir = cli.voice_path(args.voice_dir)
    dirs, device, clap_dir = _model_dirs(args)
    items, problems = read_lists(voice_dir, args.lists)
    todo = pending(items, dirs, args.force)
    skipped = len(items) - len(todo)
    # CLAP runs in this process once the BERT part is done (not in the --num-gpus workers)
    clap_items = items if not args.shard and _wants_clap(args, voice_dir) else []
    clap_total = len(pending_emo(clap_items, args.force))
    if args.shard:
        index, count = (int(x) for x in args.shard.split("/"))
        todo = todo[index::count]
    elif args.num_gpus > 1 and todo:
        n = args.num_gpus
        print(f"features: {len(todo)} to compute on {n} GPUs, {skipped} already valid", flush=True)
        meter = ProgressMeter(STAGE, total=len(todo) + clap_total)
        commands = [[sys.executable, "-m", "pipeline.features", *argv, "--shard", f"{i}/{n}", "--num-gpus", "1",
                     "--device", f"cuda:{i}", "--clap", "no"] for i in range(n)]
        status = run_shards(commands, echo=lambda i, line: print(f"[gpu {i}] {line}", flush=True),
                            progress=lambda done: print(meter.update(done), flush=True))
        failed = _clap_stage(args, clap_items, clap_dir, "cuda:0", meter, len(todo)) if clap_items else []
        for line in problems + failed:
            print(f"problem: {line}")
        if not status:
            cli.finish(STAGE, "done", step=len(todo) + clap_total, total=len(todo) + clap_total)
        return 1 if status or problems or failed else 0

    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    languages = sorted({it.language for it in todo})
    if args.download and todo:
        from vits.text.bert import download_bert_models

        download_bert_models(languages, dirs, log=lambda m: print(m, flush=True))
    bert = load_models(dirs, languages, device, fp16=args.fp16, max_batch_tokens=args.max_batch_tokens)
    meter = ProgressMeter(STAGE, total=len(todo) + clap_total)
    print(meter.update(0, message=f"{len(todo)} to compute, {skipped} already valid"), flush=True)
    t0 = time.monotonic()
    result = compute_features(bert, todo, batch_size=args.batch_size,
                              progress=lambda done, item: print(meter.update(done, item=item), flush=True))
    print(f"features: {result.written} written, {skipped} already valid, "
          f"{len(result.failed) + len(problems)} failed ({time.monotonic() - t0:.1f} s on {device})", flush=True)
    del bert  # free the BERT models before CLAP loads
    failed = result.failed + (_clap_stage(args, clap_items, clap_dir, device, meter, len(todo)) if clap_items else [])
    for line in problems + failed:
        print(f"problem: {line}", flush=True)
    if not args.shard:
        cli.finish(STAGE, "done", step=len(todo) + clap_total, total=len(todo) + clap_total)
    return 1 if failed or problems else 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    return cli.run(STAGE, lambda: _body(args, argv))


if __name__ == "__main__":
    sys.exit(main())
