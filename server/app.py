"""HTTP API for bots and apps: `python -m server --host 127.0.0.1 --port 5000`.

`GET`/`POST /voice` takes Bert-VITS2 hiyoriUI parameter names (text, model_id, speaker_name, speaker_id,
sdp_ratio, noise, noisew, length, language), so a bot written for hiyoriUI works by changing the URL.
`create_app(settings)` returns a FastAPI app; the studio mounts it beside its Gradio UI. Every error is
JSON `{"error": ..., "detail": ...}`. See docs/api.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hmac
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, APIKeyQuery
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from settings import Settings, load_settings
from vits.errors import KoeError

LANGUAGES = ("ZH", "JP", "EN", "AUTO", "MIX")
LANGUAGE_ALIASES = {"JA": "JP", "ZH-CN": "ZH", "CN": "ZH", "EN-US": "EN"}
# soundfile (libsndfile) format/subtype per output format, and the response media type.
FORMATS = {
    "wav": ("WAV", "PCM_16", "audio/wav"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "ogg": ("OGG", "VORBIS", "audio/ogg"),
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
}
STREAM_FORMATS = ("wav", "mp3")  # formats whose per-sentence pieces can simply be concatenated
DEFAULT_MAX_TEXT = 2000
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_MODELS = 4
ONNX_METADATA = "koe_onnx.json"
ONNX_SUFFIX = "@onnx"  # "alice@onnx" = the ONNX export of voice alice (Data/alice/onnx)
# torch's random generator is process-global (seeds use fork_rng), so torch synthesis runs one job at a
# time across all models; that keeps seeded audio identical under load. ONNX voices use their own rng.
TORCH_LOCK = threading.Lock()


class ApiError(Exception):
    """An error answered as JSON: HTTP `status`, one-line `error`, `detail` saying what to do, extra keys."""

    def __init__(self, status: int, error: str, detail: str | None = None, **extra: Any):
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {"error": self.error, "detail": self.detail, **self.extra}
        headers = {"Retry-After": "1"} if self.status == 503 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


# ----------------------------------------------------------------------------------------------------------
# Request parameters


class VoiceParams(BaseModel):
    """Parameters of `/voice`. Names and defaults follow Bert-VITS2's hiyoriUI `/voice` (docs/api.md)."""

    model_config = ConfigDict(extra="ignore")

    text: str
    model: str | None = None
    model_id: int | None = None
    speaker_name: str | None = None
    speaker_id: int | None = None
    speaker: str | None = None
    language: str = "ZH"
    sdp_ratio: float = 0.2
    noise: float = 0.2
    noisew: float = 0.9
    length: float = 1.0
    format: str = "wav"
    stream: bool = False
    seed: int | None = None
    pause: float = 0.2
    auto_split: bool = True
    auto_translate: bool = False
    emotion: int | str | None = None  # hiyoriUI 2.2 emotion; 2.3 has none, accepted and ignored
    style_text: str | None = None
    style_weight: float = 0.7

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        lang = LANGUAGE_ALIASES.get(value.strip().upper(), value.strip().upper())
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language '{value}'; use one of {', '.join(LANGUAGES)}")
        return lang

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        fmt = value.strip().lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"unsupported format '{value}'; use one of {', '.join(FORMATS)}")
        return fmt

    @field_validator("sdp_ratio", "style_weight")
    @classmethod
    def _ratio(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"must be between 0 and 1, got {value}")
        return value

    @field_validator("noise", "noisew", "pause")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if not value >= 0.0 or value > 100:
            raise ValueError(f"must be between 0 and 100, got {value}")
        return value

    @field_validator("length")
    @classmethod
    def _length(cls, value: float) -> float:
        if not 0.0 < value <= 10.0:
            raise ValueError(f"must be greater than 0 and at most 10 (1 = normal speed, 1.2 = slower), got {value}")
        return value


class LoadParams(BaseModel):
    """Body of `POST /models/load`."""

    model_config = ConfigDict(extra="ignore")

    model: str
    device: str | None = None
    checkpoint: str | None = None
    backend: str | None = None


class UnloadParams(BaseModel):
    """Body of `POST /models/unload`: a model name/path or a hiyoriUI `model_id`."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    model_id: int | None = None


def _validation_message(errors: list[dict]) -> str:
    """One readable line from pydantic errors, e.g. "invalid parameter 'length': must be greater than 0"."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body")]
        name = ".".join(loc) or "request"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "missing":
            msg = "is required"
        parts.append(f"'{name}' {msg}" if msg == "is required" else f"invalid parameter '{name}': {msg}")
    return "; ".join(parts)


def _validate(model: type[BaseModel], raw: dict) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise ApiError(422, _validation_message(errors), "check the parameter list in /docs",
                       errors=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in errors]) from None


async def _request_fields(request: Request, max_body: int) -> dict:
    """Query parameters merged with a JSON, form or plain-text body (the body wins)."""
    fields: dict[str, Any] = dict(request.query_params)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_body:
        raise ApiError(413, f"request body too large ({int(length)} bytes, limit {max_body})",
                       "send shorter text, split it into several requests")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        body = await request.body()
        if len(body) > max_body:
            raise ApiError(413, f"request body too large ({len(body)} bytes, limit {max_body})",
                           "send shorter text, split it into several requests")
        if body.strip():
            try:
                data = json.loads(body)
            except json.JSONDecodeError as exc:
                raise ApiError(400, f"body is not valid JSON ({exc.msg} at line {exc.lineno})",
                               'send e.g. {"text": "你好", "speaker_name": "alice"}') from None
            if not isinstance(data, dict):
                raise ApiError(400, "JSON body must be an object", 'send e.g. {"text": "你好"}')
            fields.update(data)
    elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        # Uploaded files (hiyoriUI's reference_audio) have no meaning in 2.3 and are skipped.
        fields.update({k: v for k, v in form.items() if isinstance(v, str)})
    elif ctype.startswith("text/"):
        body = await request.body()
        if len(body) > max_body:
            raise ApiError(413, f"request body too large ({len(body)} bytes, limit {max_body})",
                           "send shorter text, split it into several requests")
        if body:
            fields["text"] = body.decode("utf-8", errors="replace")
    return fields


# ----------------------------------------------------------------------------------------------------------
# Audio encoding


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 samples (rounded); every format starts from these same samples."""
    audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return np.round(audio * 32767.0).astype("<i2")


def _pcm16(audio: np.ndarray) -> bytes:
    return to_int16(audio).tobytes()


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


def _stream_piece(audio: np.ndarray, sampling_rate: int, fmt: str) -> bytes:
    return _pcm16(audio) if fmt == "wav" else encode_audio(audio, sampling_rate, fmt)


# ----------------------------------------------------------------------------------------------------------
# Loaded models and their queues


@dataclass
class LoadedModel:
    """A voice in memory with its own one-thread queue: jobs for one model run strictly one after another."""

    model_id: int
    name: str
    path: Path
    voice: Any
    backend: str
    device: str
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    served: int = 0
    pending: int = 0
    user_dict: Any = None
    executor: concurrent.futures.ThreadPoolExecutor = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self):
        if self.executor is None:
            self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"koe-{self.name}")
        self._count_lock = threading.Lock()

    @property
    def speakers(self) -> list[str]:
        return list(self.voice.speakers)

    @property
    def sampling_rate(self) -> int:
        return int(self.voice.sampling_rate)

    def speaker_ids(self) -> dict[str, int]:
        """spk2id of the voice (name -> id)."""
        return {name: int(self.voice.speaker_id(name)) for name in self.speakers}

    async def run(self, fn: Callable[[], Any], max_queue: int) -> Any:
        """Run `fn` on this model's queue; raises ApiError(503) when `max_queue` jobs already wait."""
        with self._count_lock:
            if self.pending >= max_queue:
                raise ApiError(503, f"model '{self.name}' is busy ({self.pending} requests queued)",
                               "retry in a moment, or start the server with a larger --max-queue")
            self.pending += 1

        def job():
            try:
                if self.backend == "torch":
                    with TORCH_LOCK:
                        return fn()
                return fn()
            finally:
                with self._count_lock:
                    self.pending -= 1
                    self.served += 1

        self.last_used = time.monotonic()
        try:
            future = self.executor.submit(job)
        except RuntimeError:
            with self._count_lock:
                self.pending -= 1
            raise ApiError(409, f"model '{self.name}' was unloaded while the request waited",
                           "load it again (POST /models/load) and retry") from None
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancel():  # the client left before the job started: it will never count itself out
                with self._count_lock:
                    self.pending -= 1
            raise

    def info(self) -> dict:
        return {
            "id": self.model_id, "name": self.name, "path": str(self.path), "backend": self.backend,
            "device": self.device, "sampling_rate": self.sampling_rate, "speakers": self.speakers,
            "spk2id": self.speaker_ids(), "queue": self.pending, "served": self.served,
            "loaded_at": self.loaded_at,
        }

    def close(self) -> None:
        # Jobs already queued still finish: they hold their own reference to the voice.
        self.executor.shutdown(wait=False)


def _default_loader(path: Path, device: str, checkpoint: str | None = None):
    """Load a voice: a folder with an ONNX export (koe_onnx.json) runs on onnxruntime, anything else on torch."""
    if path.is_dir() and (path / ONNX_METADATA).is_file():
        from vits.onnx_runtime import OnnxVoice

        return OnnxVoice.load(path), "onnx"
    from vits.synthesis import Voice

    target = Path(checkpoint) if checkpoint else path
    if checkpoint and not target.is_absolute():
        target = path / "models" / checkpoint if path.is_dir() else path.parent / checkpoint
    return Voice.load(target, device=device), "torch"


def _user_dict_for(path: Path):
    """The voice's pronunciation dictionary (Data/<voice>/userdict.txt), if it has one."""
    if path.is_dir():  # Data/<voice> or Data/<voice>/onnx
        folders = [path, path.parent] if path.name == "onnx" else [path]
    else:  # Data/<voice>/models/G_x.pth
        folders = [path.parent, path.parent.parent]
    for folder in folders:
        candidate = folder / "userdict.txt"
        if candidate.is_file():
            from vits.text import UserDict

            return UserDict.load(candidate)
    return None


class ModelRegistry:
    """The voices the server knows: loaded ones (with their queues) and loadable ones under the data root.

    Args:
        settings: studio settings (data root, device).
        device: where torch models run ("cpu", "cuda", ...).
        max_models: most models kept in memory; the least recently used idle one is unloaded past it.
        allow_paths: accept file-system paths (not only voice names) in `model`.
        loader: `(path, device, checkpoint) -> (voice, backend)`; the default loads torch or ONNX voices.
    """

    def __init__(self, settings: Settings, device: str, max_models: int = DEFAULT_MAX_MODELS,
                 allow_paths: bool = True, loader: Callable | None = None):
        self.settings = settings
        self.device = device
        self.max_models = max(1, max_models)
        self.allow_paths = allow_paths
        self.loader = loader or _default_loader
        self.models: dict[str, LoadedModel] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    # -- discovery
    def available(self) -> list[str]:
        """Voice folders under the data root that hold a checkpoint and a config (or an ONNX export)."""
        root = self.settings.data_root
        if not root.is_dir():
            return []
        names = []
        for sub in sorted(root.iterdir()):
            if not sub.is_dir() or sub.name.startswith("."):
                continue
            has_torch = any((sub / "models").glob("G_*.pth")) and (sub / "configs" / "config.json").is_file()
            if has_torch or (sub / ONNX_METADATA).is_file() or (sub / "onnx" / ONNX_METADATA).is_file():
                names.append(sub.name)
        return names

    def resolve(self, spec: str, backend: str | None = None) -> tuple[str, Path]:
        """Map a voice name (optionally "name@onnx") or a path to (registry key, path).

        `backend="onnx"` picks the voice's ONNX export (Data/<voice>/onnx). Raises ApiError(404/403/422).
        """
        spec = spec.strip()
        if not spec:
            raise ApiError(422, "'model' is empty", "pass a voice name from GET /models")
        if spec.endswith(ONNX_SUFFIX):
            spec, backend = spec[: -len(ONNX_SUFFIX)], "onnx"
        if backend not in (None, "torch", "onnx"):
            raise ApiError(422, f"unknown backend '{backend}'", "use backend=torch or backend=onnx")
        looks_like_path = any(c in spec for c in "/\\") or spec.endswith((".pth", ".pt", ".safetensors"))
        if looks_like_path:
            if not self.allow_paths:
                raise ApiError(403, "loading models by path is switched off on this server",
                               "pass a voice name from GET /models")
            path = Path(spec).expanduser()
            if not path.is_absolute():
                path = (self.settings.root / path).resolve()
            if not path.exists():
                raise ApiError(404, f"model path not found: {spec}",
                               "pass a voice folder (Data/<voice>), a G_*.pth file or an ONNX export folder")
            key = str(path)
        else:
            try:
                path = self.settings.voice_dir(spec)
            except KoeError as exc:
                raise ApiError(422, f"invalid model name '{spec}'", exc.fix) from None
            if not path.is_dir():
                raise ApiError(404, f"unknown model '{spec}'",
                               f"use one of the loaded or available models (GET /models); voices live in "
                               f"{self.settings.data_root}/<voice>/", loaded=list(self.models),
                               available=self.available())
            key = spec
            no_torch = not any((path / "models").glob("G_*.pth")) and not (path / ONNX_METADATA).is_file()
            if backend is None and no_torch and (path / "onnx" / ONNX_METADATA).is_file():
                backend = "onnx"
        if backend == "onnx" and not (path / ONNX_METADATA).is_file():
            if not (path / "onnx" / ONNX_METADATA).is_file():
                raise ApiError(404, f"'{spec}' has no ONNX export",
                               f"export it first: python -m pipeline.export_onnx {path}")
            path = path / "onnx"
        if backend == "onnx" and not key.endswith(ONNX_SUFFIX):
            key += ONNX_SUFFIX
        return key, path

    # -- lookup
    def find(self, spec: str | None, model_id: int | None) -> LoadedModel | None:
        """A loaded model by id, key or name (None if not loaded)."""
        if model_id is not None:
            for entry in self.models.values():
                if entry.model_id == model_id:
                    return entry
            raise ApiError(404, f"no loaded model with model_id={model_id}",
                           "GET /models lists the loaded models and their ids",
                           loaded={str(e.model_id): e.name for e in self.models.values()})
        if spec is None:
            return None
        if spec in self.models:
            return self.models[spec]
        for entry in self.models.values():
            if entry.name == spec or str(entry.path) == spec:
                return entry
        return None

    async def get(self, spec: str | None, model_id: int | None) -> LoadedModel:
        """The model a request names, loading it if needed (a sole loaded/available voice is the default)."""
        entry = self.find(spec, model_id)
        if entry is not None:
            return entry
        if spec is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            available = self.available()
            if not self.models and len(available) == 1:
                return await self.load(available[0])
            raise ApiError(422, "no model given and there is more than one to choose from",
                           "pass model=<voice name> (or model_id=<id>); see GET /models",
                           loaded=list(self.models), available=available)
        return await self.load(spec)

    async def load(self, spec: str, device: str | None = None, checkpoint: str | None = None,
                   backend: str | None = None) -> LoadedModel:
        """Load (or return the already loaded) model `spec`, off the event loop."""
        key, path = self.resolve(spec, backend)
        return await asyncio.to_thread(self._load_blocking, key, path, device or self.device, checkpoint)

    def _load_blocking(self, key: str, path: Path, device: str, checkpoint: str | None) -> LoadedModel:
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:  # two requests for one unloaded model load it once
            if key in self.models:
                return self.models[key]
            try:
                voice, backend = self.loader(path, device, checkpoint)
            except KoeError as exc:
                raise ApiError(422, f"could not load model '{key}': {exc.problem}", exc.fix,
                               where=exc.where) from None
            user_dict = _user_dict_for(path)
            with self._lock:
                self._evict_for_one_more()
                entry = LoadedModel(self._next_id, Path(key).name if os.sep in key else key, path, voice,
                                    backend, "cpu" if backend == "onnx" else device, user_dict=user_dict)
                self._next_id += 1
                self.models[key] = entry
            return entry

    def _evict_for_one_more(self) -> None:
        while len(self.models) >= self.max_models:
            idle = [e for e in self.models.values() if e.pending == 0]
            if not idle:
                return
            victim = min(idle, key=lambda e: e.last_used)
            self._drop(victim)

    def _drop(self, entry: LoadedModel) -> None:
        for key, value in list(self.models.items()):
            if value is entry:
                del self.models[key]
        entry.close()

    def unload(self, spec: str | None, model_id: int | None) -> LoadedModel:
        """Forget a loaded model (queued jobs still finish). Raises ApiError(404) if it is not loaded."""
        entry = self.find(spec, model_id)
        if entry is None:
            raise ApiError(404, f"model '{spec}' is not loaded", "GET /models lists the loaded models",
                           loaded=list(self.models))
        with self._lock:
            self._drop(entry)
        return entry

    def queue_length(self) -> int:
        return sum(e.pending for e in self.models.values())


def _shortlist(items: list[str], limit: int = 30) -> str:
    """'a, b, c' (at most `limit` shown, then how many in all): 850-speaker voices stay readable."""
    return ", ".join(items[:limit]) + (f", … ({len(items)} in all)" if len(items) > limit else "")


def _resolve_speaker(entry: LoadedModel, params: VoiceParams) -> str:
    """The speaker name a request asks for (by name, id, or a lone speaker). Raises ApiError(404/422)."""
    spk2id = entry.speaker_ids()
    names = list(spk2id)
    wanted = params.speaker_name if params.speaker_name is not None else params.speaker
    if wanted is not None:
        if wanted in spk2id:
            return wanted
        if wanted.isdigit() and params.speaker_name is None:
            by_id = {v: k for k, v in spk2id.items()}
            if int(wanted) in by_id:
                return by_id[int(wanted)]
        raise ApiError(404, f"unknown speaker '{wanted}' for model '{entry.name}'",
                       f"use one of: {_shortlist(names)}", speakers=names)
    if params.speaker_id is not None:
        by_id = {v: k for k, v in spk2id.items()}
        if params.speaker_id in by_id:
            return by_id[params.speaker_id]
        raise ApiError(404, f"unknown speaker_id {params.speaker_id} for model '{entry.name}'",
                       "use one of: " + _shortlist([f"{i}={n}" for n, i in spk2id.items()]), speakers=names,
                       spk2id=spk2id)
    if len(names) >= 1:
        return names[0]
    raise ApiError(422, f"model '{entry.name}' has no speakers in its config", "check data.spk2id in config.json")


def _memory() -> dict:
    """Resident memory of this process and, on CUDA, tensor memory, in MiB."""
    out: dict[str, float | None] = {"rss_mb": None}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        import resource

        out["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["cuda_allocated_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        out["cuda_reserved_mb"] = round(torch.cuda.memory_reserved() / 2**20, 1)
        free, total = torch.cuda.mem_get_info()
        out["cuda_free_mb"], out["cuda_total_mb"] = round(free / 2**20, 1), round(total / 2**20, 1)
    return out


# ----------------------------------------------------------------------------------------------------------
# The app


def create_app(settings: Settings | None = None, *, api_key: str | None = None, device: str | None = None,
               max_text_length: int = DEFAULT_MAX_TEXT, max_queue: int = DEFAULT_MAX_QUEUE,
               max_models: int = DEFAULT_MAX_MODELS, allow_paths: bool = True, bert: Any = "auto",
               preload: list[str] | None = None, loader: Callable | None = None) -> FastAPI:
    """Build the HTTP API.

    Args:
        settings: studio settings (default `load_settings()`): data root, BERT folders, device.
        api_key: if set (or $KOE_API_KEY), every endpoint except the docs needs it in the X-API-Key header
            or as ?api_key=.
        device: torch device for models (default: the settings' device).
        max_text_length: characters per request; longer text gets 413.
        max_queue: requests allowed to wait per model; more get 503.
        max_models: models kept in memory at once.
        allow_paths: accept file-system paths in `model` (switch off on a shared server).
        bert: a `BertFeatures`, "auto" (load the folders named in the settings on the first text request,
            when present) or None (no BERT models: text requests get 503).
        preload: voice names or paths loaded at start-up.
        loader: override of how a model path becomes a voice (see ModelRegistry).
    Returns:
        a FastAPI app; mount it in the studio or run it with uvicorn.
    """
    settings = settings or load_settings()
    api_key = api_key if api_key is not None else (os.environ.get("KOE_API_KEY") or None)
    device = device or settings.resolved_device()
    registry = ModelRegistry(settings, device, max_models=max_models, allow_paths=allow_paths, loader=loader)
    max_body = max(1 << 20, max_text_length * 8)
    started = time.time()
    bert_state = {"value": bert, "lock": threading.Lock()}

    def get_bert():
        """The shared BERT feature extractor, built on first use when "auto" and its folders exist."""
        with bert_state["lock"]:
            if bert_state["value"] == "auto":
                dirs = {lang: path for lang, path in settings.bert.items() if Path(path).is_dir()}
                value = None
                if dirs:
                    from vits.text.bert import BertFeatures

                    value = BertFeatures(dirs, device=device)
                    for lang in dirs:
                        # Load now: a model loaded inside a seeded synthesis would consume random numbers
                        # and make the first request's audio differ from later ones with the same seed.
                        value.hidden_size(lang)
                bert_state["value"] = value
            return bert_state["value"]

    header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")
    query_scheme = APIKeyQuery(name="api_key", auto_error=False, description="the API key as a query parameter")

    async def check_key(header: str | None = Depends(header_scheme), query: str | None = Depends(query_scheme)):
        if api_key is None:
            return
        given = header or query
        if not given:
            raise ApiError(401, "this server needs an API key",
                           "send it in the X-API-Key header or as ?api_key=...")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "wrong API key", "check the key the server was started with (--api-key)")

    app = FastAPI(
        title="Koe Studio voice API",
        description="Bert-VITS2 2.3 text-to-speech. `/voice` takes hiyoriUI's parameter names; see docs/api.md.",
        version="2.3",
        dependencies=[Depends(check_key)],
    )
    app.state.registry = registry
    app.state.settings = settings
    app.state.max_text_length = max_text_length

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        errors = list(exc.errors())
        return ApiError(422, _validation_message(errors), "check the parameter list in /docs",
                        errors=[{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors]).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return ApiError(404, f"no endpoint {request.url.path}",
                            "see /docs for the endpoints (e.g. GET /voice?text=...)").response()
        if exc.status_code == 405:
            return ApiError(405, f"{request.method} is not allowed on {request.url.path}", "see /docs").response()
        return ApiError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(KoeError)
    async def _koe_error(_request: Request, exc: KoeError):
        return ApiError(422, exc.problem, exc.fix, where=exc.where).response()

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception):
        return ApiError(500, f"internal error: {type(exc).__name__}: {exc}",
                        "this is a bug in the server; the log has the traceback").response()

    async def synthesize(params: VoiceParams):
        text = params.text
        if len(text) > max_text_length:
            raise ApiError(413, f"text too long: {len(text)} characters, the limit is {max_text_length}",
                           "split the text into several requests, or start the server with a larger "
                           "--max-text-length", limit=max_text_length, length=len(text))
        if not text.strip():
            raise ApiError(422, "'text' is empty", "pass the text to speak, e.g. /voice?text=你好")
        if params.auto_translate:
            raise ApiError(422, "auto_translate is not supported", "translate the text before sending it")
        if params.stream and params.format not in STREAM_FORMATS:
            raise ApiError(422, f"format '{params.format}' cannot be streamed",
                           f"use stream=true with format {' or '.join(STREAM_FORMATS)}, or stream=false")
        entry = await registry.get(params.model, params.model_id)
        speaker = _resolve_speaker(entry, params)
        bert_features = await asyncio.to_thread(get_bert)
        if bert_features is None:
            raise ApiError(503, "this server has no BERT models, so it cannot read text",
                           "download them into the folders named under 'bert:' in config.yml (studio setup, "
                           "or vits.text.bert.download_bert_models) and restart the server")
        kwargs = dict(speaker=speaker, bert=bert_features, sdp_ratio=params.sdp_ratio, noise_scale=params.noise,
                      noise_scale_w=params.noisew, length_scale=params.length, seed=params.seed,
                      user_dict=entry.user_dict)
        voice, sr = entry.voice, entry.sampling_rate
        headers = {"X-Model": entry.name, "X-Speaker": speaker, "X-Sampling-Rate": str(sr)}
        ignored = [name for name in ("emotion", "style_text") if getattr(params, name) not in (None, "")]
        if ignored:
            headers["X-Ignored-Parameters"] = ",".join(ignored)
        media_type = FORMATS[params.format][2]

        if params.stream:
            sentences = voice.stream(text, params.language, **kwargs)
            # The first sentence is made before answering, so its errors still come back as JSON.
            first = await entry.run(lambda: next(sentences, None), max_queue)
            if first is None:
                raise ApiError(422, "the text has nothing to pronounce", "type words in the chosen language")
            gap = np.zeros(int(round(params.pause * sr)), dtype=np.float32)

            async def pieces():
                if params.format == "wav":
                    yield wav_stream_header(sr)
                item, index = first, 0
                while item is not None:
                    # The pause goes before every later sentence, as in the non-streamed audio.
                    audio = np.concatenate([gap, item[1]]) if index and gap.size else item[1]
                    yield await asyncio.to_thread(_stream_piece, audio, sr, params.format)
                    item, index = await entry.run(lambda: next(sentences, None), max_queue), index + 1

            return StreamingResponse(pieces(), media_type=media_type, headers=headers)

        def job():
            t0 = time.perf_counter()
            audio = voice.synthesize(text, params.language, pause=params.pause, **kwargs)
            return audio, time.perf_counter() - t0

        audio, seconds = await entry.run(job, max_queue)
        data = await asyncio.to_thread(encode_audio, audio, sr, params.format)
        headers["X-Audio-Seconds"] = f"{len(audio) / sr:.3f}"
        headers["X-Synthesis-Seconds"] = f"{seconds:.3f}"
        return Response(content=data, media_type=media_type, headers=headers)

    voice_doc = ("Speak `text` with a loaded (or loadable) voice. Returns audio bytes (`format`), or JSON "
                 "`{error, detail}` on a problem. Long text: use POST (JSON `{\"text\": ...}` or form).")

    @app.get("/voice", summary="Synthesize speech (hiyoriUI-compatible)", description=voice_doc,
             response_class=Response, tags=["voice"],
             responses={200: {"content": {"audio/wav": {}, "audio/mpeg": {}, "audio/ogg": {}, "audio/flac": {}}}})
    async def voice_get(params: VoiceParams = Query()):
        return await synthesize(params)

    @app.post("/voice", summary="Synthesize speech (JSON, form or query parameters)", description=voice_doc,
              response_class=Response, tags=["voice"],
              openapi_extra={"requestBody": {"content": {
                  "application/json": {"schema": VoiceParams.model_json_schema()},
                  "application/x-www-form-urlencoded": {"schema": VoiceParams.model_json_schema()},
              }}},
              responses={200: {"content": {"audio/wav": {}, "audio/mpeg": {}}}})
    async def voice_post(request: Request):
        fields = await _request_fields(request, max_body)
        text = fields.get("text")
        # The length limit is checked before validation so 100 000 characters always get a 413.
        if isinstance(text, str) and len(text) > max_text_length:
            raise ApiError(413, f"text too long: {len(text)} characters, the limit is {max_text_length}",
                           "split the text into several requests, or start the server with a larger "
                           "--max-text-length", limit=max_text_length, length=len(text))
        return await synthesize(_validate(VoiceParams, fields))

    @app.get("/models", summary="Loaded and available models", tags=["models"])
    async def models():
        return {"loaded": [e.info() for e in registry.models.values()], "available": registry.available()}

    @app.get("/models/info", summary="Loaded models keyed by model_id (hiyoriUI format)", tags=["models"])
    async def models_info():
        return {str(e.model_id): {"model_path": str(e.path), "device": e.device, "spk2id": e.speaker_ids(),
                                  "id2spk": {str(i): n for n, i in e.speaker_ids().items()}, "version": "2.3",
                                  "name": e.name} for e in registry.models.values()}

    @app.post("/models/load", summary="Load a model (voice name or path)", tags=["models"],
              openapi_extra={"requestBody": {"content": {"application/json": {
                  "schema": LoadParams.model_json_schema()}}}})
    async def models_load(request: Request):
        params = _validate(LoadParams, await _request_fields(request, max_body))
        entry = await registry.load(params.model, params.device, params.checkpoint, params.backend)
        return {"loaded": entry.info()}

    @app.get("/models/add", summary="hiyoriUI alias of /models/load (model_path=...)", tags=["models"])
    async def models_add(model_path: str = Query(...), device: str | None = Query(None)):
        entry = await registry.load(model_path, device)
        return {"status": 0, "loaded": entry.info(), "data": {"model_id": entry.model_id}}

    @app.post("/models/unload", summary="Unload a model", tags=["models"],
              openapi_extra={"requestBody": {"content": {"application/json": {
                  "schema": UnloadParams.model_json_schema()}}}})
    async def models_unload(request: Request):
        params = _validate(UnloadParams, await _request_fields(request, max_body))
        if params.model is None and params.model_id is None:
            raise ApiError(422, "'model' is required", "pass model=<name> or model_id=<id>")
        entry = registry.unload(params.model, params.model_id)
        return {"unloaded": entry.name, "model_id": entry.model_id}

    @app.get("/models/delete", summary="hiyoriUI alias of /models/unload (model_id=...)", tags=["models"])
    async def models_delete(model_id: int = Query(...)):
        entry = registry.unload(None, model_id)
        return {"status": 0, "unloaded": entry.name, "model_id": entry.model_id}

    @app.get("/status", summary="Device, memory, loaded models, queue length", tags=["server"])
    async def status():
        torch = sys.modules.get("torch")
        return {
            "device": device,
            "torch": getattr(torch, "__version__", None),
            "threads": torch.get_num_threads() if torch is not None else None,
            "memory": _memory(),
            "models": [{"id": e.model_id, "name": e.name, "backend": e.backend, "queue": e.pending,
                        "served": e.served} for e in registry.models.values()],
            "queue_length": registry.queue_length(),
            "uptime_s": round(time.time() - started, 1),
            "limits": {"max_text_length": max_text_length, "max_queue": max_queue, "max_models": max_models},
            "api_key_required": api_key is not None,
        }

    if preload:
        for spec in preload:
            key, path = registry.resolve(spec)
            registry._load_blocking(key, path, device, None)
    return app


# ----------------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve voices over HTTP (hiyoriUI-compatible /voice). API docs at http://HOST:PORT/docs.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 = all; set --api-key then)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--config", default=None, help="studio settings file (default config.yml)")
    parser.add_argument("--root", default=None, help="the Data folder holding your voices")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default from config.yml)")
    parser.add_argument("--model", action="append", default=[], help="voice name or path to load at start "
                        "(repeatable)")
    parser.add_argument("--api-key", default=None, help="require this key (or set $KOE_API_KEY)")
    parser.add_argument("--max-text-length", type=int, default=DEFAULT_MAX_TEXT, help="characters per request")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE, help="waiting requests per model")
    parser.add_argument("--max-models", type=int, default=DEFAULT_MAX_MODELS, help="models kept in memory")
    parser.add_argument("--no-paths", action="store_true", help="accept only voice names, not file paths")
    parser.add_argument("--no-bert", action="store_true", help="do not load BERT models (lower quality)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the API with uvicorn until interrupted."""
    args = parse_args(argv)
    import uvicorn

    from vits.progress import format_progress

    try:
        settings = load_settings(args.config)
        if args.root:
            settings.data_root = Path(args.root).expanduser().resolve()
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        app = create_app(settings, api_key=args.api_key, device=args.device,
                         max_text_length=args.max_text_length, max_queue=args.max_queue,
                         max_models=args.max_models, allow_paths=not args.no_paths,
                         bert=None if args.no_bert else "auto", preload=args.model)
    except (KoeError, ApiError) as exc:
        print(f"error: {exc if isinstance(exc, KoeError) else exc.error + ' → ' + (exc.detail or '')}",
              file=sys.stderr)
        return 2
    print(format_progress("serve", message=f"serving on http://{args.host}:{args.port} (docs at /docs)"),
          flush=True)
    # A large h11 buffer lets an over-long GET reach the app and get a JSON 413 instead of a reset connection.
    uvicorn.run(app, host=args.host, port=args.port, http="h11", h11_max_incomplete_event_size=4 << 20,
                log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
