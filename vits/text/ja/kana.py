"""Katakana -> phoneme table (OpenJTalk's phoneme names, lower-cased, within the 112-symbol table).

ン -> "n", ッ -> "q", ー repeats the previous vowel (spec §7.5). Sounds outside the Bert-VITS2 Japanese
symbol set are folded onto the nearest symbol (ズィ -> z i); ヴ is "v", as Bert-VITS2 2.3 maps it
(the symbol the table shares with Chinese ü).
"""

from __future__ import annotations

_VOWELS = {"ア": "a", "イ": "i", "ウ": "u", "エ": "e", "オ": "o"}

# consonant rows: kana in a-i-u-e-o order with their phonemes
_ROWS = {
    "カキクケコ": ["k a", "k i", "k u", "k e", "k o"],
    "ガギグゲゴ": ["g a", "g i", "g u", "g e", "g o"],
    "サシスセソ": ["s a", "sh i", "s u", "s e", "s o"],
    "ザジズゼゾ": ["z a", "j i", "z u", "z e", "z o"],
    "タチツテト": ["t a", "ch i", "ts u", "t e", "t o"],
    "ダヂヅデド": ["d a", "j i", "z u", "d e", "d o"],
    "ナニヌネノ": ["n a", "n i", "n u", "n e", "n o"],
    "ハヒフヘホ": ["h a", "h i", "f u", "h e", "h o"],
    "バビブベボ": ["b a", "b i", "b u", "b e", "b o"],
    "パピプペポ": ["p a", "p i", "p u", "p e", "p o"],
    "マミムメモ": ["m a", "m i", "m u", "m e", "m o"],
    "ラリルレロ": ["r a", "r i", "r u", "r e", "r o"],
}

_SINGLE = {
    "ヤ": "y a", "ユ": "y u", "ヨ": "y o", "ワ": "w a", "ヲ": "o", "ン": "n", "ッ": "q",
    "ヴ": "v u", "ヰ": "i", "ヱ": "e", "ヮ": "w a", "ヵ": "k a", "ヶ": "k e",
    "ァ": "a", "ィ": "i", "ゥ": "u", "ェ": "e", "ォ": "o", "ャ": "y a", "ュ": "y u", "ョ": "y o",
}

# palatalised rows: base kana + small ャュョ (and ェ for the loan-word sounds)
_PALATAL = {
    "キ": "ky", "ギ": "gy", "シ": "sh", "ジ": "j", "チ": "ch", "ヂ": "j", "ニ": "ny", "ヒ": "hy",
    "ビ": "by", "ピ": "py", "ミ": "my", "リ": "ry",
}

_LOANS = {
    "ティ": "t i", "ディ": "d i", "トゥ": "t u", "ドゥ": "d u", "テュ": "ty u", "デュ": "dy u",
    "ファ": "f a", "フィ": "f i", "フェ": "f e", "フォ": "f o", "フュ": "hy u", "フャ": "hy a", "フョ": "hy o",
    "ウィ": "w i", "ウェ": "w e", "ウォ": "w o", "イェ": "y e", "シェ": "sh e", "ジェ": "j e", "チェ": "ch e",
    "ツァ": "ts a", "ツィ": "ts i", "ツェ": "ts e", "ツォ": "ts o", "スィ": "s i", "ズィ": "z i",
    "クァ": "k a", "クィ": "k i", "クェ": "k e", "クォ": "k o", "グァ": "g a", "ヴァ": "v a", "ヴィ": "v i",
    "ヴェ": "v e", "ヴォ": "v o", "ヴュ": "by u", "キェ": "ky e", "ニェ": "ny e", "ヒェ": "hy e",
}


def _build() -> dict[str, list[str]]:
    table: dict[str, list[str]] = {k: [v] for k, v in _VOWELS.items()}
    for row, sounds in _ROWS.items():
        for kana, sound in zip(row, sounds):
            table[kana] = sound.split()
    for kana, sound in _SINGLE.items():
        table[kana] = sound.split()
    for kana, cons in _PALATAL.items():
        for small, vowel in (("ャ", "a"), ("ュ", "u"), ("ョ", "o")):
            table[kana + small] = [cons, vowel]
    for kana, sound in _LOANS.items():
        table[kana] = sound.split()
    return table


KANA_TO_PHONES = _build()
_MAX_KEY = max(len(k) for k in KANA_TO_PHONES)


def hira_to_kata(text: str) -> str:
    """Hiragana -> katakana (other characters unchanged)."""
    return "".join(chr(ord(c) + 0x60) if "\u3041" <= c <= "\u3096" else c for c in text)


def kana_to_phones(kana: str) -> tuple[list[str], list[str]]:
    """Phonemes of a katakana/hiragana reading; ー repeats the previous vowel.

    Returns (phones, unknown_characters). A leading ー is kept as "ー" for the caller to resolve
    against the previous word.
    """
    kana = hira_to_kata(kana.strip())
    phones: list[str] = []
    unknown: list[str] = []
    i = 0
    while i < len(kana):
        if kana[i] == "ー":
            phones.append(phones[-1][-1] if phones else "ー")
            i += 1
            continue
        for size in range(min(_MAX_KEY, len(kana) - i), 0, -1):
            sound = KANA_TO_PHONES.get(kana[i:i + size])
            if sound:
                phones.extend(sound)
                i += size
                break
        else:
            unknown.append(kana[i])
            i += 1
    return phones, unknown


def mora_count(kana: str) -> int:
    """Number of morae in a kana reading (small ャュョァィゥェォ do not count)."""
    kana = hira_to_kata(kana)
    return sum(1 for c in kana if c not in "ャュョァィゥェォヮ" and ("\u30a0" < c <= "\u30ff"))
