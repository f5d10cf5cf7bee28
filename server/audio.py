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
STREAM_FORMATS = ("wav", "mp3")  # formats whose per-sentence pieces can simply be concatenated (stream_piece)


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
    """One sentence of a streamed answer: raw 16-bit PCM after the wav header, or mp3 frames (no tag, no
    Xing header, so the pieces concatenate into one stream)."""
    if fmt == "wav":
        return to_int16(audio).tobytes()
    # ffmpeg writes constant-bitrate frames, whose count a decoder can tell from the stream's size; the
    # variable-bitrate frames of libsndfile are the fallback (players that scan frames still play them all).
    if shutil.which("ffmpeg"):
        return _bare_mp3_frames(_encode_with_ffmpeg(to_int16(audio), sampling_rate, fmt))
    return _bare_mp3_frames(encode_audio(audio, sampling_rate, fmt))


# Layer III bitrates (kbit/s) by header index: MPEG-1, then MPEG-2/2.5.
_MP3_KBPS = ((0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
             (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160))
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _bare_mp3_frames(mp3: bytes) -> bytes:
    """`mp3` without its ID3v2 tag and its Xing/Info frame. That frame states the piece's frame count, so a
    decoder reading a stream of complete pieces would stop after the first sentence."""
    if mp3[:3] == b"ID3" and len(mp3) >= 10:
        mp3 = mp3[10 + ((mp3[6] & 0x7F) << 21 | (mp3[7] & 0x7F) << 14 | (mp3[8] & 0x7F) << 7 | mp3[9] & 0x7F):]
    if len(mp3) < 4 or mp3[0] != 0xFF or (mp3[1] & 0xE0) != 0xE0:
        return mp3
    version, layer = mp3[1] >> 3 & 3, mp3[1] >> 1 & 3
    if layer != 1 or version not in _MP3_RATES:  # layer bits 01 = Layer III
        return mp3
    kbps_index, rate_index = mp3[2] >> 4, mp3[2] >> 2 & 3
    if kbps_index in (0, 15) or rate_index == 3:  # free-format or invalid header: leave it as it is
        return mp3
    kbps = _MP3_KBPS[version != 3][kbps_index]
    samples = 1152 if version == 3 else 576
    length = samples // 8 * kbps * 1000 // _MP3_RATES[version][rate_index] + (mp3[2] >> 1 & 1)
    if b"Xing" in mp3[4:64] or b"Info" in mp3[4:64]:
        return mp3[length:]
    return mp3
