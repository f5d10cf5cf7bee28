"""Which BERT graphs an ONNX voice reads text with (`/voice?bert=`, the Synthesize tab's BERT precision).

fp32 are the graphs `OnnxVoice.load` opens; `export_onnx --bert --int8` writes an int8 copy beside them, with
its measured feature error in `<export>/bert/koe_bert.json`. A loaded voice opens the int8 copy on its first
int8 request and keeps it (`LoadedModel.bert_int8`); both kinds load their graphs per language on first use,
so a voice only ever asked for one precision holds one copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.errors import ApiError
from vits.errors import KoeError
from vits.voice_folder import ONNX_BERT, ONNX_BERT_METADATA

EXPORT_INT8 = "python -m pipeline.export_onnx Data/<voice> --bert --int8"


def int8_bert_error(export: Path) -> dict[str, dict] | None:
    """The int8 feature error per language recorded in `<export>/bert/koe_bert.json` (max_abs, max_abs_relative,
    mean_cosine, min_cosine against the fp32 graphs), or None when the export lacks int8 graphs for a language it
    holds (or has no BERT graphs). Reads only the JSON file."""
    folder = Path(export) / ONNX_BERT
    if not (folder / ONNX_BERT_METADATA).is_file():
        return None
    from vits.text.bert_onnx import OnnxBertFeatures

    try:
        int8 = OnnxBertFeatures(folder, int8=True)  # reads koe_bert.json; no graph is opened here
    except KoeError:
        return None
    if not int8.languages:
        return None
    return {lang: dict(entry.get("int8_vs_fp32") or {}) for lang, entry in int8.languages.items()}


def int8_features(entry: Any, own: Any):
    """The int8 `OnnxBertFeatures` of loaded voice `entry` (a `LoadedModel`) whose fp32 ones are `own`, created on
    the first call and kept with the entry. Raises ApiError(422) naming the fix for a torch voice, an export
    without BERT graphs, or one without int8 graphs."""
    if entry.backend != "onnx":
        raise ApiError(422, f"model '{entry.name}' runs on torch: int8 BERT is read only by ONNX exports",
                       f"leave bert out (fp32), or export the voice ({EXPORT_INT8}) and use model={entry.name}@onnx")
    if own is None:
        raise ApiError(422, f"the ONNX export '{entry.name}' has no BERT graphs, so it has no int8 BERT",
                       f"leave bert out (fp32: the server's BERT models), or export them: {EXPORT_INT8}",
                       where=str(Path(entry.path) / ONNX_BERT))
    with entry.bert_lock:  # two first int8 requests open the graphs once
        if entry.bert_int8 is None:
            from vits.text.bert_onnx import OnnxBertFeatures

            try:
                entry.bert_int8 = OnnxBertFeatures(own.folder, int8=True, providers=own.providers,
                                                   threads=own.threads, max_batch_tokens=own.max_batch_tokens)
            except KoeError as exc:
                raise ApiError(422, f"the ONNX export '{entry.name}' has no int8 BERT graphs ({exc.problem})",
                               f"leave bert out (fp32), or export them again: {EXPORT_INT8}", where=exc.where) from None
        return entry.bert_int8
