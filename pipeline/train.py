"""Train a voice: ``python -m pipeline.train Data/<voice>`` or ``torchrun --nproc_per_node N -m pipeline.train ...``.

Resumes automatically from the newest complete checkpoint in ``Data/<voice>/models/``; otherwise fine-tunes
from base model files (``--base``, ``models/G_0.pth``..., or config.yml ``base_model.folder``) or starts
from scratch. SIGTERM / Ctrl-C: finish the step, save, exit 0. Progress lines: see `vits.trainer` and
docs/training.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vits.errors import KoeError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.split("\n\n")[0])
    p.add_argument("voice", type=Path, help="the voice folder, e.g. Data/myvoice")
    p.add_argument("--max-steps", type=int, default=None, help="stop (and save) after this global step")
    p.add_argument("--batch-size", type=int, default=None, help="per-process batch size (default: config.json)")
    p.add_argument("--base", type=Path, default=None,
                   help="base model folder (G_0.pth, D_0.pth, DUR_0.pth, WD_0.pth) or G file to fine-tune from")
    p.add_argument("--wavlm", type=Path, default=None, help="WavLM model folder (default: config.yml 'wavlm')")
    p.add_argument("--no-wavlm", action="store_true", help="train without the WavLM discriminator")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: config.yml 'device')")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: from the machine)")
    return p


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from settings import load_settings
    from vits.trainer import DataProblems, TrainOptions, train

    rank = int(os.environ.get("RANK", "0"))
    try:
        settings = load_settings()
        wavlm = None if args.no_wavlm else (args.wavlm or settings.wavlm)
        base = args.base
        voice = args.voice.resolve()
        if base is None and not any((voice / "models").glob("G_*.pth")) and \
                (settings.base_model_folder / "G_0.pth").is_file():
            base = settings.base_model_folder
        opts = TrainOptions(voice_dir=voice, max_steps=args.max_steps, batch_size=args.batch_size, base=base,
                            wavlm=wavlm, use_wavlm=not args.no_wavlm,
                            device=args.device or settings.device, num_workers=args.num_workers)
        result = train(opts, log=_print)
    except DataProblems as exc:
        if rank == 0:
            print(str(exc), file=sys.stderr, flush=True)
        return 1
    except KoeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    if rank == 0:
        print(f"training finished at step {result.step} (epoch {result.epoch}, {result.reason})"
              + (f"; checkpoint {result.checkpoint}" if result.checkpoint else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
