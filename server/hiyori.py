"""The routes of Bert-VITS2's hiyoriUI server that are not `/voice`, answered field for field as it does.

hiyoriUI (Bert-VITS2's `hiyoriUI.py`) is what bots and its Web UI were written against: `/models/info` keyed
by model id with `config_path, model_path, device, language, spk2id, id2spk, version`; `/models/add` and
`/models/delete` answering `{"status": 0, "detail", "Data"}`; `/models/get_local` and `/models/get_unloaded`
listing G files per voice folder; `/status` with the machine's CPU, memory and GPUs; `/tools/...`.
Where hiyoriUI answers a problem with HTTP 200 and `{"status": <code>, "detail"}`, we answer the HTTP error
status with `{"error", "detail", "status": <the same code>}`, so a client reading either one works.

Path parameters (`model_path`, `config_path`, `root_dir`, `path`) obey `--no-paths`, and `root_dir` and
`path` stay inside the data root whatever the flag; a refusal never depends on whether the path exists.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse

from server.errors import ApiError
from server.params import AddParams, validate
from server.registry import ModelRegistry
from vits.defaults import SYNTHESIS
from vits.errors import KoeError
from vits.lists import LANGUAGES as LIST_LANGUAGES
from vits.lists import read_cleaned_list
from vits.voice_folder import TRAIN_LIST, VAL_LIST, generator_step, models_dir, resolve_wav

DEFAULT_ROOT_DIR = "Data"  # hiyoriUI's default root_dir: here always the server's data root


def add_hiyori_routes(app: FastAPI, registry: ModelRegistry) -> None:
    """Add /models/info, /models/add, /models/delete, /models/get_local, /models/get_unloaded, /tools/*."""

    @app.get("/models/info", summary="Loaded models keyed by model_id (hiyoriUI format)", tags=["hiyoriUI"])
    async def models_info():
        return {str(e.model_id): e.hiyori_info() for e in registry.models.values()}

    @app.get("/models/add", summary="Load a model (hiyoriUI; model_path = voice name or G file path)",
             tags=["hiyoriUI"])
    async def models_add(model_path: str = Query(...), config_path: str | None = Query(None),
                         device: str | None = Query(None, description="default: the server's device"),
                         language: str = Query(SYNTHESIS.language, description="the model's default request language")):
        params = validate(AddParams, {"model_path": model_path, "config_path": config_path, "device": device,
                                      "language": language})
        entry = await registry.load(params.model_path, params.device, language=params.language,
                                    config=params.config_path)
        return {"status": 0, "detail": "model added", "Data": {"model_id": entry.model_id,
                                                               "model_info": entry.hiyori_info()},
                "loaded": entry.info(), "data": {"model_id": entry.model_id}}

    @app.get("/models/delete", summary="Unload a model by id (hiyoriUI)", tags=["hiyoriUI"])
    async def models_delete(model_id: int = Query(...)):
        try:
            entry = registry.unload(None, model_id)
        except ApiError as exc:
            exc.code = 14
            raise
        return {"status": 0, "detail": "model deleted", "unloaded": entry.name, "model_id": entry.model_id}

    @app.get("/models/get_local", summary="G files of every voice under the data root (hiyoriUI)",
             tags=["hiyoriUI"])
    async def get_local(root_dir: str = Query(DEFAULT_ROOT_DIR, description="the data root (or a folder in it)")):
        return await asyncio.to_thread(local_models, registry, search_root(registry, root_dir), False)

    @app.get("/models/get_unloaded", summary="G files not loaded yet (hiyoriUI)", tags=["hiyoriUI"])
    async def get_unloaded(root_dir: str = Query(DEFAULT_ROOT_DIR, description="the data root (or a folder in it)")):
        return await asyncio.to_thread(local_models, registry, search_root(registry, root_dir), True)

    @app.get("/tools/translate", summary="hiyoriUI's translation (not available here)", tags=["hiyoriUI"])
    async def translate(texts: str = Query(...), to_language: str = Query(...)):
        raise ApiError(501, "translation is not available on this server",
                       "translate the text before sending it to /voice")

    @app.get("/tools/random_example", summary="A random clip and its text from the voices' lists (hiyoriUI)",
             tags=["hiyoriUI"])
    async def random_example(language: str | None = Query(None), root_dir: str = Query(DEFAULT_ROOT_DIR)):
        root = search_root(registry, root_dir)
        examples = await asyncio.to_thread(_examples, root)
        lang = None if language is None else language.strip().upper()
        if lang is not None and lang not in LIST_LANGUAGES:
            raise ApiError(422, f"unknown language '{language}'", f"use one of {', '.join(LIST_LANGUAGES)}")
        pool = [e for e in examples if lang is None or e["language"] == lang]
        if not pool:
            raise ApiError(404, f"no {lang + ' ' if lang else ''}clips in the train/val lists under {root}",
                           "preprocess a voice first (python -m pipeline.prepare Data/<voice>)", code=17)
        pick = random.choice(pool)
        return {"status": 0, "Data": {"text": pick["text"], "audio": pick["audio"], "speaker": pick["speaker"]}}

    @app.get("/tools/get_audio", summary="A wav file under the data root (hiyoriUI)", tags=["hiyoriUI"])
    async def get_audio(path: str = Query(...)):
        target = _confined(registry, path, "path")
        if target.suffix.lower() != ".wav":
            raise ApiError(422, "only .wav files are served", "pass the path of a .wav clip", code=19)
        if not target.is_file():
            raise ApiError(404, f"no such clip: {path}", "GET /tools/random_example names existing ones", code=18)
        return FileResponse(target, media_type="audio/wav")


def search_root(registry: ModelRegistry, root_dir: str | None) -> Path:
    """The folder a hiyoriUI `root_dir` names: the data root by default (hiyoriUI's "Data"), else a folder
    inside it (paths allowed only). Raises ApiError(403)."""
    data_root = registry.settings.data_root
    if root_dir is None or root_dir.strip() in ("", DEFAULT_ROOT_DIR, data_root.name, str(data_root)):
        return data_root
    return _confined(registry, root_dir, "root_dir")


def _confined(registry: ModelRegistry, value: str, name: str) -> Path:
    """`value` as a path inside the data root; refused (same answer whether or not it exists) otherwise."""
    data_root = registry.settings.data_root.resolve()
    if not registry.allow_paths:
        raise ApiError(403, f"'{name}' paths are switched off on this server",
                       "this server takes voice names only (--no-paths)")
    try:
        path = Path(value).expanduser()
        path = (path if path.is_absolute() else registry.settings.root / path).resolve()
        inside = path.is_relative_to(data_root)
    except (OSError, ValueError, RuntimeError):
        inside = False
    if not inside:
        raise ApiError(403, f"'{name}' must be inside the data root", f"pass a path under {data_root}")
    return path


def local_models(registry: ModelRegistry, root: Path, only_unloaded: bool) -> dict[str, list[str]]:
    """{voice folder: ["G_1000.pth", "models/G_2000.pth", ...]} (lowest step first), as hiyoriUI lists them."""
    loaded = {str(Path(e.model_file).resolve()) for e in registry.models.values() if e.model_file}
    result: dict[str, list[str]] = {}
    if not root.is_dir():
        return result
    for voice in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = []
        for folder, prefix in ((voice, ""), (models_dir(voice), models_dir(voice).name + "/")):
            if not folder.is_dir():
                continue
            found = [(generator_step(p), p) for p in folder.iterdir() if p.suffix == ".pth" and p.is_file()]
            found = [(step, p) for step, p in found if step is not None
                     and not (only_unloaded and str(p.resolve()) in loaded)]
            files += [prefix + p.name for _, p in sorted(found, key=lambda sp: (sp[0], sp[1].name))]
        if files:
            result[voice.name] = files
    return result


def _examples(root: Path) -> list[dict]:
    """Every clip of the voices' train/val lists under `root` whose wav exists: text, audio path, speaker."""
    found = []
    voices = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    for voice in (v for v in voices if (v / TRAIN_LIST).is_file()):
        for name in (TRAIN_LIST, VAL_LIST):
            try:
                lines = read_cleaned_list(voice / name)
            except KoeError:  # a missing val.list or a broken line: that list offers no examples
                continue
            for _, line in lines:
                wav = resolve_wav(voice, line.wav)
                if wav is not None and line.language in LIST_LANGUAGES:
                    found.append({"text": line.text, "audio": str(wav[1]), "speaker": line.speaker,
                                  "language": line.language})
    return found


# ----------------------------------------------------------------------------------------------------------
# /status: the machine, as hiyoriUI reports it

_CPU_SAMPLE: list[tuple[float, float]] = []  # the last (busy, total) jiffies read, for cpu_percent


def _cpu_times() -> tuple[float, float] | None:
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [float(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


async def cpu_percent() -> float | None:
    """CPU use in % since the previous call (the first call measures 0.2 s); None off Linux."""
    first = _cpu_times()
    if first is None:
        return None
    if not _CPU_SAMPLE:
        await asyncio.sleep(0.2)
        _CPU_SAMPLE.append(first)
        first = _cpu_times() or first
    (busy0, total0), (busy1, total1) = _CPU_SAMPLE[-1], first
    _CPU_SAMPLE[:] = [first]
    return round(100.0 * (busy1 - busy0) / (total1 - total0), 1) if total1 > total0 else 0.0


def _memory_bytes() -> tuple[int, int] | None:
    """(total, available) system memory in bytes from /proc/meminfo, or None."""
    values = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    if "MemTotal" not in values:
        return None
    return values["MemTotal"], values.get("MemAvailable", values.get("MemFree", 0))


async def system_status() -> dict:
    """hiyoriUI's /status fields: devices, cpu_percent, memory_total/available/used/percent, gpu."""
    torch = sys.modules.get("torch")
    count = torch.cuda.device_count() if torch is not None and torch.cuda.is_available() else 0
    gpus = []
    for index in range(count):
        free, total = torch.cuda.mem_get_info(index)
        try:
            load = torch.cuda.utilization(index) / 100.0
        except Exception:  # needs NVML (pynvml), which torch does not require
            load = None
        gpus.append({"gpu_id": index, "gpu_load": load, "gpu_memory": {
            "total": round(total / 2**20, 1), "used": round((total - free) / 2**20, 1),
            "free": round(free / 2**20, 1)}})
    memory = _memory_bytes()
    total, available = memory if memory else (None, None)
    return {
        "devices": ["cpu"] + [f"cuda:{i}" for i in range(count)],
        "cpu_percent": await cpu_percent(),
        "memory_total": total, "memory_available": available,
        "memory_used": None if memory is None else total - available,
        "memory_percent": None if not total else round(100.0 * (total - available) / total, 1),
        "gpu": gpus,
    }
