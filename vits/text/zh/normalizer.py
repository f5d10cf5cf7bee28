"""Chinese text normalisation: numbers, dates, times, money, units, phone numbers, punctuation.

Differs from the reference where it was wrong: phone numbers and codes are read digit by digit
(1 as 幺), and Latin words are not deleted here (the caller reads them as English segments).
"""

from __future__ import annotations

import re
import unicodedata

from vits.symbols import PUNCTUATION

_PUNCT_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    "...": "…", "$": ".", "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'", "（": "'", "）": "'",
    "(": "'", ")": "'", "《": "'", "》": "'", "【": "'", "】": "'", "[": "'", "]": "'", "—": "-",
    "～": "-", "~": "-", "「": "'", "」": "'", "『": "'", "』": "'", ":": ",", ";": ",", "・": ",",
    "〈": "'", "〉": "'", "―": "-", "−": "-", "‐": "-", "．": ".", "｡": ".", "､": ",",
    "嗯": "恩", "呣": "母",
}
_PUNCT_RX = re.compile("|".join(re.escape(p) for p in sorted(_PUNCT_MAP, key=len, reverse=True)))
_KEEP_RX = re.compile(r"[^\u4e00-\u9fa5" + re.escape("".join(PUNCTUATION)) + r"]")

_DIGITS = "零一二三四五六七八九"
_PHONE_DIGITS = "零幺二三四五六七八九"
_CURRENCY = {"$": "美元", "¥": "元", "￥": "元", "£": "英镑", "€": "欧元", "₩": "韩元", "HK$": "港元"}
_UNITS = {
    "km/h": "公里每小时", "m/s": "米每秒", "kg": "千克", "mg": "毫克", "g": "克", "km": "公里", "cm": "厘米",
    "mm": "毫米", "m": "米", "ml": "毫升", "mL": "毫升", "L": "升", "°C": "摄氏度", "℃": "摄氏度",
    "°F": "华氏度", "°": "度", "GB": "G B", "MB": "M B", "KB": "K B", "TB": "T B", "kHz": "千赫兹",
    "MHz": "兆赫兹", "GHz": "吉赫兹", "Hz": "赫兹", "kW": "千瓦", "W": "瓦", "mAh": "毫安时", "h": "小时",
    "min": "分钟", "s": "秒",
}
_UNIT_RX = re.compile(r"((?<![\dA-Za-z.])-?\d+(?:\.\d+)?|\d+(?:\.\d+)?)\s?(" + "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
                      + r")(?![A-Za-z])")
_CODE_WORDS = "电话|号码|手机|热线|编号|验证码|尾号|账号|帐号|房间|工号|学号|车次|航班|邮编|密码|QQ|微信|分机"


def digits(text: str, phone: bool = True) -> str:
    """Read a digit string one digit at a time (1 as 幺 in phone numbers and codes)."""
    table = _PHONE_DIGITS if phone else _DIGITS
    return "".join(table[int(c)] for c in text if c.isdigit())


def _read_group(n: int) -> str:
    """0 < n < 10000 in Chinese with inner zeros as a single 零 (1010 -> 一千零一十)."""
    out = ""
    zero = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit, n = divmod(n, value)
        if digit:
            out += ("零" if zero and out else "") + _DIGITS[digit] + unit
            zero = False
        else:
            zero = True
    return out


def _below_yi(n: int) -> str:
    high, low = divmod(n, 10000)
    if not high:
        return _read_group(low) if low else ""
    out = _read_group(high) + "万"
    if low:
        out += ("零" if low < 1000 else "") + _read_group(low)
    return out


def _read(n: int) -> str:
    if n < 10 ** 8:
        return _below_yi(n)
    high, low = divmod(n, 10 ** 8)
    out = _read(high) + "亿"
    if low:
        out += ("零" if low < 10 ** 7 else "") + _below_yi(low)
    return out


def integer_to_chinese(n: int) -> str:
    """A non-negative integer as a Chinese quantity: 12 -> 十二, 120000 -> 十二万, 100000001 -> 一亿零一."""
    if n == 0:
        return "零"
    out = _read(n)
    return out[1:] if out.startswith("一十") else out


def _cardinal(text: str) -> str:
    """A number ("3000", "-65.5", "1,000") as a Chinese quantity."""
    value = text.replace(",", "")
    sign = ""
    if value.startswith(("-", "−")):
        sign, value = "负", value[1:]
    if value.startswith("+"):
        value = value[1:]
    if not value or not re.fullmatch(r"\d+(?:\.\d+)?", value):
        return digits(value, phone=False)
    integer, _, fraction = value.partition(".")
    if len(integer) > 16:  # beyond cn2an's range: read digit by digit
        return sign + digits(value, phone=False)
    spoken = integer_to_chinese(int(integer))
    if fraction:
        spoken += "点" + digits(fraction, phone=False)
    return sign + spoken


def _time(m: re.Match) -> str:
    hour, minute, second = m[1], m[2], m[3]
    out = _cardinal(hour) + "点"
    if int(minute) == 0 and not second:
        return out + "整"
    out += ("零" if minute.startswith("0") and minute != "00" else "") + _cardinal(minute) + "分"
    if second:
        out += _cardinal(second) + "秒"
    return out


def normalize_numbers(text: str) -> str:
    """Spell out digits in Chinese (dates, times, money, %, fractions, ranges, units, phone numbers)."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"(\d)\s*[xX×]\s*(\d)", r"\1乘\2", text)
    # phone numbers and codes, digit by digit
    text = re.sub(r"(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)", lambda m: digits(m.group()), text)
    text = re.sub(r"(?<!\d)\d{3,4}-\d{7,8}(?!\d)", lambda m: digits(m.group()), text)
    text = re.sub(r"(?<!\d)\d{3}-\d{3,4}-\d{4}(?!\d)", lambda m: digits(m.group()), text)
    text = re.sub(r"((?:" + _CODE_WORDS + r")(?:是|为|:|,|，)?\s*)(\d[\d\- ]*\d|\d)",
                  lambda m: m[1] + digits(m[2]), text)
    text = re.sub(r"(?<![\d.])0\d{3,}(?![\d.])", lambda m: digits(m.group()), text)
    text = re.sub(r"(?<![\d.])\d{12,}(?![\d.])", lambda m: digits(m.group()), text)
    # dates: 2023-12-26, 2023/12/26, 2023年12月26日, years read digit by digit
    text = re.sub(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)",
                  lambda m: f"{digits(m[1], False)}年{_cardinal(m[2])}月{_cardinal(m[3])}日", text)
    text = re.sub(r"(?<!\d)(\d{2}|\d{4})年", lambda m: digits(m[1], False) + "年", text)
    text = re.sub(r"(\d{1,2})月(\d{1,2})([日号])", lambda m: f"{_cardinal(m[1])}月{_cardinal(m[2])}{m[3]}", text)
    text = re.sub(r"(?<!\d)(\d{1,2}):(\d{2})(?::(\d{2}))?(?!\d)", _time, text)
    text = re.sub(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", lambda m: m.group().replace(",", ""), text)
    for symbol, name in sorted(_CURRENCY.items(), key=lambda kv: -len(kv[0])):
        text = re.sub(re.escape(symbol) + r"\s?(-?\d+(?:\.\d+)?)", lambda m, n=name: _cardinal(m[1]) + n, text)
    text = re.sub(r"(-?\d+(?:\.\d+)?)\s?%", lambda m: "百分之" + _cardinal(m[1]), text)
    text = re.sub(r"(-?\d+(?:\.\d+)?)\s?‰", lambda m: "千分之" + _cardinal(m[1]), text)
    text = re.sub(r"(?<![\d/])(\d+)/(\d+)(?![\d/])", lambda m: f"{_cardinal(m[2])}分之{_cardinal(m[1])}", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s?[-~～至]\s?(\d+(?:\.\d+)?)",
                  lambda m: f"{m[1]}到{m[2]}", text)
    text = _UNIT_RX.sub(lambda m: _cardinal(m[1]) + _UNITS[m[2]], text)
    text = re.sub(r"(?<![\dA-Za-z.])[-−](\d)", r"负\1", text)
    text = re.sub(r"(\d+)(?:st|nd|rd|th)\b", lambda m: "第" + _cardinal(m[1]), text)
    text = re.sub(r"负?\d+(?:\.\d+)?", lambda m: _cardinal(m.group().replace("负", "-")), text)
    return text


def map_punctuation(text: str) -> str:
    """Map Chinese/full-width punctuation onto the 7 model marks, 嗯->恩, 呣->母 (spec §7.5)."""
    return _PUNCT_RX.sub(lambda m: _PUNCT_MAP[m.group()], text)


def normalize(text: str) -> tuple[str, list[str]]:
    """Normalise Chinese text for g2p.

    Returns (norm_text, removed): norm_text holds only U+4E00-U+9FA5 and the 7 punctuation marks;
    removed lists deleted characters other than whitespace and Latin letters.
    """
    text = map_punctuation(normalize_numbers(text))
    removed = [c for c in _KEEP_RX.findall(text) if not c.isspace()]
    return _KEEP_RX.sub("", text), removed
