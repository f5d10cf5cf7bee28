"""The Bert-VITS2 2.3 symbol table (112 entries), tones and languages (spec §7.1–7.3)."""

from __future__ import annotations

PAD = "_"
PUNCTUATION = ["!", "?", "…", ",", ".", "'", "-"]
PUNCTUATION_SYMBOLS = PUNCTUATION + ["SP", "UNK"]

ZH_SYMBOLS = [
    "E", "En", "a", "ai", "an", "ang", "ao", "b", "c", "ch", "d", "e", "ei", "en", "eng", "er", "f", "g",
    "h", "i", "i0", "ia", "ian", "iang", "iao", "ie", "in", "ing", "iong", "ir", "iu", "j", "k", "l", "m",
    "n", "o", "ong", "ou", "p", "q", "r", "s", "sh", "t", "u", "ua", "uai", "uan", "uang", "ui", "un",
    "uo", "v", "van", "ve", "vn", "w", "x", "y", "z", "zh", "AA", "EE", "OO",
]
JA_SYMBOLS = [
    "N", "a", "a:", "b", "by", "ch", "d", "dy", "e", "e:", "f", "g", "gy", "h", "hy", "i", "i:", "j", "k",
    "ky", "m", "my", "n", "ny", "o", "o:", "p", "py", "q", "r", "ry", "s", "sh", "t", "ts", "ty", "u",
    "u:", "w", "y", "z", "zy", "v",  # v: ヴ (2.3 maps it so; the id is the one Chinese ü uses)
]
EN_SYMBOLS = [
    "aa", "ae", "ah", "ao", "aw", "ay", "b", "ch", "d", "dh", "eh", "er", "ey", "f", "g", "hh", "ih", "iy",
    "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p", "r", "s", "sh", "t", "th", "uh", "uw", "V", "w", "y",
    "z", "zh",
]

SYMBOLS: list[str] = [PAD] + sorted(set(ZH_SYMBOLS) | set(JA_SYMBOLS) | set(EN_SYMBOLS)) + PUNCTUATION_SYMBOLS
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}
SIL_PHONEME_IDS = [SYMBOL_TO_ID[s] for s in PUNCTUATION_SYMBOLS]

NUM_ZH_TONES, NUM_JA_TONES, NUM_EN_TONES = 6, 2, 4
NUM_TONES = NUM_ZH_TONES + NUM_JA_TONES + NUM_EN_TONES
LANGUAGE_ID = {"ZH": 0, "JP": 1, "EN": 2}
LANGUAGE_TONE_START = {"ZH": 0, "JP": NUM_ZH_TONES, "EN": NUM_ZH_TONES + NUM_JA_TONES}
NUM_LANGUAGES = len(LANGUAGE_ID)

assert len(SYMBOLS) == 112, len(SYMBOLS)


def cleaned_text_to_sequence(phones: list[str], tones: list[int], language: str):
    """Map phone strings, raw tones and a language to (phone ids, model tone ids, language ids).

    Raises KeyError-free: an unknown phone raises `vits.errors.KoeError` naming it.
    """
    from vits.errors import KoeError

    try:
        ids = [SYMBOL_TO_ID[p] for p in phones]
    except KeyError as exc:
        raise KoeError(
            f"unknown phone {exc.args[0]!r} (not in the 112-symbol Bert-VITS2 table)",
            fix="re-run the text stage (python -m pipeline.text) so phones come from our frontend",
        ) from None
    if language not in LANGUAGE_ID:
        raise KoeError(f"unknown language {language!r}", fix="use one of ZH, JP, EN")
    start = LANGUAGE_TONE_START[language]
    return ids, [t + start for t in tones], [LANGUAGE_ID[language]] * len(phones)


def intersperse(items: list, value=0) -> list:
    """Return [value, i0, value, i1, ..., value] (length 2N+1), the add_blank rule (spec §7.6)."""
    out = [value] * (len(items) * 2 + 1)
    out[1::2] = items
    return out
