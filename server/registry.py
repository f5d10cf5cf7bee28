"""The voices a server knows: loaded ones, each with its own queue, and loadable ones under the data root.

One `ModelRegistry` serves the HTTP API and, in the studio, the Synthesize tab too, so a voice and the
BERT models are in memory once. Voice folders are read through `vits.voice_folder`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import ApiError
from server.params import DEFAULT_MAX_MODELS
from settings import Settings
from vits.errors import KoeError
from vits.voice_folder import (
    ONNX,
    ONNX_METADATA,
    config_path,
    file_stamp,
    generator_files,
    models_dir,
    userdict_for,
)

ONNX_SUFFIX = "@onnx"  # "alice@onnx" = the ONNX export of voice alice (Data/alice/onnx)
# torch's random generator is process-global (seeds use fork_rng), so torch synthesis runs one job at a
# time across all models; that keeps seeded audio identical under load. ONNX voices use their own rng.
TORCH_LOCK = threading.Lock()
NO_LIMIT = 1 << 30


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
    stamp: list[int] | None = None  # [size, mtime_ns] of a G file when loaded (None for folders)
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

    def _submit(self, fn: Callable[[], Any], max_queue: int) -> concurrent.futures.Future:
        """Queue `fn` (under the torch lock for torch voices). Raises ApiError(503) full, ApiError(409) unloaded."""
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
            return self.executor.submit(job)
        except RuntimeError:
            with self._count_lock:
                self.pending -= 1
            raise ApiError(409, f"model '{self.name}' was unloaded while the request waited",
                           "load it again (POST /models/load) and retry") from None

    async def run(self, fn: Callable[[], Any], max_queue: int) -> Any:
        """Run `fn` on this model's queue; raises ApiError(503) when `max_queue` jobs already wait."""
        future = self._submit(fn, max_queue)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancel():  # the client left before the job started: it will never count itself out
                with self._count_lock:
                    self.pending -= 1
            raise

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on this model's queue and wait for it (the studio's synchronous callers; no queue limit)."""
        return self._submit(fn, NO_LIMIT).result()

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


def default_loader(path: Path, device: str, checkpoint: str | None = None):
    """Load a voice: a folder with an ONNX export (koe_onnx.json) runs on onnxruntime, anything else on torch.

    `checkpoint` names a G file inside the voice's models/ (or beside a G path). Returns (voice, backend).
    Raises KoeError for what cannot be loaded.
    """
    if path.is_dir() and (path / ONNX_METADATA).is_file():
        from vits.onnx_runtime import OnnxVoice

        return OnnxVoice.load(path), "onnx"
    from vits.synthesis import Voice

    target = Path(checkpoint) if checkpoint else path
    if checkpoint and not target.is_absolute():
        target = models_dir(path) / checkpoint if path.is_dir() else path.parent / checkpoint
    return Voice.load(target, device=device), "torch"


def _user_dict_for(path: Path):
    """The voice's pronunciation dictionary (Data/<voice>/userdict.txt) loaded, if it has one."""
    found = userdict_for(path)
    if found is None:
        return None
    from vits.text import UserDict

    return UserDict.load(found)


def _has_torch_voice(voice_dir: Path) -> bool:
    return bool(generator_files(models_dir(voice_dir)))


def _stamp(path: Path) -> list[int] | None:
    return file_stamp(path) if path.is_file() else None


class ModelRegistry:
    """The voices the server knows: loaded ones (with their queues) and loadable ones under the data root.

    Args:
        settings: studio settings (data root, device, BERT folders).
        device: where torch models run ("cpu", "cuda", ...).
        max_models: most models kept in memory; the least recently used idle one is unloaded past it.
        allow_paths: accept file-system paths (not only voice names) in `model`.
        loader: `(path, device, checkpoint) -> (voice, backend)`; the default loads torch or ONNX voices.
        bert: a `BertFeatures`, "auto" (load the folders named in the settings on first use, when present)
            or None (no BERT models).
    """

    def __init__(self, settings: Settings, device: str, max_models: int = DEFAULT_MAX_MODELS,
                 allow_paths: bool = True, loader: Callable | None = None, bert: Any = "auto"):
        self.settings = settings
        self.device = device
        self.max_models = max(1, max_models)
        self.allow_paths = allow_paths
        self.loader = loader or default_loader
        self.models: dict[str, LoadedModel] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._bert = bert
        self._bert_lock = threading.Lock()

    # -- BERT
    def bert(self):
        """The shared BERT feature extractor (None without BERT models), built on first use when "auto"."""
        with self._bert_lock:
            if self._bert == "auto":
                dirs = {lang: path for lang, path in self.settings.bert.items() if Path(path).is_dir()}
                value = None
                if dirs:
                    from vits.text.bert import BertFeatures

                    value = BertFeatures(dirs, device=self.device)
                    for lang in dirs:
                        # Load now: a model loaded inside a seeded synthesis would consume random numbers
                        # and make the first request's audio differ from later ones with the same seed.
                        value.hidden_size(lang)
                self._bert = value
            return self._bert

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
            has_torch = _has_torch_voice(sub) and config_path(sub).is_file()
            if has_torch or (sub / ONNX_METADATA).is_file() or (sub / ONNX / ONNX_METADATA).is_file():
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
            key, path = self._resolve_path(spec)
        else:
            key, path = spec, self._resolve_name(spec)
            no_torch = not _has_torch_voice(path) and not (path / ONNX_METADATA).is_file()
            if backend is None and no_torch and (path / ONNX / ONNX_METADATA).is_file():
                backend = "onnx"
        if backend == "onnx" and not (path / ONNX_METADATA).is_file():
            if not (path / ONNX / ONNX_METADATA).is_file():
                raise ApiError(404, f"'{spec}' has no ONNX export",
                               f"export it first: python -m pipeline.export_onnx {path}")
            path = path / ONNX
        if backend == "onnx" and not key.endswith(ONNX_SUFFIX):
            key += ONNX_SUFFIX
        return key, path

    def _resolve_path(self, spec: str) -> tuple[str, Path]:
        if not self.allow_paths:
            raise ApiError(403, "loading models by path is switched off on this server",
                           "pass a voice name from GET /models")
        path = Path(spec).expanduser()
        if not path.is_absolute():
            path = (self.settings.root / path).resolve()
        if not path.exists():
            raise ApiError(404, f"model path not found: {spec}",
                           "pass a voice folder (Data/<voice>), a G_*.pth file or an ONNX export folder")
        return str(path), path

    def _resolve_name(self, spec: str) -> Path:
        try:
            path = self.settings.voice_dir(spec)
        except KoeError as exc:
            raise ApiError(422, f"invalid model name '{spec}'", exc.fix) from None
        if not path.is_dir():
            raise ApiError(404, f"unknown model '{spec}'",
                           f"use one of the loaded or available models (GET /models); voices live in "
                           f"{self.settings.data_root}/<voice>/", loaded=list(self.models),
                           available=self.available())
        return path

    # -- lookup
    def find(self, spec: str | None, model_id: int | None) -> LoadedModel | None:
        """A loaded model by id, key or name (None if not loaded). Raises ApiError(404) for an unknown id."""
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
            if not self.models and not available:
                raise ApiError(404, f"no voice to speak with: none is loaded and {self.settings.data_root} "
                                    "holds no trained voice",
                               "train one first (python -m pipeline.train Data/<voice>)"
                               + (", or pass model=<a voice folder or G_*.pth path>" if self.allow_paths else ""),
                               loaded=[], available=[])
            raise ApiError(422, "no model given and there is more than one to choose from",
                           "pass model=<voice name> (or model_id=<id>); see GET /models",
                           loaded=list(self.models), available=available)
        return await self.load(spec)

    async def load(self, spec: str, device: str | None = None, checkpoint: str | None = None,
                   backend: str | None = None) -> LoadedModel:
        """Load (or return the already loaded) model `spec`, off the event loop."""
        key, path = self.resolve(spec, backend)
        return await asyncio.to_thread(self._load_blocking, key, path, device or self.device, checkpoint)

    def load_now(self, spec: str, device: str | None = None, checkpoint: str | None = None,
                 backend: str | None = None, reload_changed: bool = False) -> LoadedModel:
        """`load` for synchronous callers (start-up preloading, the studio).

        With `reload_changed`, a G file loaded before and changed on disk since is loaded again.
        Raises ApiError like `load`.
        """
        key, path = self.resolve(spec, backend)
        old = self.models.get(key)
        if reload_changed and old is not None and old.stamp != _stamp(path):
            with self._lock:
                self._drop(old)
        return self._load_blocking(key, path, device or self.device, checkpoint)

    def _load_blocking(self, key: str, path: Path, device: str, checkpoint: str | None) -> LoadedModel:
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:  # two requests for one unloaded model load it once
            if key in self.models:
                return self.models[key]
            stamp = _stamp(path)
            try:
                voice, backend = self.loader(path, device, checkpoint)
            except KoeError as exc:
                raise ApiError(422, f"could not load model '{key}': {exc.problem}", exc.fix,
                               where=exc.where) from None
            user_dict = _user_dict_for(path)
            with self._lock:
                self._evict_for_one_more()
                entry = LoadedModel(self._next_id, Path(key).name if os.sep in key else key, path, voice,
                                    backend, "cpu" if backend == "onnx" else device, user_dict=user_dict,
                                    stamp=stamp)
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
