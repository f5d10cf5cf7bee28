"""The voices a server knows: loaded ones, each with its own queue, and loadable ones under the data root.

One `ModelRegistry` serves the HTTP API and, in the studio, the Synthesize tab too, so a voice and the
BERT models are in memory once. Voice folders are read through `vits.voice_folder`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.bert_precision import int8_bert_error, int8_features
from server.errors import ApiError
from server.params import BERT_PRECISIONS, DEFAULT_MAX_MODELS
from settings import Settings
from vits.defaults import SYNTHESIS
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
# time across all models, and loading a model (building a network draws its initial weights from that same
# generator) or the BERT models waits for the lock too: a load on another thread in the middle of a seeded
# synthesis would consume its random numbers and change its audio. ONNX voices synthesize with their own rng.
TORCH_LOCK = threading.Lock()
NO_LIMIT = 1 << 30
MAX_NAME = 200  # characters in a voice name (longer ones cannot be folder names on common file systems)
_DEVICE = re.compile(r"(cpu|cuda|mps)(?::(\d{1,3}))?")


def check_device(device: str) -> str:
    """`device` if this machine has it ("cpu", "cuda", "cuda:1", "mps"). Raises ApiError(422) otherwise."""
    spelled = str(device).strip().lower()
    found = _DEVICE.fullmatch(spelled)
    if not found or (found.group(1) != "cuda" and found.group(2) is not None):
        raise ApiError(422, f"unknown device '{device}'", "use cpu, cuda, or cuda:<index> such as cuda:1")
    if found.group(1) == "cpu":
        return spelled
    import torch

    if found.group(1) == "mps":
        if not torch.backends.mps.is_available():
            raise ApiError(422, "device 'mps' is not available on this machine", "use device=cpu")
        return spelled
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ApiError(422, f"device '{device}': this machine has no CUDA GPU", "use device=cpu")
    if found.group(2) is not None and int(found.group(2)) >= count:
        raise ApiError(422, f"device '{device}': this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}",
                       f"use one of cuda:0 … cuda:{count - 1}")
    return spelled


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
    language: str = SYNTHESIS.language  # the default language of its /voice requests (hiyoriUI's model language)
    model_file: Path | None = None  # the G file (torch) or the ONNX folder that was loaded
    config_file: Path | None = None  # the config.json it was loaded with
    bert_int8: Any = None  # an ONNX export's int8 BERT graphs, read on its first bert=int8 request (ModelRegistry)
    executor: concurrent.futures.ThreadPoolExecutor = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self):
        if self.executor is None:
            self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"koe-{self.name}")
        self._count_lock = threading.Lock()
        self.bert_lock = threading.Lock()  # guards bert_int8 (server/bert_precision.py)

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
        out = {
            "id": self.model_id, "name": self.name, "path": str(self.path), "backend": self.backend,
            "device": self.device, "language": self.language, "sampling_rate": self.sampling_rate,
            "speakers": self.speakers, "spk2id": self.speaker_ids(), "queue": self.pending, "served": self.served,
            "loaded_at": self.loaded_at,
        }
        if self.backend == "onnx":  # what `bert=` may ask of this voice, and the int8 error koe_bert.json records
            error = int8_bert_error(self.path)
            out["bert_precisions"] = list(BERT_PRECISIONS) if error is not None else ["fp32"]
            out["bert_int8_error"] = error
        return out

    def hiyori_info(self) -> dict:
        """This model as Bert-VITS2's hiyoriUI describes one in /models/info (its fields, plus our `name`)."""
        spk2id = self.speaker_ids()
        config = getattr(self.voice, "config", None)
        return {
            "config_path": str(self.config_file or ""), "model_path": str(self.model_file or self.path),
            "device": self.device, "language": self.language, "spk2id": spk2id,
            "id2spk": {str(i): name for name, i in spk2id.items()},
            "version": str(getattr(config, "version", None) or "2.3"), "name": self.name,
        }

    def close(self) -> None:
        # Jobs already queued still finish: they hold their own reference to the voice.
        self.executor.shutdown(wait=False)


def default_loader(path: Path, device: str, checkpoint: str | None = None, config: str | None = None):
    """Load a voice: a folder with an ONNX export (koe_onnx.json) runs on onnxruntime, anything else on torch.

    `checkpoint` names a G file inside the voice's models/ (or beside a G path); `config` a config.json to
    use instead of the voice's own. Returns (voice, backend). Raises KoeError for what cannot be loaded.
    """
    if path.is_dir() and (path / ONNX_METADATA).is_file():
        from vits.onnx_runtime import OnnxVoice

        return OnnxVoice.load(path), "onnx"
    from vits.synthesis import Voice

    target = Path(checkpoint) if checkpoint else path
    if checkpoint and not target.is_absolute():
        target = models_dir(path) / checkpoint if path.is_dir() else path.parent / checkpoint
    return Voice.load(target, device=device, config_path=config), "torch"


def _loaded_files(path: Path, voice: Any, backend: str, config: str | None) -> tuple[Path, Path | None]:
    """(the G file or ONNX folder, the config.json) a freshly loaded voice came from, for /models/info."""
    if backend == "onnx":
        return path, path / ONNX_METADATA
    model_file = Path(getattr(voice, "checkpoint", None) or path)
    if config:
        return model_file, Path(config)
    try:
        from vits.synthesis import find_voice_files

        return model_file, find_voice_files(path if path.is_dir() else model_file,
                                            checkpoint=model_file if path.is_dir() else None)[1]
    except KoeError:
        return model_file, None


def _user_dict_for(path: Path):
    """The voice's pronunciation dictionary (Data/<voice>/userdict.txt) loaded, if it has one."""
    found = userdict_for(path)
    if found is None:
        return None
    from vits.text import UserDict

    return UserDict.load(found)


def looks_like_path(spec: str) -> bool:
    """Whether a `model`/`checkpoint` value is a file-system path rather than a name (`--no-paths` refuses those)."""
    return any(c in spec for c in "/\\") or spec.startswith("~") or spec.endswith((".pth", ".pt", ".safetensors"))


def split_checkpoint(spec: str, checkpoint: str | None) -> tuple[str, str | None]:
    """"alice:G_8000.pth" → ("alice", "G_8000.pth"): the key a voice loaded with a named checkpoint has."""
    head, sep, tail = spec.partition(":")
    if checkpoint is None and sep and head and tail and not any(c in spec for c in "/\\"):
        return head, tail
    return spec, checkpoint


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
        self._clap = None
        self._clap_lock = threading.Lock()

    # -- BERT
    def bert(self):
        """The shared BERT feature extractor (None without BERT models), built on first use when "auto"."""
        with self._bert_lock:
            if self._bert == "auto":
                dirs = {lang: path for lang, path in self.settings.bert.items() if Path(path).is_dir()}
                value = None
                if dirs:
                    from vits.text.bert import BertFeatures

                    # Load now, under the torch lock: building a BERT model draws random numbers, which a
                    # seeded synthesis running at the same time would otherwise lose (TORCH_LOCK).
                    with TORCH_LOCK:
                        value = BertFeatures(dirs, device=self.device)
                        for lang in dirs:
                            value.hidden_size(lang)
                self._bert = value
            return self._bert

    def bert_for(self, entry: LoadedModel, precision: str = "fp32"):
        """The BERT features `entry` reads text with: an ONNX export's own BERT graphs when it has them
        (`export_onnx --bert`: no torch), else the shared `bert()` (None without BERT models).

        `precision="int8"` picks the export's int8 graphs (`--bert --int8`), opened on the first such request and
        kept with the entry (its fp32 graphs too load only when used, so an int8-only voice holds one copy).
        Raises ApiError(422) for an unknown precision, or int8 asked of a voice without int8 graphs.
        """
        if precision not in BERT_PRECISIONS:
            raise ApiError(422, f"unknown BERT precision '{precision}'",
                           "use bert=fp32 (the default) or bert=int8 (an ONNX voice exported with --bert --int8)")
        own = getattr(entry.voice, "bert", None) if entry.backend == "onnx" else None
        if precision == "int8":
            return int8_features(entry, own)
        return own if own is not None else self.bert()

    @staticmethod
    def bert_engine(entry: LoadedModel, precision: str = "fp32") -> str:
        """In words, what reads the text of `entry` at `precision`: "ONNX BERT (fp32)", "ONNX BERT (int8)" or
        "torch BERT"."""
        own = getattr(entry.voice, "bert", None) if entry.backend == "onnx" else None
        return f"ONNX BERT ({'int8' if precision == 'int8' else own.kind})" if own is not None else "torch BERT"

    # -- CLAP (the emotion prompts of 2.2 voices)
    def clap(self):
        """The shared `vits.clap.ClapEmbedder` (config.yml `clap:`), loaded on first use.

        Raises KoeError naming the folder and `python -m pipeline.download clap` when the model is missing.
        """
        with self._clap_lock:
            if self._clap is None:
                from vits.clap import ClapEmbedder

                with TORCH_LOCK:  # as for BERT: building a model draws random numbers
                    self._clap = ClapEmbedder(self.settings.clap, device=self.device)
            return self._clap

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
        if looks_like_path(spec):
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
        try:
            path = Path(spec).expanduser()
            if not path.is_absolute():
                path = (self.settings.root / path).resolve()
            found = path.exists()
        except (OSError, ValueError, RuntimeError):  # a name too long, a NUL byte, a symlink loop
            found = False
        if not found:
            raise ApiError(404, f"model path not found: {spec}",
                           "pass a voice folder (Data/<voice>), a G_*.pth file or an ONNX export folder")
        return str(path), path

    def _resolve_name(self, spec: str) -> Path:
        try:
            if len(spec) > MAX_NAME:
                raise KoeError(f"{len(spec)} characters", fix=f"voice names have at most {MAX_NAME} characters")
            path = self.settings.voice_dir(spec)
        except KoeError as exc:
            raise ApiError(422, f"invalid model name '{spec[:MAX_NAME]}'", exc.fix) from None
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
                           "GET /models lists the loaded models and their ids", code=10,
                           loaded={str(e.model_id): e.name for e in self.models.values()})
        if spec is None:
            return None
        if spec in self.models:
            return self.models[spec]
        for entry in self.models.values():
            # --no-paths: a path is refused even when it names a loaded voice (resolve() says so).
            if entry.name == spec or (self.allow_paths and str(entry.path) == spec):
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

    def checkpoint_file(self, key: str, path: Path, checkpoint: str | None) -> tuple[str, str | None]:
        """(registry key, G file) for a `checkpoint` asked of voice `key` at `path` (None: its newest).

        A file name is looked up among the voice's G files; a path is taken only where paths are allowed,
        and under `--no-paths` it is refused before the file system is asked (the answer never tells
        whether a file exists). Raises ApiError(403/404/422).
        """
        if checkpoint is None or not checkpoint.strip():
            return key, None
        name = checkpoint.strip()
        if (path / ONNX_METADATA).is_file():
            raise ApiError(422, f"'{key}' is an ONNX export: it has no checkpoints to choose from",
                           "leave 'checkpoint' out, or load the torch voice (backend=torch)")
        if "\0" in name or len(name) > MAX_NAME:
            raise ApiError(422, "invalid checkpoint name", "pass a file name such as G_8000.pth")
        if any(c in name for c in "/\\") or name.startswith("~") or name in (".", ".."):
            if not self.allow_paths:
                raise ApiError(403, "checkpoint paths are switched off on this server",
                               "pass a checkpoint file name from the voice's models/ folder, e.g. G_8000.pth "
                               "(GET /models/get_local lists them)")
            target = Path(name).expanduser()
            if not target.is_absolute():
                target = (models_dir(path) if path.is_dir() else path.parent) / target
            return str(target), str(target)
        files = {p.name: p for _, p in generator_files(path if path.is_dir() else path.parent)}
        if name not in files:
            raise ApiError(404, f"voice '{key}' has no checkpoint '{name}'",
                           "use one of: " + (", ".join(sorted(files)) or "(none: train the voice first)"),
                           checkpoints=sorted(files))
        return f"{key}:{name}", str(files[name])

    async def load(self, spec: str, device: str | None = None, checkpoint: str | None = None,
                   backend: str | None = None, language: str | None = None,
                   config: str | None = None) -> LoadedModel:
        """Load (or return the already loaded) model `spec`, off the event loop.

        `device` is checked against this machine, `checkpoint` picks a G file (see `checkpoint_file`),
        `language` is the model's default request language, `config` a config.json path (paths allowed only).
        """
        spec, checkpoint = split_checkpoint(spec, checkpoint)
        key, path = self.resolve(spec, backend)
        key, g_file = self.checkpoint_file(key, path, checkpoint)
        config = self._config_path(config)
        device = check_device(device) if device else self.device
        return await asyncio.to_thread(self._load_blocking, key, path, device, g_file, language, config)

    def _config_path(self, config: str | None) -> str | None:
        if config is None or not config.strip():
            return None
        if not self.allow_paths:
            raise ApiError(403, "config paths are switched off on this server",
                           "leave config_path out: a voice's own configs/config.json is used")
        path = Path(config.strip()).expanduser()
        path = path if path.is_absolute() else self.settings.root / path
        try:
            found = path.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise ApiError(404, f"config file not found: {config}", "pass the config.json the G file was trained "
                           "with, or leave config_path out (the voice's own is used)", code=15)
        return str(path)

    def load_now(self, spec: str, device: str | None = None, checkpoint: str | None = None,
                 backend: str | None = None, reload_changed: bool = False) -> LoadedModel:
        """`load` for synchronous callers (start-up preloading, the studio).

        With `reload_changed`, a G file loaded before and changed on disk since is loaded again.
        Raises ApiError like `load`.
        """
        spec, checkpoint = split_checkpoint(spec, checkpoint)
        key, path = self.resolve(spec, backend)
        key, g_file = self.checkpoint_file(key, path, checkpoint)
        old = self.models.get(key)
        if reload_changed and old is not None and old.stamp != _stamp(path):
            with self._lock:
                self._drop(old)
        return self._load_blocking(key, path, check_device(device) if device else self.device, g_file)

    def _load_blocking(self, key: str, path: Path, device: str, checkpoint: str | None,
                       language: str | None = None, config: str | None = None) -> LoadedModel:
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:  # two requests for one unloaded model load it once
            if key in self.models:
                return self.models[key]
            stamp = _stamp(path)
            try:
                with TORCH_LOCK:  # building a network draws from torch's global generator (TORCH_LOCK)
                    voice, backend = self.loader(path, device, checkpoint, **({"config": config} if config else {}))
            except KoeError as exc:
                raise ApiError(422, f"could not load model '{key}': {exc.problem}", exc.fix,
                               where=exc.where) from None
            user_dict = _user_dict_for(path)
            model_file, config_file = _loaded_files(path, voice, backend, config)
            with self._lock:
                self._evict_for_one_more()
                entry = LoadedModel(self._next_id, Path(key).name if os.sep in key else key, path, voice,
                                    backend, "cpu" if backend == "onnx" else device, user_dict=user_dict,
                                    stamp=stamp, language=language or SYNTHESIS.language, model_file=model_file,
                                    config_file=config_file)
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
