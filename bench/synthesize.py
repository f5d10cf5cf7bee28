"""CPU synthesis speed side by side with Bert-VITS2's code path: plain vs Voice vs ONNX, each in its own process.

    .venv/bin/python bench/synthesize.py --threads 2            # the lead's one-liner (~5 min on 2 cores)
    .venv/bin/python bench/synthesize.py --threads 1 2 --repeat 3

Random weights of the default 2.3 generator (build_generator(VoiceConfig()), 61M parameters), the default
knobs (vits.defaults.SYNTHESIS), one sentence (~3.6 s of audio) and 10 s. Every row is a fresh interpreter
(bench/synth_variants.py: warm-up, then best of --repeat), so no variant inherits another's malloc
state, thread pool or caches. "plain" is the anchor: Bert-VITS2's infer path (eval + no_grad, weight norm
per call, 1-D convs, default malloc); see synth_variants.py for what each variant and mode does. All
variants draw the same random numbers, so their audio must agree (max |diff| vs plain printed). Prints
figures; never fails on time. On a shared machine the ratios swing: run it alone, twice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LENGTHS = {"sentence": (40, 3.6), "10 s": (120, 10.0)}  # phones, target seconds


def _run(variant: str, mode: str, phones: int, seconds: float, threads: int, repeat: int, audio: str | None):
    cmd = [sys.executable, str(HERE / "synth_variants.py"), variant, "--mode", mode, "--phones", str(phones),
           "--seconds", str(seconds), "--threads", str(threads), "--repeat", str(repeat)]
    if audio:
        cmd += ["--audio", audio]
    done = subprocess.run(cmd, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"  {variant} {mode} failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch/onnxruntime CPU threads")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per variant (best is reported)")
    parser.add_argument("--variants", nargs="+", default=["plain", "voice", "onnx"])
    args = parser.parse_args(argv)

    import numpy as np

    print("command: " + " ".join([Path(sys.executable).name, "bench/synthesize.py"] + sys.argv[1:]))
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="koe-bench-synth-") as tmp:
        for threads in args.threads:
            print(f"\n{threads} thread(s), best of {args.repeat}, wall seconds; xN = plain / variant (wall, and CPU "
                  "time of all threads, steadier on a busy box)")
            jobs = [(name, "synth", *LENGTHS[name]) for name in LENGTHS]
            jobs += [("sentence + BERT", "bert", *LENGTHS["sentence"]),
                     ("first audio, 10 sentences", "first", *LENGTHS["sentence"])]
            for label, mode, phones, seconds in jobs:
                row, anchor, anchor_cpu, ref = [], None, None, None
                for variant in args.variants:
                    if mode == "first" and variant == "onnx":
                        continue  # the stream is Voice's; OnnxVoice streams the same way
                    audio = str(Path(tmp) / f"{variant}.npy") if mode == "synth" else None
                    result = _run(variant, mode, phones, seconds, threads, args.repeat, audio)
                    if result is None:
                        continue
                    cell = f"{variant} {result['best_s']:6.3f} s"
                    if variant == "plain":
                        anchor = result["best_s"]
                        ref = np.load(audio) if audio else None
                        anchor_cpu = result["cpu_s"]
                    elif anchor:
                        cell += f" x{anchor / result['best_s']:.2f} (CPU x{anchor_cpu / result['cpu_s']:.2f})"
                    if audio and ref is not None and variant != "plain":
                        got = np.load(audio)
                        diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
                        if variant == "voice":  # the torch path must give the plain audio (ONNX: printed)
                            worst = max(worst, diff)
                        cell += f" (max|diff| {diff:.1e})"
                    row.append(cell)
                audio_s = f"{result['audio_s']:.2f} s audio" if result else ""
                print(f"  {label:27s} {audio_s:14s} " + "   ".join(row))
    if not worst < 1e-3:
        print("WARNING: Voice's audio differs from plain by more than 1e-3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
