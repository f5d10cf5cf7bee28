"""Korean text normalisation: numbers by counter, dates, times, money, units, percent, phone numbers.

Korean has two number systems: Sino-Korean (일 이 삼 ... 십 백 천 만) and native Korean (하나 둘 셋 ...
열 스물 ... 아흔). Which one a digit string takes depends on the counter after it: 개 명 살 시 마리 ...
take native numbers in their prenominal form (한 개, 두 명, 스무 살, 세 시), 년 월 일 분 원 층 번 ...
and bare numbers take Sino-Korean (이천이십사 년, 삼 층). Native numbers exist up to 99; above that the
hundreds are Sino-Korean and the rest native (백두 개). Months 6 and 10 are 유월 and 시월.
"""

from __future__ import annotations

import re

from vits.symbols import PUNCTUATION

_PUNCT_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    "...": "…", "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'", "（": "'", "）": "'", "(": "'", ")": "'",
    "《": "'", "》": "'", "【": "'", "】": "'", "[": "'", "]": "'", "「": "'", "」": "'", "『": "'", "』": "'",
    "〈": "'", "〉": "'", "<": "'", ">": "'", "—": "-", "―": "-", "−": "-", "‐": "-", "～": "-", "~": "-",
    ":": ",", ";": ",", "．": ".",
}
_PUNCT_RX = re.compile("|".join(re.escape(p) for p in sorted(_PUNCT_MAP, key=len, reverse=True)))
# Hangul syllables, spaces and the 7 punctuation marks stay; everything else is reported and removed
_KEEP_RX = re.compile(r"[^\uac00-\ud7a3 " + re.escape("".join(PUNCTUATION)) + r"]")

_SINO_DIGITS = ["영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]
_PHONE_DIGITS = ["공", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]
_SMALL_UNITS = [(1000, "천"), (100, "백"), (10, "십")]
_LARGE_UNITS = [(10 ** 16, "경"), (10 ** 12, "조"), (10 ** 8, "억"), (10 ** 4, "만")]
_NATIVE_ONES = ["", "하나", "둘", "셋", "넷", "다섯", "여섯", "일곱", "여덟", "아홉"]
_NATIVE_ONES_PRENOMINAL = ["", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉"]
_NATIVE_TENS = ["", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔"]

# counters that take native numbers (prenominal forms: 한 개, 스무 살); longest first in the pattern
NATIVE_COUNTERS = ("개", "명", "살", "시간", "시", "마리", "사람", "잔", "병", "권", "장", "그릇", "가지", "벌",
                   "켤레", "대", "채", "송이", "군데", "달", "주먹", "척", "통", "자루", "곳", "번째", "번씩")
# counters that take Sino-Korean numbers; bare numbers are Sino-Korean too. The reading is written
# joined to its counter, as it is said (10일 → 십일, read 시빌 by liaison; 1,500원 → 천오백원, 천오배권)
SINO_COUNTERS = ("년", "월", "일", "분", "초", "원", "층", "번", "호", "회", "도", "점", "학년", "주년", "세",
                 "퍼센트", "킬로", "미터", "인분", "페이지", "쪽", "등", "위", "차", "박", "개월", "주일", "달러", "엔")
_MONTHS = {6: "유월", 10: "시월"}
_CURRENCY = {"₩": "원", "$": "달러", "€": "유로", "£": "파운드", "¥": "엔", "￥": "엔"}
_UNITS = {
    "km/h": "킬로미터 퍼 아워", "km": "킬로미터", "cm": "센티미터", "mm": "밀리미터", "m": "미터", "kg": "킬로그램",
    "mg": "밀리그램", "g": "그램", "ml": "밀리리터", "mL": "밀리리터", "L": "리터", "°C": "도", "℃": "도",
    "°": "도", "GB": "기가바이트", "MB": "메가바이트", "TB": "테라바이트", "Hz": "헤르츠", "kW": "킬로와트",
    "W": "와트", "%": "퍼센트",
}
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"


def sino(n: int) -> str:
    """Sino-Korean reading of a non-negative integer: 11 → 십일, 10000 → 만, 2024 → 이천이십사."""
    if n == 0:
        return "영"
    out = []
    for value, name in _LARGE_UNITS:
        if n >= value:
            head = n // value
            # 만 alone (not 일만) at the start; 일억, 일조 keep their 일
            out.append(("" if head == 1 and value == 10 ** 4 else _sino_below_10000(head)) + name)
            n %= value
    if n:
        out.append(_sino_below_10000(n))
    return "".join(out)


def _sino_below_10000(n: int) -> str:
    out = ""
    for value, name in _SMALL_UNITS:
        if n >= value:
            d = n // value
            out += ("" if d == 1 else _SINO_DIGITS[d]) + name
            n %= value
    return out + (_SINO_DIGITS[n] if n else "")


def native(n: int, prenominal: bool = True) -> str:
    """Native Korean reading for a counter (prenominal: 한, 두, 세, 네, 스무); 100 and up mix in Sino-Korean."""
    if n <= 0:
        return sino(n)
    if n >= 100:
        rest = n % 100
        return sino(n - rest) + (native(rest, prenominal) if rest else "")
    tens, ones = divmod(n, 10)
    if prenominal and ones == 0 and tens == 2:
        return "스무"
    ones_table = _NATIVE_ONES_PRENOMINAL if prenominal else _NATIVE_ONES
    return _NATIVE_TENS[tens] + ones_table[ones]


def _parse(number: str) -> tuple[int, str]:
    whole, _, frac = number.replace(",", "").partition(".")
    return int(whole), frac


def read_sino(number: str) -> str:
    """Sino-Korean reading of a digit string, decimals read digit by digit after 점 (3.14 → 삼 점 일사)."""
    whole, frac = _parse(number)
    text = sino(whole)
    return text + " 점 " + "".join(_SINO_DIGITS[int(d)] for d in frac) if frac else text


def digits(number: str) -> str:
    """A code read digit by digit, 0 as 공 (phone numbers, room numbers)."""
    return "".join(_PHONE_DIGITS[int(d)] for d in number if d.isdigit())


def _counter_number(m: re.Match) -> str:
    number, counter = m.group(1), m.group(2)
    whole, frac = _parse(number)
    if counter in NATIVE_COUNTERS and not frac and 0 < whole:
        if counter == "번째" and whole == 1:
            return "첫번째"
        return f"{native(whole)}{counter}"
    if counter == "월" and not frac and whole in _MONTHS:
        return _MONTHS[whole]
    return f"{read_sino(number)}{counter}"


_DATE_RX = re.compile(r"(\d{4})\s*[-./]\s*(\d{1,2})\s*[-./]\s*(\d{1,2})\.?(?!\d)")
_TIME_RX = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?::(\d{2}))?(?![\d:])")
_PHONE_RX = re.compile(r"(?<!\d)(0\d{1,2})-(\d{3,4})-(\d{4})(?!\d)")
_CURRENCY_RX = re.compile(r"([₩$€£¥￥])\s?(" + _NUM + ")")
_UNIT_RX = re.compile(r"(-?" + _NUM + r")\s?(" + "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
                      + r")(?![A-Za-z])")
_COUNTER_RX = re.compile(r"(" + _NUM + r")\s?(" + "|".join(sorted(NATIVE_COUNTERS + SINO_COUNTERS, key=len, reverse=True))
                         + ")")
_NEGATIVE_RX = re.compile(r"(?<![\w\d])-(?=\d)")
_BARE_RX = re.compile(_NUM)


def _date(m: re.Match) -> str:
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return f"{sino(year)}년 {_MONTHS.get(month, sino(month) + '월')} {sino(day)}일"


def _time(m: re.Match) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    out = f"{native(hour)}시" if 0 < hour <= 24 else f"{sino(hour)}시"
    if minute:
        out += f" {sino(minute)}분"
    if m.group(3) and int(m.group(3)):
        out += f" {sino(int(m.group(3)))}초"
    return out


def _unit(m: re.Match) -> str:
    number, unit = m.group(1), m.group(2)
    sign = "영하 " if number.startswith("-") and unit in ("°C", "℃", "°") else "마이너스 " if number.startswith("-") else ""
    return f"{sign}{read_sino(number.lstrip('-'))}{_UNITS[unit]}"


def normalize_numbers(text: str) -> str:
    """Spell out digits in Korean words (dates, times, phone numbers, money, units, counters, bare numbers)."""
    text = _PHONE_RX.sub(lambda m: " ".join(digits(g) for g in m.groups()), text)
    text = _DATE_RX.sub(_date, text)
    text = _TIME_RX.sub(_time, text)
    text = _CURRENCY_RX.sub(lambda m: f"{read_sino(m.group(2))}{_CURRENCY[m.group(1)]}", text)
    text = _UNIT_RX.sub(_unit, text)
    text = _NEGATIVE_RX.sub("마이너스 ", text)
    text = _COUNTER_RX.sub(_counter_number, text)
    return _BARE_RX.sub(lambda m: read_sino(m.group(0)), text)


def map_punctuation(text: str) -> str:
    """Map Korean/Western punctuation onto the 7 marks of the symbol table."""
    return _PUNCT_RX.sub(lambda m: _PUNCT_MAP[m.group(0)], text)


def normalize(text: str) -> tuple[str, list[str]]:
    """Normalise Korean text for g2p.

    Returns (norm_text, removed): norm_text holds Hangul syllables, single spaces and the 7 punctuation
    marks; removed lists the characters that were deleted (spaces excluded).
    """
    text = map_punctuation(normalize_numbers(text))
    removed = [c for c in _KEEP_RX.findall(text) if not c.isspace()]
    text = re.sub(r"\s+", " ", _KEEP_RX.sub(lambda m: " " if m.group(0).isspace() else "", text)).strip()
    return text, removed
