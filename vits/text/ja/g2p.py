"""Japanese g2p with pyopenjtalk-plus: normalised text -> (phones, tones, word2ph) (spec §7.5).

Words and katakana readings come from `pyopenjtalk.run_frontend`; pitch-accent tones (0/1) from the
A1/A2 fields of its full-context labels; one BERT token per character of each word
(deberta-v2-large-japanese-char-wwm is a character tokenizer), word2ph by `distribute_phone`.
"""

from __future__ import annotations

import re
import threading

from vits.symbols import PUNCTUATION
from vits.text.common import distribute_phone
from vits.text.ja.kana import kana_to_phones, mora_count

_LOCK = threading.Lock()  # the OpenJTalk handle is shared and not thread-safe
_KANA_OR_KANJI = re.compile(r"[\u3005\u3040-\u30ff\u4e00-\u9fff\u3400-\u4dbf]")
# label phonemes spelled differently from our kana table
_LABEL_FOLD = {"cl": "q"}


def _frontend(text: str) -> list[dict]:
    import pyopenjtalk

    with _LOCK:
        return pyopenjtalk.run_frontend(text)


def _labels(nodes: list[dict]) -> list[str]:
    import pyopenjtalk

    with _LOCK:
        return pyopenjtalk.make_label(nodes)


def _accents(nodes: list[dict]) -> list[tuple[str, int]]:
    """(phoneme, mark) per spoken phoneme: +1 where the pitch rises after it, -1 where it falls."""
    fixed, prev_spoken = [], False
    for node in nodes:  # OpenJTalk warns on stderr about a breath group starting with ー: drop that mark
        pron = node.get("pron", "")
        if not prev_spoken and pron.startswith("ー"):
            node = dict(node, pron=pron.lstrip("ー"), mora_size=max(0, node.get("mora_size", 0) - 1))
        prev_spoken = bool(node.get("pron")) and _KANA_OR_KANJI.match(node["pron"][0]) is not None
        fixed.append(node)
    labels = _labels(fixed)
    out: list[tuple[str, int]] = []
    for n, label in enumerate(labels):
        phoneme = re.search(r"-([^+]*)\+", label).group(1)
        if phoneme in ("sil", "pau"):
            continue
        a1 = re.search(r"/A:(-?[0-9]+)\+", label)
        a2 = re.search(r"\+(\d+)\+", label)
        a1 = int(a1.group(1)) if a1 else 0
        a2 = int(a2.group(1)) if a2 else -1
        nxt = labels[n + 1] if n + 1 < len(labels) else ""
        nxt_phoneme = re.search(r"-([^+]*)\+", nxt).group(1) if nxt else "sil"
        if nxt_phoneme in ("sil", "pau"):
            a2_next = -1
        else:
            m = re.search(r"\+(\d+)\+", nxt)
            a2_next = int(m.group(1)) if m else -1
        if a1 == 0 and a2_next == a2 + 1:
            mark = -1  # accent nucleus: pitch falls after this mora
        elif a2 == 1 and a2_next == 2:
            mark = 1  # rise after the first mora
        else:
            mark = 0
        phoneme = phoneme.lower()
        out.append((_LABEL_FOLD.get(phoneme, phoneme), mark))
    return out


def _align_tones(words_phones: list[list[str]], accents: list[tuple[str, int]]) -> list[int]:
    """0/1 tone per phone: running sum of the marks within each word, shifted one phone right."""
    accents = list(accents)
    tones: list[int] = []
    for phones in words_phones:
        temp = [0] * len(phones)
        for i, p in enumerate(phones):
            if accents and p == accents[0][0]:
                temp[i] = accents[0][1] + (temp[i - 1] if i > 0 else 0)
                accents.pop(0)
        temp = ([0] + temp)[:-1] if temp else temp
        if -1 in temp:
            temp = [t + 1 for t in temp]
        tones += [min(max(t, 0), 1) for t in temp]
    return tones


def _punct(text: str) -> str:
    from vits.text.ja.normalizer import map_punctuation

    return map_punctuation(text)


def _words(nodes: list[dict]) -> list[tuple[str, str]]:
    """(surface word, katakana reading) pairs; punctuation words read as themselves."""
    out: list[tuple[str, str]] = []
    for node in nodes:
        word = _punct(node["string"])
        reading = node["pron"].replace("’", "")
        if not word:
            continue
        if reading and not _KANA_OR_KANJI.match(reading[0]) and reading[0] != "ー":
            # punctuation (OpenJTalk reads every mark as 、): one word per character
            for char in word:
                out.append((char, char if char in PUNCTUATION else ","))
            continue
        if not reading:
            if word in ("っ", "ッ"):
                reading = "ッ"
            elif all(c in PUNCTUATION for c in word):
                out.extend((c, c) for c in word)
                continue
            else:
                reading = word
        out.append((word, reading))
    return out


def apply_user_words(nodes: list[dict], user_words: dict[str, tuple[str, int | None]]) -> list[dict]:
    """Replace runs of OpenJTalk words that spell a user-dictionary word by one word with its reading.

    user_words maps surface -> (katakana reading, accent nucleus or None = keep OpenJTalk's).
    Only whole-word runs are replaced, so the accent phrase structure stays valid.
    """
    if not user_words:
        return nodes
    out: list[dict] = []
    i = 0
    while i < len(nodes):
        replaced = False
        for j in range(len(nodes), i, -1):
            surface = "".join(n["string"] for n in nodes[i:j])
            if surface in user_words:
                reading, accent = user_words[surface]
                node = dict(nodes[i])
                node.update(string=surface, orig=surface, read=reading, pron=reading,
                            mora_size=mora_count(reading), pos="名詞", pos_group1="固有名詞",
                            is_reading_protected=True)
                if accent is not None:
                    node["acc"] = accent
                out.append(node)
                i = j
                replaced = True
                break
        if not replaced:
            out.append(nodes[i])
            i += 1
    return out


def g2p(norm_text: str, user_words: dict[str, tuple[str, int | None]] | None = None):
    """Phones, raw tones (0/1) and word2ph of normalised Japanese text.

    Args:
        norm_text: output of `ja.normalizer.normalize`.
        user_words: surface -> (katakana reading, accent nucleus or None) from the user dictionary.
    Returns (phones, tones, word2ph, unknown_chars, bert_text): word2ph has one entry per character of
    `bert_text` (the concatenated words, normally equal to norm_text) plus two boundaries.
    """
    nodes = _frontend(norm_text) if norm_text else []
    if user_words:
        nodes = apply_user_words(nodes, user_words)
    words = _words(nodes)
    unknown: list[str] = []
    words_phones: list[list[str]] = []
    for word, reading in words:
        if word in PUNCTUATION or reading in PUNCTUATION:
            words_phones.append([reading if reading in PUNCTUATION else ","])
            continue
        phones, bad = kana_to_phones(reading)
        unknown += bad
        words_phones.append(phones)
    # a word starting with ー continues the previous word's vowel
    for k, phones in enumerate(words_phones):
        for i, p in enumerate(phones):
            if p == "ー":
                prev = phones[i - 1] if i else (words_phones[k - 1][-1] if k and words_phones[k - 1] else "a")
                phones[i] = prev[-1] if prev[-1] in "aiueo" else "a"
    spoken = any(p not in PUNCTUATION for ps in words_phones for p in ps)
    accents = _accents(nodes) if spoken else []  # OpenJTalk prints a C warning for label-less input
    tones = _align_tones(words_phones, accents)
    word2ph: list[int] = []
    for (word, _), phones in zip(words, words_phones):
        word2ph += distribute_phone(len(phones), len(word))
    phones = ["_"] + [p for ps in words_phones for p in ps] + ["_"]
    bert_text = "".join(w for w, _ in words)
    return phones, [0] + tones + [0], [1] + word2ph + [1], unknown, bert_text
