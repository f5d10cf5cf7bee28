"""Chinese g2p: normalised text -> (phones, tones, word2ph) with the opencpop-strict table (spec §7.5).

Every Chinese character gives exactly two phones (initial, final) with the syllable's tone (1-5, after
sandhi); every punctuation character gives itself with tone 0. word2ph has one entry per character plus
the [CLS]/[SEP] boundaries, matching the one-token-per-character Chinese BERT tokenizer.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

from vits.symbols import PUNCTUATION
from vits.text.zh import g2pw
from vits.text.zh.opencpop import PINYIN_TO_PHONES, split_pinyin  # noqa: F401 (split_pinyin: public here too)
from vits.text.zh.polyphones import apply_readings, fix_number_yi, fix_polyphones
from vits.text.zh.tone_sandhi import modified_tone, pre_merge

_LOCK = threading.Lock()
_SENTENCE_END = re.compile(r"(?<=[{}])\s*".format(re.escape("".join(PUNCTUATION))))

# Syllables pypinyin can give that the table lacks (interjections), read as their nearest syllable.
_SYLLABLE_FALLBACK = {"n": "en", "ng": "eng", "m": "mu", "hm": "hen", "hng": "heng", "ê": "ei", "": "en"}


@lru_cache(maxsize=1)
def _posseg():
    import jieba
    import jieba.posseg as psg

    jieba.setLogLevel(60)  # jieba logs its dictionary load to stderr; the library stays quiet
    with _LOCK:
        jieba.initialize()
    return psg


def is_han(char: str) -> bool:
    """True for the CJK unified ideographs the Chinese frontend reads (U+4E00-U+9FA5)."""
    return "\u4e00" <= char <= "\u9fa5"


@lru_cache(maxsize=65536)
def _word_pinyin(word: str) -> tuple[tuple[str, str], ...]:
    """(initial, TONE3 final) per character of `word`; punctuation maps to (char, char)."""
    from pypinyin import Style, lazy_pinyin

    out: list[tuple[str, str]] = []
    for run in re.findall(r"[\u4e00-\u9fa5]+|.", word):
        if not is_han(run[0]):
            out.extend((c, c) for c in run)
            continue
        initials = lazy_pinyin(run, neutral_tone_with_five=True, style=Style.INITIALS)
        finals = lazy_pinyin(run, neutral_tone_with_five=True, style=Style.FINALS_TONE3)
        if len(initials) != len(run) or len(finals) != len(run):  # never seen; keep one pair per char
            initials = [lazy_pinyin(c, style=Style.INITIALS)[0] for c in run]
            finals = [lazy_pinyin(c, neutral_tone_with_five=True, style=Style.FINALS_TONE3)[0] for c in run]
        out.extend(zip(initials, finals))
    return tuple(out)


def syllable_phones(initial: str, final_without_tone: str) -> tuple[str, str] | None:
    """The two phones of pinyin initial+final (pypinyin strict spelling), or None if unknown."""
    if initial:
        final = {"uei": "ui", "iou": "iu", "uen": "un"}.get(final_without_tone, final_without_tone)
        pinyin = initial + final
    else:
        pinyin = final_without_tone
        rewritten = {"ing": "ying", "i": "yi", "in": "yin", "u": "wu"}.get(pinyin)
        if rewritten:
            pinyin = rewritten
        elif pinyin[:1] == "v":
            pinyin = "yu" + pinyin[1:]
        elif pinyin[:1] == "i":
            pinyin = "y" + pinyin[1:]
        elif pinyin[:1] == "u":
            pinyin = "w" + pinyin[1:]
    phones = PINYIN_TO_PHONES.get(pinyin)
    if phones is None and pinyin in _SYLLABLE_FALLBACK:
        phones = PINYIN_TO_PHONES.get(_SYLLABLE_FALLBACK[pinyin])
    return phones


def _sentence_g2p(sentence: str, forced: dict[str, list[tuple[str, str]]] | None, unknown: list[str]):
    phones: list[str] = []
    tones: list[int] = []
    word2ph: list[int] = []
    psg = _posseg()
    pieces = _split_forced(sentence, forced) if forced else [(sentence, None)]
    for text, forced_syllables in pieces:
        if forced_syllables is not None:  # user dictionary entry: explicit syllables, no sandhi
            for (initial, final), char in zip(forced_syllables, text):
                _emit(char, initial, final, phones, tones, word2ph, unknown)
            continue
        with _LOCK:
            seg = [(w.word, w.flag) for w in psg.lcut(text)]
        seg = pre_merge(seg, lambda w: [f for _, f in _word_pinyin(w)])
        words = [[word, pos, list(_word_pinyin(word))] for word, pos in seg]
        model = g2pw.current_model()
        if model is not None:  # the polyphone model first; our phrases and rules override it
            apply_readings(words, model.readings("".join(w for w, _, _ in words)))
        fix_polyphones(words)
        chars, initials, finals = [], [], []
        for word, pos, pairs in words:
            chars += word
            initials += [initial for initial, _ in pairs]
            finals += modified_tone(word, pos, [final for _, final in pairs])
        fix_number_yi(chars, finals)
        for char, initial, final in zip(chars, initials, finals):
            _emit(char, initial, final, phones, tones, word2ph, unknown)
    return phones, tones, word2ph


def _emit(char, initial, final, phones, tones, word2ph, unknown) -> None:
    if not is_han(char):
        phones.append(char if char in PUNCTUATION else "UNK")
        tones.append(0)
        word2ph.append(1)
        return
    tone = final[-1] if final and final[-1] in "12345" else "5"
    body = final[:-1] if final and final[-1] in "12345" else final
    pair = syllable_phones(initial, body)
    if pair is None:
        unknown.append(char)
        pair = ("UNK", "UNK")
    phones.extend(pair)
    tones.extend([int(tone)] * 2)
    word2ph.append(2)


def _split_forced(sentence: str, forced: dict[str, list[tuple[str, str]]]):
    """Cut `sentence` into [(text, None | syllables)] at user-dictionary words (longest first)."""
    words = sorted(forced, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(w) for w in words))
    out, pos = [], 0
    for m in pattern.finditer(sentence):
        if m.start() > pos:
            out.append((sentence[pos:m.start()], None))
        out.append((m.group(), forced[m.group()]))
        pos = m.end()
    if pos < len(sentence):
        out.append((sentence[pos:], None))
    return out


def g2p(norm_text: str, forced: dict[str, list[tuple[str, str]]] | None = None):
    """Phones, raw tones and word2ph of normalised Chinese text (spec §7.5).

    Args:
        norm_text: output of `normalize` (Chinese characters and the 7 punctuation marks only).
        forced: user-dictionary words -> [(initial, TONE3 final)] per character, applied before jieba.
    Returns (phones, tones, word2ph, unknown_chars): phones and tones start and end with the boundary
    "_"/0, word2ph has len(norm_text) + 2 entries and sums to len(phones). Characters without a known
    syllable are read as "UNK UNK" and listed in unknown_chars.
    """
    phones: list[str] = ["_"]
    tones: list[int] = [0]
    word2ph: list[int] = [1]
    unknown: list[str] = []
    for sentence in (s for s in _SENTENCE_END.split(norm_text) if s.strip()):
        p, t, w = _sentence_g2p(sentence, forced, unknown)
        phones += p
        tones += t
        word2ph += w
    return phones + ["_"], tones + [0], word2ph + [1], unknown
