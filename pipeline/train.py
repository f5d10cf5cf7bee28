"""Train a voice: ``python -m pipeline.train Data/<voice>`` or ``torchrun --nproc_per_node N -m pipeline.train ...``.

Resumes automatically from the newest complete checkpoint in ``Data/<voice>/models/``; otherwise fine-tunes
from base model files (``--base``, ``models/G_0.pth``..., or config.yml ``base_model.folder`` — ``base_model_22.folder`` for 2.2-CLAP voices — unless
``--no-base``) or starts from scratch (the rule: `vits.train.plan`, which the studio's Train tab shows). One run per voice: a second one (studio, command line or torchrun) stops at once with
``error: … already training: pid N on …`` (``Data/<voice>/train.lock``; a lock left by a crashed run is
taken over with a warning). SIGTERM / Ctrl-C: finish the step, save, exit 0. Progress lines: see `vits.train` and
docs/training.md. Exit codes: 0 done, 1 failed (``error: ...`` on stderr), 2 usage.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline import cli
from prep.voice_version import voice_version
from vits.train.plan import default_base
from vits.voice_folder import models_dir


def build_parser():
    p = cli.parser("train", __doc__)
    p.add_argument("voice", help=cli.VOICE_HELP)
    p.add_argument("--max-steps", type=int, default=None, help="stop (and save) after this global step")
    p.add_argument("--batch-size", type=int, default=None, help="per-process batch size (default: config.json)")
    p.add_argument("--base", type=Path, default=None,
                   help="base model folder (G_0.pth, D_0.pth, DUR_0.pth, WD_0.pth) or G file to fine-tune from")
    p.add_argument("--no-base", action="store_true",
                   help="do not fine-tune from config.yml's base_model.folder (models/G_0.pth still counts)")
    p.add_argument("--wavlm", type=Path, default=None, help="WavLM model folder (default: config.yml 'wavlm')")
    p.add_argument("--no-wavlm", action="store_true", help="train without the WavLM discriminator")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: config.yml 'device')")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: from the machine)")
    return p


def _print(line: str) -> None:
    print(line, flush=True)


def _train(args) -> int:
    from pipeline.score import score_options
    from prep.score import TrainingScorer
    from settings import load_settings
    from vits.train import DataProblems, TrainOptions, train
    from vits.voice_lock import VoiceBusy

    rank = int(os.environ.get("RANK", "0"))
    settings = load_settings()
    wavlm = None if args.no_wavlm else (args.wavlm or settings.wavlm)
    voice = cli.voice_path(args.voice).resolve()
    configured = settings.base_model_folder_for(voice_version(voice))
    base = args.base or (None if args.no_base else default_base(models_dir(voice), configured))
    # Without --no-wavlm, config.json's train.use_wavlm decides (None).
    opts = TrainOptions(voice_dir=voice, max_steps=args.max_steps, batch_size=args.batch_size, base=base,
                        wavlm=wavlm, use_wavlm=False if args.no_wavlm else None,
                        device=args.device or settings.device,
                        num_workers=args.num_workers,
                        scorer=TrainingScorer(voice, score_options(settings, args.device)))
    try:
        result = train(opts, log=_print)
    except (DataProblems, VoiceBusy) as exc:
        # Every rank finds the same problems (or learns from rank 0 that the voice is busy): rank 0 reports them.
        return cli.error("train", str(exc)) if rank == 0 else 1
    if rank == 0:
        print(f"training finished at step {result.step} (epoch {result.epoch}, {result.reason})"
              + (f"; checkpoint {result.checkpoint}" if result.checkpoint else ""), flush=True)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run("train", lambda: _train(args))


if __name__ == "__main__":
    sys.exit(main())
