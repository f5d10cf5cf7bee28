"""Vocal separation cost (prep/separate.py): real-time factor and peak memory on a network of the real size.

    python bench/separate.py [--minutes 1,10] [--threads N]

No separation weights ship in a package here, so the network is the random-weight MDX-Net of
tests/helpers_mdx.py at UVR-MDX-NET-Voc_FT's dimensions (n_fft 7680, hop 1024, dim_f 3072, dim_t 256;
10.9 M parameters against the real file's ~16.7 M): RANDOM WEIGHTS, so the figures are cost only, not
separation quality. The cost is that of the real pipeline: STFT, one onnxruntime run per 253440-sample
chunk, iSTFT, crossfade. Each length runs in its own process on a stereo 44.1 kHz WAV (tones and noise),
read in blocks with `Separator.stream_file`; it prints seconds of audio, wall time, RTF (wall / audio),
seconds per chunk, and peak RSS (ru_maxrss) before and after separating. Timing only: it never fails on
a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from helpers_mdx import REAL
from prep.separate import Separator

model, wav, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
sep = Separator(model, REAL)
list(sep.stream([__import__("numpy").zeros((2, 1000), "float32")]))  # one chunk: onnxruntime's first run allocates
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start, frames, chunks = time.perf_counter(), 0, 0
for block in sep.stream_file(wav):
    frames += block.shape[-1]
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
chunks = -(-frames // sep.step)
print(json.dumps({{"seconds": frames / REAL.sample_rate, "wall": wall, "chunks": chunks,
                  "rss_before_mb": before, "rss_peak_mb": after}}))
"""


def write_stereo(path: Path, minutes: float, rate: int = 44100) -> None:
    """Tones plus noise, stereo 16-bit, written 10 s at a time (memory stays small for long files)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    total = int(minutes * 60 * rate)
    with sf.SoundFile(path, "w", rate, 2, "PCM_16") as f:
        for start in range(0, total, 10 * rate):
            t = np.arange(start, min(total, start + 10 * rate)) / rate
            x = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)], axis=1)
            f.write((x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,10", help="file lengths, comma-separated (default 1,10)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (OMP_NUM_THREADS)")
    args = parser.parse_args()
    from helpers_mdx import REAL, REAL_NET, make_mdx_onnx, parameter_count

    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        model = make_mdx_onnx(tmp / "mdx_random.onnx", REAL, real_size=True)
        print(f"random-weight MDX-Net {REAL_NET}: {parameter_count() / 1e6:.1f} M parameters, "
              f"{model.stat().st_size / 1e6:.1f} MB ONNX (UVR-MDX-NET-Voc_FT.onnx: 66.8 MB), "
              f"exported in {time.perf_counter() - start:.0f} s; threads {env.get('OMP_NUM_THREADS', 'all')}, "
              f"{os.cpu_count()} CPUs", flush=True)
        for minutes in (float(m) for m in args.minutes.split(",")):
            wav = tmp / f"{minutes:g}min.wav"
            write_stereo(wav, minutes)
            child = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"))
            proc = subprocess.run([sys.executable, "-c", child, str(model), str(wav), str(minutes * 60)],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{minutes:g} min: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{minutes:g} min stereo: {r['seconds']:.0f} s audio, {r['chunks']} chunks, wall {r['wall']:.1f} s, "
                  f"RTF {r['wall'] / r['seconds']:.3f}, {r['wall'] / r['chunks']:.2f} s/chunk, "
                  f"peak RSS {r['rss_peak_mb']:.0f} MB (after loading {r['rss_before_mb']:.0f} MB: "
                  f"+{r['rss_peak_mb'] - r['rss_before_mb']:.0f} MB while separating)", flush=True)
            wav.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
