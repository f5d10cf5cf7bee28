"""Style text: mix the BERT features of a second text into the main text's (spec 2.3 §6, §7.7).

Bert-VITS2's web UI calls it "style text" (Style-Bert-VITS2: "assist text"). Per phone column

    feat · (1 − w) + mean_over_tokens(style) · w

where `style` is `hidden_states[-3]` of the style text run through the BERT of the *segment's* language
(all its tokens, [CLS]/[SEP] included) and w the style weight (default `vits.defaults.SYNTHESIS.style_weight`,
0.7). Only the real features of a segment are mixed, never the noise of the "other language" slots, and
nothing else about synthesis changes. An empty style text, or weight 0, leaves the features as they are.

A BERT-features object that can read a style text has `style_vector(text, language) -> [hidden] float32`
(`vits.text.bert.BertFeatures` does); `styled(bert, text, weight)` wraps one so that its `features()` come
out mixed, computing the style vector once per language. This module never imports torch (the ONNX
runtime uses it too): torch tensors are handled through their own methods.
"""

from __future__ import annotations

import math

import numpy as np

from vits.errors import KoeError

__all__ = ["check_style_weight", "normalize_style_text", "mix_style", "style_vector", "styled", "StyledBert"]


def check_style_weight(weight) -> float:
    """`weight` as a float in [0, 1]; raises KoeError naming the value and the range otherwise."""
    try:
        value = float(weight)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(weight, bool) or not 0.0 <= value <= 1.0:
        raise KoeError(f"style weight must be a number from 0 to 1, got {weight!r}",
                       fix="pass a style weight between 0 (the main text only) and 1 (the style text's "
                           "features only); 0.7 is Bert-VITS2's default")
    return value


def normalize_style_text(text: str, language: str) -> str:
    """The style text as `language`'s frontend normalises text for BERT (digits spelled out, punctuation mapped,
    characters the language cannot read removed). When that leaves nothing (e.g. a Chinese style text for an
    English segment), the stripped raw text, which Bert-VITS2 gives its BERT unnormalised anyway.

    Raises KoeError for a language other than ZH/JP/EN.
    """
    lang = str(language).strip().upper().replace("JA", "JP")
    if lang == "ZH":
        from vits.text.zh.normalizer import normalize
    elif lang == "JP":
        from vits.text.ja.normalizer import normalize
    elif lang == "EN":
        from vits.text.en.normalizer import normalize
    else:
        raise KoeError(f"a style vector needs one language, got {language!r}", fix="use ZH, JP or EN")
    norm, _removed = normalize(text)
    return norm if norm.strip() else text.strip()


def _flat_vector(style_vec) -> np.ndarray:
    if hasattr(style_vec, "detach"):  # a torch tensor, handled without importing torch
        style_vec = style_vec.detach().cpu().numpy()
    return np.asarray(style_vec, dtype=np.float32).reshape(-1)


def mix_style(feat, style_vec, weight: float):
    """`feat · (1 − weight) + style_vec · weight` for every column (spec §7.7).

    Takes features [hidden, T] (torch tensor or numpy array), the style vector [hidden] (either kind) and the
    weight in [0, 1]. Returns the mixed features, the same kind, dtype and device as `feat`.
    Raises KoeError for a weight outside [0, 1] or a vector whose size is not the features' hidden size.
    """
    w = check_style_weight(weight)
    vec = _flat_vector(style_vec)
    if len(feat.shape) != 2 or vec.shape[0] != feat.shape[0]:
        raise KoeError(f"the style vector has {vec.shape[0]} values but the features have shape "
                       f"{list(feat.shape)}, expected [{vec.shape[0]}, T]",
                       fix="compute the style vector with the same BERT model as the features")
    if hasattr(feat, "detach"):  # torch, on the features' own device and dtype
        column = feat.new_tensor(vec).reshape(-1, 1)
        return feat * (1.0 - w) + column * w
    arr = np.asarray(feat)
    return arr * arr.dtype.type(1.0 - w) + vec.astype(arr.dtype)[:, None] * arr.dtype.type(w)


def style_vector(bert, text: str, language: str) -> np.ndarray:
    """The [hidden] float32 style vector of `text` for `language` from a BERT-features object.

    Raises KoeError when the object has no `style_vector` (it cannot read a style text) or gives a
    vector that is not one-dimensional and finite.
    """
    reader = getattr(bert, "style_vector", None)
    if reader is None:
        raise KoeError(f"{type(bert).__name__} cannot read a style text (it has no style_vector method)",
                       fix="use vits.text.bert.BertFeatures (or another BERT-features class with "
                           "style_vector(text, language)), or leave the style text empty")
    vec = _flat_vector(reader(text, language))
    if vec.size == 0 or not np.isfinite(vec).all():
        raise KoeError(f"the {language} style vector of {text[:40]!r} is empty or not finite",
                       fix="check the BERT model files (python -m pipeline.download bert)")
    return vec


class StyledBert:
    """A BERT-features object whose `features()` are mixed with a style text (see the module docstring).

    The style vector is computed once per language, on the first segment of that language. Make one per
    request (`styled`): the cache belongs to this style text.
    """

    def __init__(self, bert, text: str, weight: float):
        self.bert = bert
        self.text = text
        self.weight = check_style_weight(weight)
        self.vectors: dict[str, np.ndarray] = {}

    def vector(self, language: str) -> np.ndarray:
        """The style vector for `language` (cached)."""
        if language not in self.vectors:
            self.vectors[language] = style_vector(self.bert, self.text, language)
        return self.vectors[language]

    def features(self, cleaned, add_blank: bool = True):
        """The wrapped object's features of one segment, mixed with the style vector of its language."""
        feat = self.bert.features(cleaned, add_blank=add_blank)
        return mix_style(feat, self.vector(cleaned.language), self.weight)

    def features_batch(self, cleaned: list, add_blank: bool = True) -> list:
        """`features` for many segments (batched by the wrapped object)."""
        feats = self.bert.features_batch(cleaned, add_blank=add_blank)
        return [mix_style(f, self.vector(c.language), self.weight) for c, f in zip(cleaned, feats)]

    def style_vector(self, text: str, language: str):
        return self.bert.style_vector(text, language)


def styled(bert, text: str | None, weight: float):
    """`bert` mixed with the style text `text` at `weight` (a `StyledBert`), or `bert` itself when there is
    nothing to mix: no text, blank text, or weight 0 (so those give exactly the audio without a style).

    Raises KoeError for a weight outside [0, 1] (checked even when the text is empty) or a non-string text.
    """
    w = check_style_weight(weight)
    if text is not None and not isinstance(text, str):
        raise KoeError(f"the style text must be a string, got {type(text).__name__}", fix="pass the style text as str")
    if bert is None or not text or not text.strip() or w == 0.0:
        return bert
    return StyledBert(bert, text, w)
