"""Transcription speed: minutes of audio transcribed per second of wall time.

    python bench/transcribe.py --model models/whisper/medium.pt --device cuda [--clips 64]
    python bench/transcribe.py            # tiny random Whisper: measures the machinery only

Clips are real speech (espeak-ng, 3-8 s each, like sliced clips) in a temporary voice folder, run through
the transcribe stage (batched greedy decoding; beam search decodes clip by clip). Without --model a
tiny random Whisper is built; its text is garbage and it always decodes --max-tokens tokens, so the
figure is an upper bound of the pipeline overhead, not of a real model.
"""

from __future__ import annotations

import argparse
import json
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
    "We are recording a few sentences to measure how fast transcription runs.",
    "Every clip should be between two and twelve seconds long, and this one is a little longer than most.",
    "Silence lets the detector find the cuts.",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Whisper name or .pt path (default: a tiny random model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--language", default="en")
    parser.add_argument("--max-tokens", type=int, default=None, help="default: 64 for the random model, else 224")
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args(argv)
    import soundfile as sf
    import torch
    from helpers_audio import espeak_audio, make_tiny_whisper, with_silence

    from prep.transcribe import TranscribeOptions, load_whisper, resolve_device, transcribe_voice
    from vits.voice_folder import ESD_META, WAVS

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_spec = a.model or str(make_tiny_whisper(tmp / "tiny.pt"))
        max_tokens = a.max_tokens or (None if a.model else 64)
        voice = tmp / "bench"
        (voice / WAVS / "spk").mkdir(parents=True)
        seconds = 0.0
        pieces = [espeak_audio(s, "en") for s in SENTENCES]
        for i in range(a.clips):
            audio, sr = pieces[i % len(pieces)]
            audio = with_silence(audio, sr, 0.2, 0.2)
            sf.write(str(voice / WAVS / "spk" / f"c{i:04d}.wav"), audio, sr, subtype="PCM_16")
            seconds += len(audio) / sr
        device = resolve_device(a.device)
        t0 = time.perf_counter()
        model = load_whisper(model_spec, device)
        load_s = time.perf_counter() - t0
        opts = TranscribeOptions(model=model_spec, language=a.language, beam_size=a.beam_size,
                                 clips_per_decode=a.batch_size, temperatures=(0.0,), max_tokens=max_tokens,
                                 keep_flagged=True)
        t0 = time.perf_counter()
        summary = transcribe_voice(voice, opts, model=model)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        meta = json.loads((voice / ESD_META).read_text(encoding="utf-8"))["clips"]
    rate = seconds / 60 / wall
    name = a.model or "tiny random Whisper (machinery only)"
    print(f"{name} on {device}: {summary['transcribed']} clips, {seconds / 60:.2f} min of audio in {wall:.1f} s "
          f"(+{load_s:.1f} s model load): {rate:.2f} min of audio per second ({seconds / wall:.1f}x realtime); "
          f"batch {a.batch_size}, beam {a.beam_size}, max tokens {max_tokens or 224}")
    print("sample:", repr(next(iter(meta.values()))["text"][:80]))
    print("BENCH_JSON " + json.dumps({"model": name, "device": device, "clips": summary["transcribed"],
                                      "audio_minutes": seconds / 60, "wall_s": wall, "load_s": load_s,
                                      "minutes_per_second": rate, "batch_size": a.batch_size,
                                      "beam_size": a.beam_size, "mean_clip_s": float(np.float64(seconds / a.clips))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
