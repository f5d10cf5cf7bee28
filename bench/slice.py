"""Slicing speed: minutes of audio sliced per second of wall time (silero-vad + planning + writing clips).

    python bench/slice.py [--minutes 5] [--workers 1] [--threads 1]

Builds recordings of real speech (espeak-ng sentences with pauses, 22.05 kHz, split into files of about
one minute) in a temporary voice folder and runs the slice stage on them. Also reports the VAD alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "We are recording a few sentences to measure how fast the slicer runs.",
    "Every clip should be between two and twelve seconds long.",
    "Silence between sentences lets the voice activity detector find the cuts.",
    "Long speech without a pause is cut at its quietest point.",
]


def make_recordings(folder: Path, minutes: float) -> float:
    """Write ~1-minute recordings of espeak speech with pauses under folder/raw/spk; returns seconds written."""
    import soundfile as sf
    from helpers_audio import espeak_audio

    from vits.voice_folder import RAW

    rng = np.random.default_rng(0)
    pieces = [espeak_audio(s, "en") for s in SENTENCES]
    sr = pieces[0][1]
    total, n = 0.0, 0
    (folder / RAW / "spk").mkdir(parents=True, exist_ok=True)
    while total < minutes * 60:
        parts = []
        while sum(len(p) for p in parts) < 60 * sr:
            audio = pieces[rng.integers(len(pieces))][0]
            parts += [audio, (rng.standard_normal(int(rng.uniform(0.2, 1.0) * sr)) * 1e-3).astype(np.float32)]
        rec = np.concatenate(parts)
        n += 1
        sf.write(str(folder / RAW / "spk" / f"rec_{n:03d}.wav"), rec, sr, subtype="PCM_16")
        total += len(rec) / sr
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    a = parser.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from prep.audio import load_audio
    from prep.slicing import load_vad, slice_voice, speech_probabilities
    from vits.voice_folder import RAW

    with tempfile.TemporaryDirectory() as tmp:
        voice = Path(tmp) / "bench"
        seconds = make_recordings(voice, a.minutes)
        load_vad()
        first = sorted((voice / RAW / "spk").iterdir())[0]
        audio16k, _, _ = load_audio(first, sample_rate=16000)
        t0 = time.perf_counter()
        speech_probabilities(audio16k)
        vad_rate = len(audio16k) / 16000 / 60 / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        manifest = slice_voice(voice, workers=a.workers)
        wall = time.perf_counter() - t0
        clips = sum(len(v["clips"]) for v in manifest.values())
    rate = seconds / 60 / wall
    print(f"sliced {seconds / 60:.1f} min of speech into {clips} clips in {wall:.1f} s with {a.workers} worker(s), "
          f"{a.threads} thread(s): {rate:.2f} min of audio per second ({seconds / wall:.0f}x realtime); "
          f"VAD alone {vad_rate:.2f} min/s")
    print("BENCH_JSON " + json.dumps({"minutes": seconds / 60, "clips": clips, "wall_s": wall,
                                      "minutes_per_second": rate, "vad_minutes_per_second": vad_rate,
                                      "workers": a.workers, "threads": a.threads, "cpus": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
