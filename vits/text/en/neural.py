"""Letter-to-sound for English words missing from the CMU dictionary, offline.

Runs the small GRU encoder-decoder whose weights ship inside the `g2p_en` package
(`checkpoint20.npz`) with numpy. `g2p_en` itself is never imported: its import asks nltk to download
tagger data, which fails without network. Homograph choice (`homographs.en`, a verb/non-verb pair per
word) uses a small context heuristic instead of nltk's POS tagger.
If the package is missing, words are spelled letter by letter from the CMU dictionary.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from vits.text.en.cmudict import spell

_GRAPHEMES = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
_PHONEMES = ["<pad>", "<unk>", "<s>", "</s>"] + (
    "AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1 AY2 B CH D DH EH0 EH1 EH2 ER0 ER1 "
    "ER2 EY0 EY1 EY2 F G HH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG OW0 OW1 OW2 OY0 OY1 OY2 P R S SH T TH UH0 "
    "UH1 UH2 UW UW0 UW1 UW2 V W Y Z ZH").split()
_LOCK = threading.Lock()

# words before a homograph that make it a verb / a noun or adjective
_VERB_BEFORE = set("to will would can could shall should may might must do does did don't doesn't didn't "
                   "won't can't cannot i we you they he she it please let's not never".split())
_NOUN_BEFORE = set("the a an this that these those my your his her our their its of in on for with by at "
                   "from new old good bad great first last no some any each every".split())
_PAST_BEFORE = set("have has had having was were been be is are am i've we've you've they've".split())


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def _weights() -> dict[str, np.ndarray] | None:
    folder = _package_dir()
    if folder is None or not (folder / "checkpoint20.npz").is_file():
        return None
    with np.load(folder / "checkpoint20.npz") as data:
        return {k: data[k].astype(np.float32) for k in data.files}


@lru_cache(maxsize=1)
def homographs() -> dict[str, tuple[list[str], list[str], str]]:
    """WORD -> (pronunciation for POS, other pronunciation, POS) from g2p_en's homographs.en."""
    folder = _package_dir()
    path = folder / "homographs.en" if folder else None
    out: dict[str, tuple[list[str], list[str], str]] = {}
    if path is None or not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or line.count("|") != 3:
            continue
        word, pron1, pron2, pos = line.strip().split("|")
        out[word.lower()] = (pron1.split(), pron2.split(), pos)
    return out


def available() -> bool:
    """True when the g2p_en weights are installed (else OOV words are spelled out)."""
    return _weights() is not None


def _gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    size = h.shape[-1]
    r = 1.0 / (1.0 + np.exp(-(gi[:, :size] + gh[:, :size])))
    z = 1.0 / (1.0 + np.exp(-(gi[:, size:2 * size] + gh[:, size:2 * size])))
    n = np.tanh(gi[:, 2 * size:] + r * gh[:, 2 * size:])
    return (1 - z) * n + z * h


@lru_cache(maxsize=8192)
def predict(word: str) -> tuple[str, ...]:
    """ARPAbet phones (with stress digits) for a lower-case word of letters a-z; () if none."""
    w = _weights()
    letters = [c for c in word.lower() if "a" <= c <= "z"]
    if not letters:
        return ()
    if w is None:
        return tuple(spell(letters))
    ids = [_GRAPHEMES.index(c) for c in letters] + [2]
    with _LOCK:
        h = np.zeros((1, w["enc_w_hh"].shape[1]), np.float32)
        for i in ids:
            h = _gru_step(w["enc_emb"][[i]], h, w["enc_w_ih"], w["enc_w_hh"], w["enc_b_ih"], w["enc_b_hh"])
        prev = 2  # <s>
        out: list[str] = []
        for _ in range(max(20, 2 * len(letters))):
            h = _gru_step(w["dec_emb"][[prev]], h, w["dec_w_ih"], w["dec_w_hh"], w["dec_b_ih"], w["dec_b_hh"])
            prev = int(np.argmax(h @ w["fc_w"].T + w["fc_b"]))
            if prev == 3:  # </s>
                break
            if prev > 3:
                out.append(_PHONEMES[prev])
    return tuple(out)


def homograph(word: str, previous: str | None) -> list[str] | None:
    """The pronunciation of a homograph in context (previous word), or None if `word` is not one."""
    entry = homographs().get(word.lower())
    if entry is None:
        return None
    pron1, pron2, pos = entry
    prev = (previous or "").lower()
    if word.lower() == "read":  # g2p_en's entry is keyed on past tense; decide tense from context
        return ["R", "EH1", "D"] if prev in _PAST_BEFORE else ["R", "IY1", "D"]
    if prev in _VERB_BEFORE:
        guess = "V"
    elif prev in _NOUN_BEFORE:
        guess = "N"
    else:
        guess = "N" if pos == "V" else "V"  # no evidence: the non-POS reading (usually the noun)
    return pron1 if guess.startswith(pos[:1]) else pron2
