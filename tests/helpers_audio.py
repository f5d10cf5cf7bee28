"""Real speech and tiny models for tests (no network): espeak-ng (English, Mandarin from pinyin),
pyopenjtalk-plus TTS (Japanese), a tiny random Whisper checkpoint.

Other test files may import these helpers.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_audio(text: str, voice: str = "en", speed: int = 175) -> tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng (`voice` "en", or "cmn-latn-pinyin" with pinyin input such as "ni3 hao3").

    Returns (float32 mono audio, 22050).
    """
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True,
                       capture_output=True)
        audio, sr = sf.read(str(out), dtype="float32")
    return audio, sr


def japanese_audio(text: str) -> tuple[np.ndarray, int]:
    """Speak Japanese `text` with pyopenjtalk-plus's bundled voice. Returns (float32 audio in [-1, 1], rate)."""
    import pyopenjtalk

    audio, sr = pyopenjtalk.tts(text)
    return (audio / 32768.0).astype(np.float32), int(sr)


def with_silence(audio: np.ndarray, sr: int, before: float = 0.5, after: float = 0.5) -> np.ndarray:
    """Pad with digital silence plus a little noise (VAD and loudness meters dislike exact zeros)."""
    rng = np.random.default_rng(0)
    pad = lambda s: (rng.standard_normal(int(s * sr)) * 1e-4).astype(np.float32)  # noqa: E731
    return np.concatenate([pad(before), audio.astype(np.float32), pad(after)])


def without_pauses(audio: np.ndarray, sr: int, seconds: float, threshold_db: float = -35.0) -> np.ndarray:
    """Repeat `audio` with every quiet 10 ms frame removed until `seconds` long: speech with no pause."""
    frame = int(0.01 * sr)
    n = len(audio) // frame
    frames = audio[: n * frame].reshape(n, frame)
    level = 20 * np.log10(np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-9)
    voiced = frames[level > threshold_db].reshape(-1)
    reps = int(np.ceil(seconds * sr / max(len(voiced), 1)))
    return np.tile(voiced, reps)[: int(seconds * sr)].astype(np.float32)


def write_audio(path: str | Path, audio: np.ndarray, sr: int, *, rate: int | None = None, channels: int = 1,
                subtype: str | None = None) -> Path:
    """Write `audio` (resampled to `rate`, duplicated to `channels`) in the format `path`'s extension names.

    WAV/FLAC/OGG go through soundfile (`subtype` e.g. PCM_U8, PCM_24, PCM_32, FLOAT); mp3, m4a, opus
    through ffmpeg.
    """
    import soundfile as sf
    import soxr

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if rate and rate != sr:
        audio = soxr.resample(audio, sr, rate).astype(np.float32)
        sr = rate
    data = np.stack([audio] * channels, axis=1) if channels > 1 else audio
    ext = path.suffix.lower()
    if ext in (".wav", ".flac", ".ogg"):
        fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}[ext]
        sf.write(str(path), data, sr, subtype=subtype, format=fmt)
        return path
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.wav"
        sf.write(str(src), data, sr, subtype="PCM_16")
        codec = {".mp3": ["-c:a", "libmp3lame", "-b:a", "128k"], ".m4a": ["-c:a", "aac", "-b:a", "128k"],
                 ".opus": ["-c:a", "libopus", "-b:a", "64k"]}[ext]
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *codec, str(path)], check=True)
    return path


def make_tiny_whisper(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random multilingual Whisper (`whisper.load_model(path)` loads it). Its text is garbage."""
    import dataclasses

    import torch
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=448, n_text_state=32, n_text_head=2, n_text_layer=1)
    torch.manual_seed(seed)
    model = Whisper(dims)
    # Whisper leaves the decoder's positional embedding as torch.empty (real checkpoints fill it):
    # uninitialised memory can hold NaN, so give it values.
    with torch.no_grad():
        model.decoder.positional_embedding.normal_(0.0, 0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def make_tiny_bert_dirs(tmp: str | Path, tokenizers_dir: str | Path, hidden: int = 32, layers: int = 4) -> dict:
    """Tiny random ZH/JP/EN BERT folders ({language: folder}) for the features stage (H3's builder)."""
    from vits.text.testing import build_tiny_models

    return build_tiny_models(Path(tmp), tokenizers_dir, hidden=hidden, layers=layers)
