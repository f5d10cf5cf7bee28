"""The opencpop-strict syllable table: pinyin syllable (no tone) -> two phones (spec §7.5).

Built from the pinyin rules instead of shipped as a file: every syllable is an initial plus a final,
syllables without an initial get a placeholder initial (AA/EE/OO for a/e/o, y/w for i/u/ü glides).
"""

from __future__ import annotations

import re

# Finals each initial combines with, in standard (Hanyu Pinyin) spelling; "v" stands for ü.
_FINALS_BY_INITIAL = {
    "b": "a o ai ei ao an en ang eng i ie iao ian in ing u",
    "p": "a o ai ei ao ou an en ang eng i ie iao ian in ing u",
    "m": "a o e ai ei ao ou an en ang eng i ie iao iu ian in ing u",
    "f": "a o ei ou an en ang eng iao u",
    "d": "a e ai ei ao ou an en ang eng ong i ia ie iao iu ian ing u uo ui uan un",
    "t": "a e ai ei ao ou an ang eng ong i ie iao ian ing u uo ui uan un",
    "n": "a e ai ei ao ou an en ang eng ong i ie iao iu ian in iang ing u uo uan un v ve",
    "l": "a o e ai ei ao ou an ang eng ong i ia ie iao iu ian in iang ing u uo uan un v ve",
    "g": "a e ai ei ao ou an en ang eng ong u ua uo uai ui uan un uang",
    "k": "a e ai ei ao ou an en ang eng ong u ua uo uai ui uan un uang",
    "h": "a e ai ei ao ou an en ang eng ong u ua uo uai ui uan un uang",
    "j": "i ia ie iao iu ian in iang ing iong u ue uan un",
    "q": "i ia ie iao iu ian in iang ing iong u ue uan un",
    "x": "i ia ie iao iu ian in iang ing iong u ue uan un",
    "zh": "a e ai ei ao ou an en ang eng ong i u ua uo uai ui uan un uang",
    "ch": "a e ai ao ou an en ang eng ong i u ua uo uai ui uan un uang",
    "sh": "a e ai ei ao ou an en ang eng i u ua uo uai ui uan un uang",
    "r": "e ao ou an en ang eng ong i u ua uo ui uan un",
    "z": "a e ai ei ao ou an en ang eng ong i u uo ui uan un",
    "c": "a e ai ao ou an en ang eng ong i u uo ui uan un",
    "s": "a e ai ao ou an en ang eng ong i u uo ui uan un",
}

# Syllables without an initial, written as in pinyin, with their placeholder initial.
_ZERO_INITIAL = {
    "a": "AA a", "ai": "AA ai", "an": "AA an", "ang": "AA ang", "ao": "AA ao",
    "e": "EE e", "ei": "EE ei", "en": "EE en", "eng": "EE eng", "er": "EE er",
    "o": "OO o", "ou": "OO ou",
    "ya": "y a", "yan": "y En", "yang": "y ang", "yao": "y ao", "ye": "y E", "yi": "y i", "yin": "y in",
    "ying": "y ing", "yo": "y o", "yong": "y ong", "you": "y ou", "yu": "y v", "yuan": "y van",
    "yue": "y ve", "yun": "y vn",
    "wa": "w a", "wai": "w ai", "wan": "w an", "wang": "w ang", "wei": "w ei", "wen": "w en",
    "weng": "w eng", "wo": "w o", "wu": "w u",
}


def _final_phone(initial: str, final: str) -> str:
    """The phone symbol of `final` after `initial` (apical i, ü after j/q/x written u)."""
    if final == "i" and initial in ("zh", "ch", "sh", "r"):
        return "ir"
    if final == "i" and initial in ("z", "c", "s"):
        return "i0"
    if initial in ("j", "q", "x") and final.startswith("u"):
        return "v" + final[1:] if final != "un" else "vn"
    return final


def _build() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for initial, finals in _FINALS_BY_INITIAL.items():
        for final in finals.split():
            spelled = initial + final
            table[spelled] = (initial, _final_phone(initial, final))
    # pypinyin (strict) spells ü after j/q/x as "v": accept both spellings.
    for initial in ("j", "q", "x"):
        for final in ("v", "ve", "van", "vn"):
            table[initial + final] = (initial, final)
    for syllable, phones in _ZERO_INITIAL.items():
        first, second = phones.split()
        table[syllable] = (first, second)
    return table


PINYIN_TO_PHONES: dict[str, tuple[str, str]] = _build()


def split_pinyin(syllable: str) -> tuple[str, str, str] | None:
    """Split a toned pinyin syllable ("zhuang4", "lv4", "nü3") into (initial, final, tone) or None."""
    m = re.fullmatch(r"([a-zü:]+?)([1-5])", syllable.strip().lower().replace("ü", "v").replace("u:", "v"))
    if not m:
        return None
    body, tone = m.groups()
    for initial in ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x",
                    "r", "z", "c", "s"):
        if body.startswith(initial) and len(body) > len(initial):
            final = body[len(initial):]
            if initial in "jqx" and final.startswith("u"):
                final = "v" + final[1:]
            return initial, {"ui": "uei", "iu": "iou", "un": "uen"}.get(final, final), tone
    # no initial: undo the y/w spelling so syllable_phones sees a bare final
    if body.startswith("yu"):
        final = "v" + body[2:]
    elif body.startswith("yi"):
        final = "i" + body[2:]
    elif body.startswith("y"):
        final = "i" + body[1:]
    elif body.startswith("wu"):
        final = "u" + body[2:]
    elif body.startswith("w"):
        final = "u" + body[1:]
    else:
        final = body
    return "", final, tone
