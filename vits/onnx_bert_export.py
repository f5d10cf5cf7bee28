"""Export the BERT models a voice reads to ONNX, so that text -> audio runs without torch (spec §7.7).

Per language one graph `input_ids, attention_mask [B, T] int64 -> hidden [B, T, hidden] float32`: the output
of the layer `BertFeatures` reads (`hidden_states[-3]`, layer 22 of 24; the layers after it are dropped),
dynamic in B and T. Beside it `tokenizer.json` (the `tokenizers` package's format), so the runtime
(`vits.text.bert_onnx.OnnxBertFeatures`) tokenises with neither torch nor transformers:

    <onnx>/bert/<LANG>/bert.onnx        fp32
    <onnx>/bert/<LANG>/bert.int8.onnx   optional: onnxruntime dynamic int8 quantisation of the weights
    <onnx>/bert/<LANG>/tokenizer.json
    <onnx>/bert/koe_bert.json           per language: files, special ids, sizes and the measured errors

The export checks fp32 onnxruntime against torch, and measures the int8 copy's feature error against fp32
(max abs, mean and lowest cosine per token) on seeded random token sequences; both go into koe_bert.json.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vits.errors import KoeError
from vits.fileio import atomic_path, write_text_atomic
from vits.voice_folder import ONNX_BERT_METADATA

FORMAT_VERSION = 1
OPSET = 17
GRAPH_FP32 = "bert.onnx"
GRAPH_INT8 = "bert.int8.onnx"
TOKENIZER = "tokenizer.json"
VERIFY_LIMIT = 1e-3  # max |onnxruntime - torch| of the fp32 features, relative to max(1, max |features|)
SAMPLE_LENGTHS = (8, 24, 64, 128)  # token sequences the fp32 and int8 graphs are measured on


class _Hidden(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _tokenizer_spec(tokenizer) -> tuple[object, dict]:
    """(a `tokenizers.Tokenizer` equal to `tokenizer` for our use, {"mode", "nfkc"}). Raises KoeError."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer is a `tokenizers.Tokenizer` already
        backend = Tokenizer.from_str(backend.to_str())
        backend.no_padding()
        backend.no_truncation()
        return backend, {"mode": "tokenizer", "nfkc": False}
    word = getattr(tokenizer, "word_tokenizer", None)
    sub = getattr(tokenizer, "subword_tokenizer", None)
    if type(sub).__name__ == "CharacterTokenizer" and type(word).__name__ == "BasicTokenizer":
        # BertJapaneseTokenizer (the JP model): BERT's basic tokenizer, then one token per (NFKC) character
        tok = Tokenizer(models.WordLevel(vocab=dict(tokenizer.vocab), unk_token=tokenizer.unk_token))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=bool(word.tokenize_chinese_chars),
            strip_accents=word.strip_accents, lowercase=bool(word.do_lower_case))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        return tok, {"mode": "character", "nfkc": bool(getattr(sub, "normalize_text", True))}
    raise KoeError(f"cannot export this tokenizer ({type(tokenizer).__name__}) for onnxruntime",
                   fix="use the models python -m pipeline.download bert fetches (fast tokenizers, or the "
                       "character-level BertJapaneseTokenizer)")


def _samples(vocab_size: int, max_tokens: int, cls_id: int, sep_id: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1234)
    return [np.array([[cls_id, *rng.integers(5, vocab_size, min(n, max_tokens) - 2), sep_id]], np.int64)
            for n in SAMPLE_LENGTHS]


def _measure(session, model, samples) -> dict:
    """Max abs / cosine per token of a session's features against `model`'s (torch or another session)."""
    worst, cosines = 0.0, []
    scale = 1.0
    for ids in samples:
        mask = np.ones_like(ids)
        if isinstance(model, nn.Module):
            with torch.inference_mode():
                ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
        else:
            ref = model.run(["hidden"], {"input_ids": ids, "attention_mask": mask})[0]
        got = session.run(["hidden"], {"input_ids": ids, "attention_mask": mask})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
        dots = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1) + 1e-12)
        cosines.append(dots.reshape(-1))
    cos = np.concatenate(cosines)
    return {"max_abs": worst, "max_abs_relative": worst / scale, "mean_cosine": float(cos.mean()),
            "min_cosine": float(cos.min())}


def export_bert(bert, language: str, out_dir: str | os.PathLike, *, int8: bool = False, opset: int = OPSET) -> dict:
    """Export `language`'s model of a `vits.text.bert.BertFeatures` into `out_dir` (graphs + tokenizer.json).

    Returns the language's metadata entry (files, special ids, sizes, fp32 check, int8 error when `int8`).
    Raises KoeError when the model folder is missing, the tokenizer cannot be exported, the export fails or
    the fp32 graph differs from torch by more than VERIFY_LIMIT.
    """
    import onnxruntime as ort

    lang = language.upper()
    loaded = bert._get(lang)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, tok_meta = _tokenizer_spec(loaded.tokenizer)
    with atomic_path(out / TOKENIZER) as tmp:
        tokenizer.save(str(tmp))
    tok = loaded.tokenizer
    wrapper = _Hidden(loaded.model).eval()
    ids = torch.tensor([[tok.cls_token_id, 5, 6, 7, 8, 9, tok.sep_token_id]] * 2)
    try:
        with atomic_path(out / GRAPH_FP32) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notices
            torch.onnx.export(wrapper, (ids, torch.ones_like(ids)), str(tmp), dynamo=False,
                              input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                              dynamic_axes={name: {0: "batch", 1: "tokens"}
                                            for name in ("input_ids", "attention_mask", "hidden")},
                              opset_version=opset, do_constant_folding=True)
    except Exception as exc:  # the exporter raises many types; say which model failed
        raise KoeError(f"ONNX export of the {lang} BERT failed: {type(exc).__name__}: {exc}",
                       where=str(out / GRAPH_FP32), fix="report this with the model's config.json") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    fp32 = ort.InferenceSession(str(out / GRAPH_FP32), options, providers=["CPUExecutionProvider"])
    samples = _samples(int(loaded.model.config.vocab_size), loaded.max_tokens, tok.cls_token_id, tok.sep_token_id)
    check = _measure(fp32, wrapper, samples)
    if not check["max_abs_relative"] < VERIFY_LIMIT:
        raise KoeError(f"the {lang} BERT graph differs from torch by {check['max_abs']:.3g} "
                       f"(limit {VERIFY_LIMIT:g} of the feature scale)", where=str(out / GRAPH_FP32),
                       fix="report this with the model's config.json")
    entry = {
        "folder": lang, "graphs": {"fp32": GRAPH_FP32}, "tokenizer": TOKENIZER, **tok_meta,
        "hidden_size": int(loaded.hidden_size), "max_tokens": int(loaded.max_tokens), "layer": bert.layer,
        "cls_id": int(tok.cls_token_id), "sep_id": int(tok.sep_token_id), "unk_id": int(tok.unk_token_id),
        "pad_id": int(tok.pad_token_id or 0), "source": str(bert.model_dirs.get(lang, "")),
        "fp32_vs_torch": check,
    }
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        muted = logging.root.manager.disable
        logging.disable(logging.WARNING)  # the quantiser logs a "run pre-processing first" hint to the root logger
        try:
            with atomic_path(out / GRAPH_INT8) as tmp:
                quantize_dynamic(str(out / GRAPH_FP32), str(tmp), weight_type=QuantType.QInt8)
        finally:
            logging.disable(muted)
        q = ort.InferenceSession(str(out / GRAPH_INT8), options, providers=["CPUExecutionProvider"])
        entry["graphs"]["int8"] = GRAPH_INT8
        entry["int8_vs_fp32"] = _measure(q, fp32, samples)
    return entry


def export_berts(bert, languages, out_dir: str | os.PathLike, *, int8: bool = False, opset: int = OPSET,
                 progress=None) -> tuple[Path, dict]:
    """Export several languages into `out_dir/<LANG>/` and write `koe_bert.json` last (its presence: complete).

    `progress(step, **fields)` is called after each language. Returns (metadata path, metadata).
    Raises KoeError as `export_bert`.
    """
    out = Path(out_dir)
    meta = {"format": "koe-onnx-bert", "format_version": FORMAT_VERSION, "opset": opset, "languages": {}}
    for k, lang in enumerate(languages, 1):
        lang = lang.upper()
        meta["languages"][lang] = export_bert(bert, lang, out / lang, int8=int8, opset=opset)
        if progress is not None:
            progress(k, item=lang, message=describe(lang, meta["languages"][lang]))
    path = out / ONNX_BERT_METADATA
    write_text_atomic(path, json.dumps(meta, ensure_ascii=False, indent=2) + "\n")
    return path, meta


def describe(lang: str, entry: dict) -> str:
    """One line on a language's export: the fp32 check and, when there, the int8 feature error."""
    line = f"{lang} BERT: fp32 vs torch max abs {entry['fp32_vs_torch']['max_abs']:.2e}"
    if "int8_vs_fp32" in entry:
        err = entry["int8_vs_fp32"]
        line += (f"; int8 vs fp32 max abs {err['max_abs']:.3g} ({err['max_abs_relative']:.2%} of the feature "
                 f"scale), mean cosine {err['mean_cosine']:.5f}, lowest {err['min_cosine']:.5f}")
    return line
