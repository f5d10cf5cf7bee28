"""Japanese text normalisation: numbers, dates, times, money, units, phone numbers, punctuation."""

from __future__ import annotations

import decimal
import re
import unicodedata

from vits.symbols import PUNCTUATION

_PUNCT_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "．": ".", "…": "…",
    "...": "…", "···": "…", "・・・": "…", "·": ",", "・": ",", "、": ",", "$": ".", "“": "'", "”": "'",
    '"': "'", "‘": "'", "’": "'", "（": "'", "）": "'", "(": "'", ")": "'", "《": "'", "》": "'",
    "【": "'", "】": "'", "[": "'", "]": "'", "—": "-", "−": "-", "～": "-", "~": "-", "「": "'", "」": "'",
    "『": "'", "』": "'", "〈": "'", "〉": "'", ":": ",", ";": ",", "―": "-", "‐": "-",
}
_PUNCT_RX = re.compile("|".join(re.escape(p) for p in sorted(_PUNCT_MAP, key=len, reverse=True)))
_KEEP_RX = re.compile(r"[^\u3040-\u309f\u30a0-\u30ff\u4e00-\u9fff\u3400-\u4dbf\u3005\u3006"
                      + re.escape("".join(PUNCTUATION)) + r"]")

_DIGIT_READING = ["ゼロ", "イチ", "ニ", "サン", "ヨン", "ゴ", "ロク", "ナナ", "ハチ", "キュウ"]
_CURRENCY = {"$": "ドル", "¥": "円", "￥": "円", "£": "ポンド", "€": "ユーロ", "₩": "ウォン"}
_UNITS = {
    "km/h": "キロメートル毎時", "m/s": "メートル毎秒", "kg": "キログラム", "mg": "ミリグラム", "g": "グラム",
    "km": "キロメートル", "cm": "センチメートル", "mm": "ミリメートル", "m": "メートル", "ml": "ミリリットル",
    "mL": "ミリリットル", "L": "リットル", "°C": "度", "℃": "度", "°F": "華氏度", "°": "度", "GB": "ギガバイト",
    "MB": "メガバイト", "KB": "キロバイト", "TB": "テラバイト", "kHz": "キロヘルツ", "MHz": "メガヘルツ",
    "GHz": "ギガヘルツ", "Hz": "ヘルツ", "kW": "キロワット", "W": "ワット", "mAh": "ミリアンペアアワー",
}
_UNIT_RX = re.compile(r"(\d+(?:\.\d+)?)\s?(" + "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
                      + r")(?![A-Za-z])")


def _num(text: str) -> str:
    from num2words import num2words

    value = text.replace(",", "")
    try:
        return num2words(float(value) if "." in value else int(value), lang="ja")
    except (ValueError, OverflowError, NotImplementedError, decimal.InvalidOperation):
        return digits(value)


def digits(text: str) -> str:
    """Read a digit string one digit at a time (phone numbers, codes)."""
    return "".join(_DIGIT_READING[int(c)] for c in text if c.isdigit())


def map_punctuation(text: str) -> str:
    """Map Japanese/full-width punctuation onto the 7 model marks (spec §7.5)."""
    return _PUNCT_RX.sub(lambda m: _PUNCT_MAP[m.group()], text)


def normalize_numbers(text: str) -> str:
    """Spell out digits in Japanese (dates, times, money, %, fractions, units, phone numbers)."""
    text = unicodedata.normalize("NFKC", text)
    # phone numbers and long codes: digit by digit
    text = re.sub(r"\+?\d{2,4}-\d{2,4}-\d{3,4}|0\d{9,10}|\d{12,}",
                  lambda m: "、".join(digits(p) for p in re.split(r"-", m.group().lstrip("+"))), text)
    text = re.sub(r"(\d{4})[/\-.](\d{1,2})[/\-.](\d{1,2})",
                  lambda m: f"{_num(m[1])}年{_num(m[2])}月{_num(m[3])}日", text)
    text = re.sub(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", lambda m: f"{_num(m[1])}時"
                  + (f"{_num(m[2])}分" if int(m[2]) else "") + (f"{_num(m[3])}秒" if m[3] else ""), text)
    text = re.sub(r"\d{1,3}(?:,\d{3})+", lambda m: m.group().replace(",", ""), text)
    text = re.sub(r"([$¥￥£€₩])\s?(\d+(?:\.\d+)?)", lambda m: m[2] + _CURRENCY[m[1]], text)
    text = re.sub(r"(\d+(?:\.\d+)?)%", lambda m: _num(m[1]) + "パーセント", text)
    text = re.sub(r"(\d+)/(\d+)", lambda m: f"{_num(m[2])}分の{_num(m[1])}", text)
    text = _UNIT_RX.sub(lambda m: m[1] + _UNITS[m[2]], text)
    text = re.sub(r"(?<![\d])-(\d)", r"マイナス\1", text)
    text = re.sub(r"(\d+)(?:st|nd|rd|th)\b", lambda m: "第" + m[1], text)
    return re.sub(r"\d+(?:\.\d+)?", lambda m: _num(m.group()), text)


def normalize(text: str) -> tuple[str, list[str]]:
    """Normalise Japanese text for g2p.

    Returns (norm_text, removed): norm_text holds only kana, kanji, 々 and the 7 punctuation marks;
    removed lists the characters that were deleted (spaces excluded).
    """
    text = normalize_numbers(text)
    text = map_punctuation(text)
    text = text.replace("\u3099", "").replace("\u309a", "")
    removed = [c for c in _KEEP_RX.findall(text) if not c.isspace()]
    text = _KEEP_RX.sub("", text)
    # a long-vowel mark with no vowel before it has nothing to lengthen
    text = re.sub("(^|[" + re.escape("".join(PUNCTUATION)) + "])[ーｰ〜]+", r"\1", text)
    return text, removed
