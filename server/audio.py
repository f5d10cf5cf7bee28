"""Audio answers: float audio → wav/flac/ogg/mp3 bytes, and the pieces of a streamed answer."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess

import numpy as np

from server.errors import ApiError

# soundfile (libsndfile) format/subtype per output format, and the response media type.
FORMATS = {
    "wav": ("WAV", "PCM_16", "audio/wav"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "ogg": ("OGG", "VORBIS", "audio/ogg"),
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
}
STREAM_FORMATS = ("wav", "mp3")  # formats whose per-sentence pieces can simply be concatenated


def media_type(fmt: str) -> str:
    """The Content-Type of an answer in `fmt`."""
    return FORMATS[fmt][2]


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 samples (rounded); every format starts from these same samples."""
    audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return np.round(audio * 32767.0).astype("<i2")


def wav_stream_header(sampling_rate: int) -> bytes:
    """A 16-bit mono WAV header with unknown length (0xFFFFFFFF sizes), for chunked streaming."""
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, sampling_rate, sampling_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


def encode_audio(audio: np.ndarray, sampling_rate: int, fmt: str) -> bytes:
    """Encode float32 mono audio in [-1, 1] as wav/flac/ogg/mp3 bytes.

    Uses libsndfile through soundfile; falls back to an ffmpeg subprocess when this libsndfile lacks the
    codec. Raises ApiError(415) when neither can write `fmt`.
    """
    import soundfile as sf

    container, subtype, _ = FORMATS[fmt]
    samples = to_int16(audio)
    audio = samples.astype(np.float32) / 32768.0  # lossy encoders take float; same samples as the wav
    if fmt in ("wav", "flac"):
        buf = io.BytesIO()
        sf.write(buf, samples, sampling_rate, format=container, subtype="PCM_16")
        return buf.getvalue()
    try:
        buf = io.BytesIO()
        sf.write(buf, audio, sampling_rate, format=container, subtype=subtype)
        return buf.getvalue()
    except (sf.LibsndfileError, TypeError, ValueError, RuntimeError):
        pass
    return _encode_with_ffmpeg(samples, sampling_rate, fmt)


def _encode_with_ffmpeg(samples: np.ndarray, sampling_rate: int, fmt: str) -> bytes:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ApiError(415, f"format '{fmt}' is not available on this server",
                       "install ffmpeg (or a libsndfile with mp3/ogg support), or ask for format=wav")
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(sampling_rate), "-ac", "1",
           "-i", "pipe:0", "-f", {"mp3": "mp3", "ogg": "ogg", "flac": "flac"}[fmt], "pipe:1"]
    proc = subprocess.run(cmd, input=samples.tobytes(), capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise ApiError(415, f"ffmpeg could not encode '{fmt}'", proc.stderr.decode(errors="replace")[-500:])
    return proc.stdout


def stream_piece(audio: np.ndarray, sampling_rate: int, fmt: str) -> bytes:
    """One sentence of a streamed answer: raw 16-bit PCM after the wav header, or a complete mp3 piece."""
    return to_int16(audio).tobytes() if fmt == "wav" else encode_audio(audio, sampling_rate, fmt)
