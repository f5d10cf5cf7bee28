"""Vocal/BGM separation with a UVR MDX-Net ONNX model (run with onnxruntime), streamed in bounded memory.

MDX-Net works on the STFT of a fixed-length stereo chunk: `chunk = hop * (dim_t - 1)` samples at 44.1 kHz
give `dim_t` frames (centered STFT, periodic Hann window); the model takes `[batch, 4, dim_f, dim_t]`
(input "input"; left re/im, right re/im; the `dim_f` lowest of the `n_fft/2 + 1` bins, the `cut_bins`
lowest of them zeroed as UVR does) and returns the vocal spectrogram in the same layout; the bins above
`dim_f` are zero, the result is scaled by the model's `compensate` factor (UVR scales the primary stem
by it). The first and last `n_fft/2` samples of each chunk see a one-sided window, so we keep only the
middle of every chunk; consecutive middles overlap by `overlap` samples and are crossfaded linearly,
which leaves no seam. Memory holds one chunk and one input block, whatever the file's length. Stereo
recordings are separated channel by channel as the model was trained (`stream_file(..., downmix=...)`);
mono ones feed the same signal to both model channels.

The default model is UVR-MDX-NET-Voc_FT (n_fft 7680, hop 1024, dim_f 3072, dim_t 256, 44.1 kHz,
compensate 1.021), Kim_Vocal_2 (the same STFT, compensate 1.009) works too: the values of UVR's
model_data.json entries 77d07b2667ddf05b9e3175941b4454a0 and 970b3f9492014d18fefeedfe4773cb42 (UVR's
hash: md5 of a file's last 10,000 KiB). The files UVR publishes: Voc_FT 66,762,490 bytes, sha256
534b2070fcc7df514b13ef660dc8cbb328679c2374d04354a5c42bb14ecce111; Kim_Vocal_2 66,759,214 bytes, sha256
ce74ef3b6a6024ce44211a07be9cf8bc6d87728cc852a68ab34eb8e58cde9c8b. `python -m pipeline.download
separator` fetches the default into `<models_dir>/separator/` from SEPARATOR_REPO.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vits.errors import KoeError

# A Hugging Face copy of UVR's public models (TRvlvr/model_repo's release), with UVR-MDX-NET-Voc_FT.onnx and
# Kim_Vocal_2.onnx at the top level; seanghay/uvr_models, the earlier choice, is only known to hold Kim_Vocal_2.
SEPARATOR_REPO = "Blane187/all_public_uvr_models"
UVR_RELEASES = "https://github.com/TRvlvr/model_repo/releases/tag/all_public_uvr_models"
SEPARATOR_FOLDER = "separator"


@dataclass(frozen=True)
class MdxParams:
    """The STFT/IO parameters an MDX-Net ONNX file was trained with (UVR's model data)."""
    n_fft: int
    hop: int
    dim_f: int
    dim_t: int
    sample_rate: int = 44100
    compensate: float = 1.0
    cut_bins: int = 3  # UVR zeroes the lowest STFT bins (below ~17 Hz at n_fft 7680) before the model

    @property
    def chunk(self) -> int:
        return self.hop * (self.dim_t - 1)

    @property
    def trim(self) -> int:
        return self.n_fft // 2


MODELS: dict[str, MdxParams] = {
    "UVR-MDX-NET-Voc_FT.onnx": MdxParams(7680, 1024, 3072, 256, 44100, 1.021),
    "Kim_Vocal_2.onnx": MdxParams(7680, 1024, 3072, 256, 44100, 1.009),
}
DEFAULT_MODEL = "UVR-MDX-NET-Voc_FT.onnx"


def model_path(models_dir: str | os.PathLike, name: str = DEFAULT_MODEL) -> Path:
    """Where the separation model `name` lives under the models folder."""
    return Path(models_dir) / SEPARATOR_FOLDER / name


def missing_model_error(path: Path) -> KoeError:
    return KoeError("the vocal separation model is missing", where=str(path),
                    fix=f"run python -m pipeline.download separator (add --endpoint https://hf-mirror.com for "
                        f"the mirror), or download {path.name} from {UVR_RELEASES} and put it at {path}")


class Separator:
    """One MDX-Net ONNX model. `stream` separates one recording given as blocks; `separate` a whole array.

    Takes: the .onnx path; its MdxParams (default: looked up by file name in MODELS); `overlap`, the
    crossfade length in samples between chunks (default a quarter of a chunk's kept middle; rounded up so
    that chunks start a whole number of hops apart, which keeps every chunk on one STFT frame grid).
    Raises: KoeError when the file is missing, unknown without params, or its input shape disagrees.
    """

    def __init__(self, path: str | os.PathLike, params: MdxParams | None = None, overlap: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise missing_model_error(path)
        params = params or MODELS.get(path.name)
        if params is None:
            raise KoeError(f"unknown separation model {path.name!r}: its STFT parameters are not known",
                           where=str(path), fix=f"use one of {', '.join(MODELS)}")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
        try:
            self._session = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
            raise KoeError(f"cannot load the separation model ({type(exc).__name__})", where=str(path),
                           fix="delete it and run python -m pipeline.download separator again") from None
        inp = self._session.get_inputs()[0]
        shape = list(inp.shape)
        want = [4, params.dim_f, params.dim_t]
        if len(shape) != 4 or any(isinstance(s, int) and s != w for s, w in zip(shape[1:], want)):
            raise KoeError(f"the model takes {shape}, not [batch, {', '.join(map(str, want))}]", where=str(path),
                           fix=f"use an MDX-Net model with these parameters, or one of {', '.join(MODELS)}")
        self._input = inp.name
        self.params = p = params
        self.keep = p.chunk - 2 * p.trim
        if self.keep <= 0:
            raise KoeError("chunk shorter than the STFT window", where=str(path), fix="check dim_t/hop/n_fft")
        wanted = self.keep // 4 if overlap is None else int(overlap)
        # Chunks start a whole number of hops apart, so all of them see one STFT frame grid (the network is
        # not shift-invariant below a hop: on other grids neighbours disagree where they are crossfaded).
        self.overlap = self.keep - (self.keep - wanted) // p.hop * p.hop if 0 <= wanted < self.keep else wanted
        if not 0 <= self.overlap <= self.keep // 2:
            raise KoeError(f"overlap {self.overlap} must be at most half the kept chunk ({self.keep} samples)",
                           fix="pass a smaller overlap")
        self.step = self.keep - self.overlap
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(p.n_fft) / p.n_fft)).astype(np.float32)
        self._norm = self._envelope()
        self._fade = np.linspace(0.0, 1.0, self.overlap + 2, dtype=np.float32)[1:-1]

    def _envelope(self) -> np.ndarray:
        p, w2 = self.params, self._window ** 2
        env = np.zeros(p.chunk + p.n_fft, np.float32)
        for t in range(p.dim_t):
            env[t * p.hop:t * p.hop + p.n_fft] += w2
        return 1.0 / np.maximum(env[p.trim:p.trim + p.chunk], 1e-8)

    def _stft(self, chunk: np.ndarray) -> np.ndarray:
        p = self.params
        padded = np.pad(chunk, ((0, 0), (p.trim, p.trim)), mode="reflect")
        idx = np.arange(p.dim_t)[:, None] * p.hop + np.arange(p.n_fft)[None, :]
        spec = np.fft.rfft(padded[:, idx] * self._window, axis=-1)[:, :, :p.dim_f]  # [2, T, F]
        out = np.stack([spec.real, spec.imag], axis=1).transpose(0, 1, 3, 2)  # [2, 2, F, T]
        out[:, :, :p.cut_bins] = 0.0
        return out.reshape(1, 4, p.dim_f, p.dim_t).astype(np.float32)

    def _istft(self, spec: np.ndarray) -> np.ndarray:
        p = self.params
        s = spec.reshape(2, 2, p.dim_f, p.dim_t)
        full = np.zeros((2, p.n_fft // 2 + 1, p.dim_t), np.complex64)
        full[:, :p.dim_f] = s[:, 0] + 1j * s[:, 1]
        frames = np.fft.irfft(full.transpose(0, 2, 1), n=p.n_fft, axis=-1) * self._window  # [2, T, n_fft]
        out = np.zeros((2, p.chunk + p.n_fft), np.float32)
        for t in range(p.dim_t):
            out[:, t * p.hop:t * p.hop + p.n_fft] += frames[:, t]
        return out[:, p.trim:p.trim + p.chunk] * self._norm

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """Vocals of one [2, chunk] window: the kept middle, [2, keep]."""
        spec = self._session.run(None, {self._input: self._stft(chunk)})[0]
        wave = self._istft(np.asarray(spec, np.float32)) * self.params.compensate
        return wave[:, self.params.trim:self.params.trim + self.keep]

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Vocals of a recording given as blocks at the model rate: 1-D (mono) or [channels, n] arrays.

        Mono is fed to both model channels and comes back mono; stereo stays stereo (more than two
        channels: the first two). Yields blocks of the input's layout; the output has exactly as many
        samples as the input.
        """
        p, step, ov = self.params, self.step, self.overlap
        buf = np.zeros((2, p.trim), np.float32)  # the window before the first sample sees silence
        tail = np.zeros((2, ov), np.float32)  # the previous window's faded-out end
        first, total, emitted, mono = True, 0, 0, None

        def window() -> np.ndarray:
            nonlocal buf, tail, first
            out = self._run(buf[:, :p.chunk])
            if ov:
                out[:, :ov] = (out[:, :ov] * (self._fade if not first else 1.0)
                               + (tail if not first else 0.0))
                tail = out[:, step:] * self._fade[::-1]
            first = False
            buf = buf[:, step:]
            return out[:, :step]

        def emit(out: np.ndarray) -> np.ndarray | None:
            nonlocal emitted
            out = out[:, :max(0, total - emitted)]
            emitted += out.shape[1]
            if not out.shape[1]:
                return None
            return out.mean(axis=0) if mono else out

        for block in blocks:
            x = np.asarray(block, np.float32)
            if mono is None:
                mono = x.ndim == 1
            x = np.stack([x, x]) if x.ndim == 1 else (x[:2] if x.shape[0] >= 2 else np.concatenate([x, x]))
            total += x.shape[1]
            buf = np.concatenate([buf, x], axis=1)
            while buf.shape[1] >= p.chunk:
                if (out := emit(window())) is not None:
                    yield out
        while emitted < total:  # flush: silence after the last sample
            buf = np.concatenate([buf, np.zeros((2, p.chunk - buf.shape[1]), np.float32)], axis=1)
            if (out := emit(window())) is not None:
                yield out

    def stream_file(self, path: str | os.PathLike, *, info=None, downmix: bool = True,
                    block_frames: int | None = None) -> Iterator[np.ndarray]:
        """Vocals of an audio file at the model's rate, read in blocks with its real channels.

        A stereo file is separated as left/right (the model's two channels), a mono one as mono. Takes: the
        path; `info` from prep.audio.probe_audio (updated as iter_audio does); `downmix` averages the
        vocal channels into 1-D blocks (the clean/ output is mono), else [channels, n] blocks (mono: 1-D);
        the decoding block size. Raises: KoeError for unreadable audio (prep.audio.iter_audio).
        """
        from prep.audio import iter_audio

        blocks = iter_audio(path, self.params.sample_rate, info=info, block_frames=block_frames, mono=False)
        for out in self.stream(b[0] if b.shape[0] == 1 else b for b in blocks):  # mono files stay 1-D
            yield out.mean(axis=0) if downmix and out.ndim == 2 else out

    def separate(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Vocals of a whole array (1-D or [channels, n]) at any rate (resampled to the model's and back)."""
        from prep.audio import resample

        x = resample(np.asarray(audio, np.float32), sample_rate, self.params.sample_rate)
        parts = list(self.stream([x]))
        y = np.concatenate(parts, axis=-1) if parts else np.zeros_like(x)
        y = resample(y, self.params.sample_rate, sample_rate)
        n = np.asarray(audio).shape[-1]
        pad = [(0, 0)] * (y.ndim - 1) + [(0, max(0, n - y.shape[-1]))]
        return np.pad(y, pad)[..., :n]
