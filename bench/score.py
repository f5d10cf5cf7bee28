"""Checkpoint scoring cost per checkpoint (prep/score.py) on this machine.

    python bench/score.py [--val 8] [--threads 2] [--tiny]

Builds a voice with the default (full-size) Bert-VITS2 2.3 generator at 44.1 kHz, random weights (its
durations, so its audio lengths, are those of an untrained model), `--val` val-list lines, and scores the
checkpoint with the bundled tiny.en (faster-whisper, int8) and the GE2E encoder: the first checkpoint
includes loading both models, the second is the steady-state cost per checkpoint. Built-in sentences are
left out (they need the BERT models). Prints seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny 16 kHz config instead")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from test_data import make_voice, tiny_config

    from prep.score import ScoreOptions, Scorer
    from vits.checkpoints import save_checkpoint
    from vits.config import VoiceConfig
    from vits.models import build_generator

    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            cfg = tiny_config(n_speakers=1)
        else:
            cfg = VoiceConfig()
            cfg.data.n_speakers, cfg.data.spk2id = 1, {"spk0": 0}
        voice = make_voice(Path(tmp), n_clips=8, n_val=args.val, n_speakers=1, cfg=cfg, seconds=(2.0, 4.0))
        torch.manual_seed(0)
        g = voice / "models" / "G_100.pth"
        save_checkpoint(g, build_generator(cfg), epoch=1, step=100, learning_rate=2e-4)
        scorer = Scorer(voice, ScoreOptions(device="cpu", builtin=False, max_val_items=args.val))
        for label in ("first checkpoint (loads tiny.en + GE2E, embeds the real clips)", "next checkpoint"):
            t0 = time.perf_counter()
            result = scorer.score_checkpoint(g)
            print(f"{label}: {time.perf_counter() - t0:.2f} s for {result['sentences']} sentences "
                  f"({args.threads} threads; cer {result['cer']}, similarity {result['speaker_similarity']})")


if __name__ == "__main__":
    main()
