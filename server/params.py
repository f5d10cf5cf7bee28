"""What a request may ask for: `/voice` and `/models/...` parameters, their defaults and limits, and how a
query string, JSON, form or plain-text body becomes one validated set of parameters.

Defaults come from `vits.defaults.SYNTHESIS`, except where the API deliberately keeps hiyoriUI's own
defaults so a bot moved over from Bert-VITS2's server hears what it heard there: sdp_ratio 0.2
(`vits.defaults.HIYORI_SDP_RATIO`, the library's is 0.5) and noise 0.2 (the library's is 0.6).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from server.audio import FORMATS
from server.errors import ApiError
from vits.defaults import HIYORI_NOISE, HIYORI_SDP_RATIO, SYNTHESIS
from vits.lists import normalize_language

LANGUAGES = ("ZH", "JP", "EN", "KO", "AUTO", "MIX")
DEFAULT_MAX_TEXT = 2000
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_MODELS = 4
MAX_REFERENCE_AUDIO = 32 << 20  # bytes of a multipart body with a reference_audio clip
PROMPT_MODES = {"text": "text", "text prompt": "text", "audio": "audio", "audio prompt": "audio"}
BERT_PRECISIONS = ("fp32", "int8")  # `bert=`: which BERT graphs an ONNX voice reads text with (int8: --bert --int8)
MAX_SEED = 2**63 - 1  # torch and numpy both take it, and sentence i of a stream uses seed + i


def _language_value(value: str | None) -> str | None:
    if value is None:
        return None
    spelled = value.strip().upper()
    lang = normalize_language(spelled) or spelled
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language '{value}'; use one of {', '.join(LANGUAGES)}")
    return lang


class VoiceParams(BaseModel):
    """Parameters of `/voice`. Names and defaults follow Bert-VITS2's hiyoriUI `/voice` (docs/api.md)."""

    model_config = ConfigDict(extra="ignore")

    text: str
    model: str | None = None
    model_id: int | None = None
    speaker_name: str | None = None
    speaker_id: int | None = None
    speaker: str | None = None
    language: str | None = None  # None: the model's default language (hiyoriUI), see LoadedModel.language
    sdp_ratio: float = HIYORI_SDP_RATIO
    noise: float = HIYORI_NOISE
    noisew: float = SYNTHESIS.noise_scale_w
    length: float = SYNTHESIS.length_scale
    format: str = "wav"
    stream: bool = False
    seed: int | None = None
    pause: float = SYNTHESIS.pause
    auto_split: bool = True
    auto_translate: bool = False
    # Bert-VITS2 2.2 (CLAP) voices: the emotion text prompt, or a reference clip (multipart upload) when
    # prompt_mode is "audio" or a clip is sent; 2.3 voices have no emotion input: accepted and ignored.
    emotion: int | str | None = None
    prompt_mode: str | None = None
    reference_audio: bytes | None = Field(default=None, exclude=True)
    # hiyoriUI's style text: its BERT features mixed into the text's at style_weight (spec §7.7); both voices
    style_text: str | None = None
    style_weight: float = SYNTHESIS.style_weight
    # Koe's own: the BERT precision of an ONNX voice (its int8 graphs need `export_onnx --bert --int8`)
    bert: str = BERT_PRECISIONS[0]

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return _language_value(value)

    @field_validator("bert", mode="before")
    @classmethod
    def _bert(cls, value: Any) -> str:
        spelled = str(value).strip().lower() if value is not None and str(value).strip() else BERT_PRECISIONS[0]
        if spelled not in BERT_PRECISIONS:
            raise ValueError(f"unknown BERT precision '{value}'; use fp32 (the default) or int8 (an ONNX voice "
                             "exported with python -m pipeline.export_onnx Data/<voice> --bert --int8)")
        return spelled

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= MAX_SEED:
            raise ValueError(f"must be between 0 and {MAX_SEED} (leave it out for a random seed), got {value}")
        return value

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

    @field_validator("prompt_mode")
    @classmethod
    def _prompt_mode(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        mode = PROMPT_MODES.get(value.strip().lower())
        if mode is None:
            raise ValueError(f"unknown prompt_mode '{value}'; use 'text' (the emotion prompt) or 'audio' "
                             "(the reference_audio clip)")
        return mode

    def ignored(self, emotion_voice: bool = False) -> list[str]:
        """hiyoriUI parameters this request set that the voice has no use for (named in X-Ignored-Parameters):
        the emotion ones unless it is a 2.2 (CLAP) voice."""
        names = () if emotion_voice else ("emotion", "prompt_mode", "reference_audio")
        return [name for name in names if getattr(self, name) not in (None, "", b"")]


class LoadParams(BaseModel):
    """Body of `POST /models/load`; `language` is the model's default for requests that name none."""

    model_config = ConfigDict(extra="ignore")

    model: str
    device: str | None = None
    checkpoint: str | None = None
    backend: str | None = None
    language: str | None = None

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return _language_value(value)


class AddParams(BaseModel):
    """Query of hiyoriUI's `GET /models/add`: its names; `device` defaults to the server's (hiyoriUI: cuda)."""

    model_config = ConfigDict(extra="ignore")

    model_path: str
    config_path: str | None = None
    device: str | None = None
    language: str = SYNTHESIS.language

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return _language_value(value)


class UnloadParams(BaseModel):
    """Body of `POST /models/unload`: a model name/path or a hiyoriUI `model_id`."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    model_id: int | None = None


def validation_message(errors: list[dict]) -> str:
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


def validation_error(errors: list[dict]) -> ApiError:
    """The 422 answer for pydantic/FastAPI validation errors."""
    return ApiError(422, validation_message(errors), "check the parameter list in /docs",
                    errors=[{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors])


def validate(model: type[BaseModel], raw: dict) -> Any:
    """`raw` fields as a `model`; raises ApiError(422) naming each bad parameter."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False, include_context=False, include_input=False)) from None


def check_text_length(text: Any, max_text_length: int) -> None:
    """Raises ApiError(413) for text over the limit (checked before validation, so huge text always gets 413)."""
    if isinstance(text, str) and len(text) > max_text_length:
        raise ApiError(413, f"text too long: {len(text)} characters, the limit is {max_text_length}",
                       "split the text into several requests, or start the server with a larger "
                       "--max-text-length", limit=max_text_length, length=len(text))


def _too_large(size: int, max_body: int) -> ApiError:
    return ApiError(413, f"request body too large ({size} bytes, limit {max_body})",
                    "send shorter text, split it into several requests")


async def _limited_body(request: Request, max_body: int) -> bytes:
    body = await request.body()
    if len(body) > max_body:
        raise _too_large(len(body), max_body)
    return body


async def request_fields(request: Request, max_body: int) -> dict:
    """Query parameters merged with a JSON, form or plain-text body (the body wins).

    Raises ApiError(413) for a body over `max_body` bytes, ApiError(400) for malformed JSON.
    """
    fields: dict[str, Any] = dict(request.query_params)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = max(max_body, MAX_REFERENCE_AUDIO) if ctype == "multipart/form-data" else max_body  # a clip upload
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise _too_large(int(length), limit)
    if ctype == "application/json":
        body = await _limited_body(request, max_body)
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
        fields.update({k: v for k, v in form.items() if isinstance(v, str)})
        upload = form.get("reference_audio")
        if upload is not None and not isinstance(upload, str):  # hiyoriUI's audio prompt of 2.2 voices
            fields["reference_audio"] = await upload.read()
        # other uploaded files have no meaning here and are skipped
    elif ctype.startswith("text/"):
        body = await _limited_body(request, max_body)
        if body:
            fields["text"] = body.decode("utf-8", errors="replace")
    return fields
