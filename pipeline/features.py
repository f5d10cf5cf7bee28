"""Write the per-utterance BERT features `<wav>.bert.pt` for a voice (spec §7.8).

    python -m pipeline.features Data/<voice> [--device cuda] [--num-gpus 2] [--download]

Reads every line of filelists/train.list and val.list (7 fields, wav paths relative to the voice
folder), skips files that are already valid ([hidden, 2N+1] float32), computes the rest in padded
batches and writes them atomically next to the wav (`x.wav` -> `x.bert.pt`). Lines whose fields are
broken or whose word2ph does not match the tokenizer are listed as `file:line: problem` at the end;
the exit status is 1 if any line failed, else 0. Progress: KOE_PROGRESS lines (stage "features").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vits.errors import KoeError
from vits.progress import ProgressMeter, format_progress, parse_progress

STAGE = "features"


@dataclass
class Item:
    """One list line to featurise."""

    where: str  # list file:line
    out: Path
    language: str
    norm_text: str
    phones: list[str]
    tones: list[int]
    word2ph: list[int]


def bert_path(wav: str | os.PathLike) -> Path:
    """`x.wav`/`x.WAV` -> `x.bert.pt` (spec §7.8)."""
    text = str(wav).replace(".WAV", ".wav")
    return Path(re.sub(r"\.wav$", "", text) + ".bert.pt") if text.endswith(".wav") else Path(text + ".bert.pt")


def read_lists(voice_dir: Path, lists: list[str]) -> tuple[list[Item], list[str]]:
    """Parse the list files; returns (items, problems). Duplicate wav paths are kept once."""
    items: list[Item] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for name in lists:
        path = Path(name) if Path(name).is_absolute() else voice_dir / name
        if not path.is_file():
            if name in ("filelists/train.list", "filelists/val.list"):
                problems.append(f"{path}: missing (run python -m pipeline.text {voice_dir} first)")
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            fields = line.split("|")
            if len(fields) != 7:
                problems.append(f"{where}: expected 7 fields separated by '|', found {len(fields)}")
                continue
            wav, _speaker, language, norm_text, phones, tones, word2ph = fields
            try:
                tone_list = [int(t) for t in tones.split()]
                w2p = [int(w) for w in word2ph.split()]
            except ValueError:
                problems.append(f"{where}: tones and word2ph must be integers")
                continue
            phone_list = phones.split()
            if language not in ("ZH", "JP", "EN"):
                problems.append(f"{where}: unknown language {language!r} (use ZH, JP or EN)")
                continue
            if len(tone_list) != len(phone_list) or sum(w2p) != len(phone_list):
                problems.append(f"{where}: {len(phone_list)} phones, {len(tone_list)} tones, word2ph sums to "
                                f"{sum(w2p)} (re-run python -m pipeline.text)")
                continue
            wav_path = Path(wav)
            if not wav_path.is_absolute():
                wav_path = voice_dir / wav_path
            out = bert_path(wav_path)
            if out in seen:
                continue
            seen.add(out)
            items.append(Item(where, out, language, norm_text, phone_list, tone_list, w2p))
    return items, problems


def _hidden_size(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, ValueError, KeyError):
        return None


def is_valid(path: Path, hidden: int | None, n_phones: int) -> bool:
    """True if `path` holds a float32 tensor [hidden, 2*n_phones+1] (any hidden when unknown)."""
    import torch

    if not path.is_file():
        return False
    try:
        t = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated or foreign file: regenerate it
        return False
    return (isinstance(t, torch.Tensor) and t.dim() == 2 and t.dtype == torch.float32
            and t.shape[1] == 2 * n_phones + 1 and (hidden is None or t.shape[0] == hidden))


def _save_atomic(tensor, path: Path) -> None:
    import torch

    from vits.fileio import atomic_path

    with atomic_path(path) as tmp:  # a failed write leaves no temp file and no half tensor
        torch.save(tensor, tmp)


def _parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m pipeline.features", description=__doc__.split("\n\n")[0])
    p.add_argument("voice_dir", help="the voice folder, e.g. Data/myvoice")
    p.add_argument("--lists", nargs="+", default=["filelists/train.list", "filelists/val.list"],
                   help="list files relative to the voice folder (default: train.list and val.list)")
    p.add_argument("--config", default=None, help="config.yml with the bert: model folders (default: the repo's)")
    p.add_argument("--bert-zh", default=None, help="Chinese BERT folder (default from config.yml)")
    p.add_argument("--bert-jp", default=None, help="Japanese BERT folder (default from config.yml)")
    p.add_argument("--bert-en", default=None, help="English BERT folder (default from config.yml)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default from config.yml)")
    p.add_argument("--num-gpus", type=int, default=1, help="split the work over this many GPUs (cuda:0..N-1)")
    p.add_argument("--batch-size", type=int, default=32, help="utterances per batch")
    p.add_argument("--max-batch-tokens", type=int, default=8192, help="padded tokens per forward")
    p.add_argument("--fp16", action="store_true", help="run the models in float16 (GPU only)")
    p.add_argument("--force", action="store_true", help="recompute files that are already valid")
    p.add_argument("--download", action="store_true", help="download missing BERT models first (HF_ENDPOINT mirror)")
    p.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/N": worker of --num-gpus
    return p.parse_args(argv)


def _model_dirs(args) -> tuple[dict[str, Path], str]:
    from settings import load_settings

    settings = load_settings(args.config)
    dirs = dict(settings.bert)
    for lang, value in (("ZH", args.bert_zh), ("JP", args.bert_jp), ("EN", args.bert_en)):
        if value:
            dirs[lang] = Path(value).resolve()
    if settings.hub_endpoint and not os.environ.get("HF_ENDPOINT"):
        os.environ["HF_ENDPOINT"] = settings.hub_endpoint
    return dirs, args.device or settings.resolved_device()


def _run_workers(args, argv: list[str], total: int) -> int:
    """Start one worker per GPU, merge their progress lines, return the worst exit status."""
    n = args.num_gpus
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-m", "pipeline.features", *argv, "--shard", f"{i}/{n}", "--num-gpus", "1",
               "--device", f"cuda:{i}"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1))
    done = [0] * n
    lock = threading.Lock()
    meter = ProgressMeter(STAGE, total=total)

    def pump(i: int, proc) -> None:
        for line in proc.stdout:
            fields = parse_progress(line)
            with lock:
                if fields is None:
                    print(f"[gpu {i}] {line.rstrip()}", flush=True)
                elif fields.get("step") is not None:
                    done[i] = int(fields["step"])
                    print(meter.update(sum(done)), flush=True)

    threads = [threading.Thread(target=pump, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    codes = [p.wait() for p in procs]
    for t in threads:
        t.join()
    return max(codes)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    voice_dir = Path(args.voice_dir)
    if not voice_dir.is_dir():
        print(f"error: {voice_dir}: no such voice folder → create it with python -m pipeline.ingest", file=sys.stderr)
        return 2
    try:
        dirs, device = _model_dirs(args)
    except KoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    items, problems = read_lists(voice_dir, args.lists)
    hidden = {lang: _hidden_size(folder) for lang, folder in dirs.items()}
    todo = [it for it in items if args.force or not is_valid(it.out, hidden.get(it.language), len(it.phones))]
    skipped = len(items) - len(todo)
    if args.shard:
        index, count = (int(x) for x in args.shard.split("/"))
        todo = todo[index::count]
    elif args.num_gpus > 1 and todo:
        print(f"features: {len(todo)} to compute on {args.num_gpus} GPUs, {skipped} already valid", flush=True)
        status = _run_workers(args, argv, len(todo))
        for line in problems:
            print(f"problem: {line}")
        return 1 if status or problems else 0

    import torch

    from vits.text import Cleaned
    from vits.text.bert import BertFeatures, download_bert_models

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if args.download and todo:
        needed = sorted({it.language for it in todo})
        try:
            download_bert_models(needed, dirs, log=lambda m: print(m, flush=True))
        except KoeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    dtype = torch.float16 if args.fp16 and device.startswith("cuda") else torch.float32
    bert = BertFeatures(dirs, device=device, dtype=dtype, max_batch_tokens=args.max_batch_tokens)
    try:  # load every model needed up front: a missing folder stops the stage with its fix
        for lang in sorted({it.language for it in todo}):
            bert.hidden_size(lang)
    except KoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meter = ProgressMeter(STAGE, total=len(todo))
    print(meter.update(0, message=f"{len(todo)} to compute, {skipped} already valid"), flush=True)
    failed: list[str] = []
    written = 0
    t0 = time.monotonic()
    for start in range(0, len(todo), args.batch_size):
        chunk = todo[start:start + args.batch_size]
        cleaned = [Cleaned(it.language, it.norm_text, it.phones, it.tones, it.word2ph) for it in chunk]
        try:
            feats = bert.features_batch(cleaned)
            pairs = list(zip(chunk, feats))
        except KoeError:
            pairs = []
            for it, c in zip(chunk, cleaned):  # find the offending lines one by one
                try:
                    pairs.append((it, bert.features(c)))
                except KoeError as one:
                    failed.append(f"{it.where}: {one}")
        for it, feat in pairs:
            if not it.out.parent.is_dir():
                failed.append(f"{it.where}: folder {it.out.parent} does not exist (is the wav path right?)")
                continue
            _save_atomic(feat, it.out)
            written += 1
        print(meter.update(start + len(chunk), item=str(chunk[-1].out.name)), flush=True)
    elapsed = time.monotonic() - t0
    print(f"features: {written} written, {skipped} already valid, {len(failed) + len(problems)} failed "
          f"({elapsed:.1f} s on {device})", flush=True)
    for line in problems + failed:
        print(f"problem: {line}", flush=True)
    if not args.shard:
        print(format_progress(STAGE, step=len(todo), total=len(todo), message="done"), flush=True)
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
