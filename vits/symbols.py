"""The Bert-VITS2 2.3 symbol table (112 entries), tones and languages (spec §7.1–7.3), plus Korean.

Korean extends the table without moving anything: its jamo phones get ids 112.. (KO_SYMBOLS after the
112 symbols), its one tone id 12 (after the 12 tones), its language id 3 (after ZH/JP/EN). A plain 2.3
network is built with the 2.3 sizes (SYMBOLS, NUM_TONES, NUM_LANGUAGES); a Korean-enabled voice (config
`model.num_languages: 4`) with the KO_* sizes (docs/korean.md).
"""

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

# Korean phones: the conjoining jamo (18 sounding onsets, 21 vowels, the 7 coda sounds), vits/text/ko/g2p.py
KO_SYMBOLS = ([chr(c) for c in range(0x1100, 0x1113) if c != 0x110B] + [chr(c) for c in range(0x1161, 0x1176)]
              + ["\u11a8", "\u11ab", "\u11ae", "\u11af", "\u11b7", "\u11b8", "\u11bc"])

SYMBOLS: list[str] = [PAD] + sorted(set(ZH_SYMBOLS) | set(JA_SYMBOLS) | set(EN_SYMBOLS)) + PUNCTUATION_SYMBOLS
KO_ALL_SYMBOLS: list[str] = SYMBOLS + KO_SYMBOLS  # the table of a Korean-enabled voice
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(KO_ALL_SYMBOLS)}
SIL_PHONEME_IDS = [SYMBOL_TO_ID[s] for s in PUNCTUATION_SYMBOLS]

NUM_ZH_TONES, NUM_JA_TONES, NUM_EN_TONES, NUM_KO_TONES = 6, 2, 4, 1
NUM_TONES = NUM_ZH_TONES + NUM_JA_TONES + NUM_EN_TONES
KO_NUM_TONES = NUM_TONES + NUM_KO_TONES
LANGUAGE_ID = {"ZH": 0, "JP": 1, "EN": 2, "KO": 3}
LANGUAGE_TONE_START = {"ZH": 0, "JP": NUM_ZH_TONES, "EN": NUM_ZH_TONES + NUM_JA_TONES, "KO": NUM_TONES}
NUM_LANGUAGES = 3  # the 2.3 network; a Korean-enabled one has KO_NUM_LANGUAGES
KO_NUM_LANGUAGES = 4

assert len(SYMBOLS) == 112, len(SYMBOLS)
assert len(KO_ALL_SYMBOLS) == 158 and len(set(KO_ALL_SYMBOLS)) == 158


def table_sizes(num_languages: int = NUM_LANGUAGES) -> tuple[int, int, int]:
    """(symbols, tones, languages) of the embedding tables: 2.3 (112, 12, 3) or Korean-enabled (158, 13, 4)."""
    if num_languages >= KO_NUM_LANGUAGES:
        return len(KO_ALL_SYMBOLS), KO_NUM_TONES, KO_NUM_LANGUAGES
    return len(SYMBOLS), NUM_TONES, NUM_LANGUAGES


def cleaned_text_to_sequence(phones: list[str], tones: list[int], language: str):
    """Map phone strings, raw tones and a language to (phone ids, model tone ids, language ids).

    Raises KeyError-free: an unknown phone raises `vits.errors.KoeError` naming it.
    """
    from vits.errors import KoeError

    try:
        ids = [SYMBOL_TO_ID[p] for p in phones]
    except KeyError as exc:
        raise KoeError(
            f"unknown phone {exc.args[0]!r} (not in the Bert-VITS2 table or the Korean phones)",
            fix="re-run the text stage (python -m pipeline.text) so phones come from our frontend",
        ) from None
    if language not in LANGUAGE_ID:
        raise KoeError(f"unknown language {language!r}", fix="use one of ZH, JP, EN, KO")
    start = LANGUAGE_TONE_START[language]
    return ids, [t + start for t in tones], [LANGUAGE_ID[language]] * len(phones)


def intersperse(items: list, value=0) -> list:
    """Return [value, i0, value, i1, ..., value] (length 2N+1), the add_blank rule (spec §7.6)."""
    out = [value] * (len(items) * 2 + 1)
    out[1::2] = items
    return out
