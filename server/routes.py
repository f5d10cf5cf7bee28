"""The HTTP API as a FastAPI app: `create_app(settings)` wires the routes, the error answers and the key check.

`/voice` (GET and POST) speaks text; `/models...` loads, lists and unloads voices; `/status` reports the
device, memory and queues. Every error is JSON `{"error": ..., "detail": ...}` (server/errors.py).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.security import APIKeyHeader, APIKeyQuery
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.audio import STREAM_FORMATS, encode_audio, media_type, stream_piece, wav_stream_header
from server.errors import AnswerCrashes, ApiError
from server.hiyori import add_hiyori_routes, system_status
from server.params import (
    DEFAULT_MAX_MODELS,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_TEXT,
    LoadParams,
    UnloadParams,
    VoiceParams,
    check_text_length,
    request_fields,
    validate,
    validation_error,
)
from server.registry import LoadedModel, ModelRegistry, check_device
from settings import Settings, load_settings
from vits.clap import emotion_vector, takes_emotion
from vits.errors import KoeError

VOICE_DOC = ("Speak `text` with a loaded (or loadable) voice. Returns audio bytes (`format`), or JSON "
             "`{error, detail}` on a problem. Long text: use POST (JSON `{\"text\": ...}` or form).")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of this server."""

    max_text_length: int = DEFAULT_MAX_TEXT
    max_queue: int = DEFAULT_MAX_QUEUE
    max_models: int = DEFAULT_MAX_MODELS

    @property
    def max_body(self) -> int:
        return max(1 << 20, self.max_text_length * 8)


def create_app(settings: Settings | None = None, *, api_key: str | None = None, device: str | None = None,
               max_text_length: int = DEFAULT_MAX_TEXT, max_queue: int = DEFAULT_MAX_QUEUE,
               max_models: int = DEFAULT_MAX_MODELS, allow_paths: bool = True, bert: Any = "auto",
               preload: list[str] | None = None, loader: Callable | None = None,
               registry: ModelRegistry | None = None) -> FastAPI:
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
        registry: a registry to share (the studio's); device, max_models, allow_paths, bert and loader
            then come from it.
    Returns:
        a FastAPI app; run it with uvicorn, or put it on the studio's port (server/mount.py).
    Raises:
        ApiError: a voice in `preload` cannot be found or loaded.
    """
    settings = settings or load_settings()
    settings.use_text_frontend()  # the same Chinese polyphone reader as the text stage (config.yml text:)
    api_key = api_key if api_key is not None else (os.environ.get("KOE_API_KEY") or None)
    if registry is None:
        device = check_device(device) if device else settings.resolved_device()
        registry = ModelRegistry(settings, device, max_models=max_models,
                                 allow_paths=allow_paths, loader=loader, bert=bert)
    else:
        max_models = registry.max_models
    limits = Limits(max_text_length, max_queue, max_models)
    app = FastAPI(
        title="Koe Studio voice API",
        description="Bert-VITS2 2.3 text-to-speech. `/voice` takes hiyoriUI's parameter names; see docs/api.md.",
        version="2.3",
        dependencies=[Depends(_key_check(api_key))],
    )
    # The offline /docs page bundles Swagger UI 4 (swagger-ui-bundle), which renders OpenAPI 3.0 documents only
    # ("does not specify a valid version field" for FastAPI's default 3.1.0).
    app.openapi_version = "3.0.3"
    app.state.registry = registry
    app.state.settings = settings
    app.state.max_text_length = max_text_length
    # Outside the routes' error handling: a crash still gets a JSON 500, and the connection stays open.
    app.add_middleware(AnswerCrashes)
    _add_error_handlers(app)
    _add_voice_routes(app, registry, limits)
    _add_model_routes(app, registry, limits)
    add_hiyori_routes(app, registry)
    _add_status_route(app, registry, limits, api_key_required=api_key is not None)
    for spec in preload or ():
        registry.load_now(spec)
    return app


def _key_check(api_key: str | None):
    """The dependency every endpoint runs: nothing without a key, else X-API-Key or ?api_key= must match."""
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

    return check_key


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure, ours or the framework's, answered as JSON {error, detail}."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        return validation_error(list(exc.errors())).response()

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


# ----------------------------------------------------------------------------------------------------------
# /voice


def _add_voice_routes(app: FastAPI, registry: ModelRegistry, limits: Limits) -> None:
    @app.get("/voice", summary="Synthesize speech (hiyoriUI-compatible)", description=VOICE_DOC,
             response_class=Response, tags=["voice"],
             responses={200: {"content": {"audio/wav": {}, "audio/mpeg": {}, "audio/ogg": {}, "audio/flac": {}}}})
    async def voice_get(params: VoiceParams = Query()):
        return await synthesize(registry, limits, params)

    @app.post("/voice", summary="Synthesize speech (JSON, form or query parameters)", description=VOICE_DOC,
              response_class=Response, tags=["voice"],
              openapi_extra={"requestBody": {"content": {
                  "application/json": {"schema": VoiceParams.model_json_schema()},
                  "application/x-www-form-urlencoded": {"schema": VoiceParams.model_json_schema()},
              }}},
              responses={200: {"content": {"audio/wav": {}, "audio/mpeg": {}}}})
    async def voice_post(request: Request):
        fields = await request_fields(request, limits.max_body)
        # The length limit is checked before validation so 100 000 characters always get a 413.
        check_text_length(fields.get("text"), limits.max_text_length)
        return await synthesize(registry, limits, validate(VoiceParams, fields))


def _check_voice_request(params: VoiceParams, limits: Limits) -> None:
    """Refuse what no voice can answer: too long, empty, translation, a format that cannot stream."""
    check_text_length(params.text, limits.max_text_length)
    if not params.text.strip():
        raise ApiError(422, "'text' is empty", "pass the text to speak, e.g. /voice?text=你好")
    if params.style_text and len(params.style_text) > limits.max_text_length:
        raise ApiError(413, f"style_text too long: {len(params.style_text)} characters, the limit is "
                            f"{limits.max_text_length}", "a sentence or two of style text is enough")
    if params.auto_translate:
        raise ApiError(422, "auto_translate is not supported", "translate the text before sending it", code=20)
    if params.stream and params.format not in STREAM_FORMATS:
        raise ApiError(422, f"format '{params.format}' cannot be streamed",
                       f"use stream=true with format {' or '.join(STREAM_FORMATS)}, or stream=false")


def _shortlist(items: list[str], limit: int = 30) -> str:
    """'a, b, c' (at most `limit` shown, then how many in all): 850-speaker voices stay readable."""
    return ", ".join(items[:limit]) + (f", … ({len(items)} in all)" if len(items) > limit else "")


def resolve_speaker(entry: LoadedModel, params: VoiceParams) -> str:
    """The speaker name a request asks for (by name, id, or a lone speaker). Raises ApiError(404/422)."""
    spk2id = entry.speaker_ids()
    names = list(spk2id)
    by_id = {v: k for k, v in spk2id.items()}
    wanted = params.speaker_name if params.speaker_name is not None else params.speaker
    if wanted is not None:
        if wanted in spk2id:
            return wanted
        if wanted.isdigit() and params.speaker_name is None and int(wanted) in by_id:
            return by_id[int(wanted)]
        raise ApiError(404, f"unknown speaker '{wanted}' for model '{entry.name}'",
                       f"use one of: {_shortlist(names)}", code=13, speakers=names)
    if params.speaker_id is not None:
        if params.speaker_id in by_id:
            return by_id[params.speaker_id]
        raise ApiError(404, f"unknown speaker_id {params.speaker_id} for model '{entry.name}'",
                       "use one of: " + _shortlist([f"{i}={n}" for n, i in spk2id.items()]), code=12,
                       speakers=names, spk2id=spk2id)
    if names:
        return names[0]
    raise ApiError(422, f"model '{entry.name}' has no speakers in its config", "check data.spk2id in config.json")


async def synthesize(registry: ModelRegistry, limits: Limits, params: VoiceParams) -> Response:
    """Answer one `/voice` request: the whole audio, or a stream of sentences. Raises ApiError."""
    try:
        return await _synthesize_once(registry, limits, params)
    except ApiError as exc:
        # The voice this request names was unloaded between finding it and queueing the job: load it again.
        if exc.status != 409 or params.model is None:
            raise
        return await _synthesize_once(registry, limits, params)


async def _synthesize_once(registry: ModelRegistry, limits: Limits, params: VoiceParams) -> Response:
    _check_voice_request(params, limits)
    entry = await registry.get(params.model, params.model_id)
    if params.language is None:  # hiyoriUI: a request without a language speaks the model's default one
        params = params.model_copy(update={"language": entry.language})
    speaker = resolve_speaker(entry, params)
    # An ONNX export's own BERT graphs first (`bert=int8`: its int8 copy, opened on the first such request)
    bert_features = await asyncio.to_thread(registry.bert_for, entry, params.bert)
    if bert_features is None:
        raise ApiError(503, "this server has no BERT models, so it cannot read text",
                       "download them with `python -m pipeline.download bert` (into the folders named under "
                       "'bert:' in config.yml) and restart the server")
    kwargs = dict(speaker=speaker, bert=bert_features, sdp_ratio=params.sdp_ratio, noise_scale=params.noise,
                  noise_scale_w=params.noisew, length_scale=params.length, seed=params.seed,
                  user_dict=entry.user_dict, style_text=params.style_text, style_weight=params.style_weight)
    emotion_voice = takes_emotion(entry.voice)
    if emotion_voice:
        kwargs["emo"] = await _emotion(registry, entry, params, limits.max_queue)
    headers = {"X-Model": entry.name, "X-Speaker": speaker, "X-Sampling-Rate": str(entry.sampling_rate),
               "X-Bert": registry.bert_engine(entry, params.bert)}
    if params.ignored(emotion_voice):
        headers["X-Ignored-Parameters"] = ",".join(params.ignored(emotion_voice))
    if params.stream:
        return await _streamed(entry, params, kwargs, headers, limits.max_queue)
    return await _whole(entry, params, kwargs, headers, limits.max_queue)


async def _emotion(registry: ModelRegistry, entry: LoadedModel, params: VoiceParams, max_queue: int):
    """The emotion vector of a 2.2 voice's request: its `emotion` text prompt or `reference_audio` clip."""
    try:
        clap = await asyncio.to_thread(registry.clap)
    except KoeError as exc:
        raise ApiError(503, f"this server has no CLAP model, so it cannot read the emotion prompt that 2.2 voices "
                            f"need ({exc.problem}: {exc.where})", exc.fix) from None
    text = None if params.emotion is None else str(params.emotion)
    upload = "upload it as the file field 'reference_audio' of a multipart/form-data POST (wav, flac, ogg or mp3)"
    if params.prompt_mode == "audio" and not params.reference_audio:
        raise ApiError(422, "prompt_mode=audio needs a reference clip (reference_audio)",
                       f"{upload}, or use prompt_mode=text with emotion=<a prompt such as Happy>")
    try:
        return await entry.run(lambda: emotion_vector(clap, text=text, audio=params.reference_audio,
                                                      mode=params.prompt_mode, where="reference_audio"), max_queue)
    except KoeError as exc:
        if params.reference_audio is None or params.prompt_mode == "text":
            raise
        raise ApiError(422, f"reference_audio: {exc.problem}", upload) from None


async def _whole(entry: LoadedModel, params: VoiceParams, kwargs: dict, headers: dict, max_queue: int):
    def job():
        t0 = time.perf_counter()
        audio = entry.voice.synthesize(params.text, params.language, pause=params.pause, **kwargs)
        return audio, time.perf_counter() - t0

    audio, seconds = await entry.run(job, max_queue)
    sr = entry.sampling_rate
    data = await asyncio.to_thread(encode_audio, audio, sr, params.format)
    headers["X-Audio-Seconds"] = f"{len(audio) / sr:.3f}"
    headers["X-Synthesis-Seconds"] = f"{seconds:.3f}"
    return Response(content=data, media_type=media_type(params.format), headers=headers)


async def _streamed(entry: LoadedModel, params: VoiceParams, kwargs: dict, headers: dict, max_queue: int):
    sr = entry.sampling_rate
    sentences = entry.voice.stream(params.text, params.language, **kwargs)
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
            yield await asyncio.to_thread(stream_piece, audio, sr, params.format)
            item, index = await entry.run(lambda: next(sentences, None), max_queue), index + 1

    return StreamingResponse(pieces(), media_type=media_type(params.format), headers=headers)


# ----------------------------------------------------------------------------------------------------------
# /models, /status


def _add_model_routes(app: FastAPI, registry: ModelRegistry, limits: Limits) -> None:
    @app.get("/models", summary="Loaded and available models", tags=["models"])
    async def models():
        return {"loaded": [e.info() for e in registry.models.values()], "available": registry.available()}

    @app.post("/models/load", summary="Load a model (voice name or path)", tags=["models"],
              openapi_extra={"requestBody": {"content": {"application/json": {
                  "schema": LoadParams.model_json_schema()}}}})
    async def models_load(request: Request):
        params = validate(LoadParams, await request_fields(request, limits.max_body))
        entry = await registry.load(params.model, params.device, params.checkpoint, params.backend,
                                    language=params.language)
        return {"loaded": entry.info()}

    @app.post("/models/unload", summary="Unload a model", tags=["models"],
              openapi_extra={"requestBody": {"content": {"application/json": {
                  "schema": UnloadParams.model_json_schema()}}}})
    async def models_unload(request: Request):
        params = validate(UnloadParams, await request_fields(request, limits.max_body))
        if params.model is None and params.model_id is None:
            raise ApiError(422, "'model' is required", "pass model=<name> or model_id=<id>")
        entry = registry.unload(params.model, params.model_id)
        return {"unloaded": entry.name, "model_id": entry.model_id}


def _add_status_route(app: FastAPI, registry: ModelRegistry, limits: Limits, api_key_required: bool) -> None:
    started = time.time()

    @app.get("/status", summary="Device, memory, loaded models, queue length (and hiyoriUI's fields)",
             tags=["server"])
    async def status():
        torch = sys.modules.get("torch")
        return {
            **await system_status(),
            "device": registry.device,
            "torch": getattr(torch, "__version__", None),
            "threads": torch.get_num_threads() if torch is not None else None,
            "memory": _memory(),
            "models": [{"id": e.model_id, "name": e.name, "backend": e.backend, "queue": e.pending,
                        "served": e.served} for e in registry.models.values()],
            "queue_length": registry.queue_length(),
            "uptime_s": round(time.time() - started, 1),
            "limits": {"max_text_length": limits.max_text_length, "max_queue": limits.max_queue,
                       "max_models": limits.max_models},
            "api_key_required": api_key_required,
        }


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
