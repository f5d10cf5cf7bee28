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
_CODE_WORDS = ("电话|号码|手机|热线|编号|验证码|尾号|账号|帐号|房间|工号|学号|车次|航班|邮编|密码|QQ|微信|分机|订单|单号|"
               "快递|运单|卡号|身份证|座机|拨打|拨|呼叫")
# digits before these name a room, a dorm, a train or a flight: read digit by digit (305房间, 301室)
_CODE_NOUNS = "房间|号房|室|宿舍|病房|教室|次列车|次航班"
# service numbers, read digit by digit after a dialling word or before what they are for (打110, 120急救);
# elsewhere they are quantities (110人, 考了120)
_SERVICE_NUMBERS = "110|119|120|122|114|12315|12345|12306|12110|10086|10010|10000|95588|95533|95555"
_SERVICE_BEFORE = "打|拨|叫|呼|报警|急救|求救|求助|致电|联系|电话|热线"
_SERVICE_AFTER = "报警|急救|求救|求助|查号|热线|电话|专线|救护车|火警|匪警|服务|客服|问问|咨询|投诉|叫"
# measure words after which the number 2 is read 两 (两件, 两升, 两点), not 二
_MEASURE_WORDS = ("个|件|本|张|只|条|位|名|次|遍|趟|天|岁|斤|升|公斤|千克|克|米|公里|厘米|毫米|块|元|毛|分钟|小时|"
                  "周|星期|杯|瓶|碗|辆|台|部|双|对|套|份|家|所|间|点|种|样|场|节|首|封|把|颗|棵|匹|头|支|根|片|声|"
                  "句|段|篇|批|群|座|架|艘|口|吨|倍|成|毫升|层楼|万|千|亿|年(?!级)|月(?=[里内后前份])|国|门|道|"
                  "人|盒|包|袋|箱|桌|轮|圈|步|下|页|户|队|组|排|扇|幅|分(?!之)")
_QUANTITY_AFTER = re.compile(r"\s?(?:" + _MEASURE_WORDS + r")")
_TEMPERATURE_UNITS = {"°C", "℃", "°F", "°"}


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
    if out.startswith(("二千", "二万", "二亿")):  # 两千, 两万: 二 there is never said
        out = "两" + out[1:]
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


def _clock(hour: str, minute: str, second: str | None, whole: bool) -> str:
    """A time of day: 9:30 -> 九点三十分; minute 00 -> 九点 (九点整 when `whole`: the time stands alone)."""
    out = ("两" if int(hour) == 2 else _cardinal(hour)) + "点"
    if int(minute) == 0 and not second:
        return out + ("整" if whole else "")
    out += ("零" if minute.startswith("0") and minute != "00" else "") + _cardinal(minute) + "分"
    if second:
        out += _cardinal(second) + "秒"
    return out


# words near a colon that make it a score or a ratio (3:2 -> 三比二), not a time
_SCORE_BEFORE = re.compile(r"(?:(?:比分|比赛|比例|比率|战胜|击败|赢了|输了|打出|配比)[^,，。；;]{0,3}|(?<![可所])以|按)$")
_SCORE_AFTER = re.compile(r"^\s?(?:获胜|取胜|战胜|击败|胜|负|落败|告负|领先|结束|赢|输|平|的比|的比例|的比分|比例|配比)")


def _colon(m: re.Match) -> str:
    """h:mm(:ss) as a time of day, or a:b as a score or ratio (by the words around it)."""
    text = m.string
    left, right, second = m[1], m[2], m[3]
    before, after = text[max(0, m.start() - 8):m.start()], text[m.end():m.end() + 4]
    is_time = len(right) == 2 and int(left) <= 24 and int(right) < 60
    if second is None and (not is_time or _SCORE_BEFORE.search(before) or _SCORE_AFTER.match(after)):
        return f"{_cardinal(left)}比{_cardinal(right)}"
    whole = not after or not (after[0].isalnum() or "\u4e00" <= after[0] <= "\u9fa5")
    return _clock(left, right, second, whole)


def _quantity(m: re.Match) -> str:
    """A bare number; 2 before a measure word is 两 (两件), except after 第 (第二次)."""
    number = m.group()
    text = m.string
    if number == "2" and _QUANTITY_AFTER.match(text, m.end()) and not text[:m.start()].endswith("第"):
        return "两"
    return _cardinal(number.replace("负", "-"))


def _unit(m: re.Match) -> str:
    number, unit = m[1], m[2]
    if unit in _TEMPERATURE_UNITS and number.startswith("-"):  # -5℃: 零下五摄氏度
        return "零下" + _cardinal(number[1:]) + _UNITS[unit]
    if number == "2" and unit in ("kg", "g", "km", "m", "L", "ml", "mL", "h", "mg", "cm", "mm", "min"):
        return "两" + _UNITS[unit]
    return _cardinal(number) + _UNITS[unit]


def normalize_numbers(text: str) -> str:
    """Spell out digits in Chinese (dates, times, money, %, fractions, ranges, units, phone numbers)."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"(\d)\s*[xX×]\s*(\d)", r"\1乘\2", text)
    # phone numbers and codes, digit by digit
    text = re.sub(r"(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)", lambda m: digits(m.group()), text)
    text = re.sub(r"(?<!\d)\d{3,4}-\d{7,8}(?!\d)", lambda m: digits(m.group()), text)
    text = re.sub(r"(?<!\d)\d{3}-\d{3,4}-\d{4}(?!\d)", lambda m: digits(m.group()), text)
    text = re.sub(r"((?:" + _CODE_WORDS + r")(?:号码|号)?(?:是|为|:|,|，)?\s*)(\d[\d\- ]*\d|\d)",
                  lambda m: m[1] + digits(m[2]), text)
    text = re.sub(r"(?<![\d.])(\d{3,5})(?=" + _CODE_NOUNS + r")", lambda m: digits(m[1]), text)
    text = re.sub(r"((?:" + _SERVICE_BEFORE + r")(?:了|过)?(?:是|:|,)?\s?)(" + _SERVICE_NUMBERS + r")(?![\d.,A-Za-z])",
                  lambda m: m[1] + digits(m[2]), text)
    text = re.sub(r"(?<![\d.,第])(" + _SERVICE_NUMBERS + r")(?=\s?(?:" + _SERVICE_AFTER + r"))",
                  lambda m: digits(m[1]), text)
    text = re.sub(r"(?<![\d.])0\d{3,}(?![\d.])", lambda m: digits(m.group()), text)
    text = re.sub(r"(?<![\d.])\d{12,}(?![\d.])", lambda m: digits(m.group()), text)
    # dates: 2023-12-26, 2023/12/26, 2023年12月26日, years read digit by digit
    text = re.sub(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)",
                  lambda m: f"{digits(m[1], False)}年{_cardinal(m[2])}月{_cardinal(m[3])}日", text)
    text = re.sub(r"(?<!\d)(\d{4})\s?[-~～至到]\s?(\d{4})年",
                  lambda m: f"{digits(m[1], False)}到{digits(m[2], False)}年", text)
    text = re.sub(r"(?<!\d)(\d{2}|\d{4})年", lambda m: digits(m[1], False) + "年", text)
    text = re.sub(r"(\d{1,2})月(\d{1,2})([日号])", lambda m: f"{_cardinal(m[1])}月{_cardinal(m[2])}{m[3]}", text)
    text = re.sub(r"(?<!\d)(\d{1,2}):(\d{2})\s?[-~～至到]\s?(\d{1,2}):(\d{2})(?!\d)",
                  lambda m: _clock(m[1], m[2], None, False) + "到" + _clock(m[3], m[4], None, False), text)
    text = re.sub(r"(?<![\d:])(\d{1,3}):(\d{1,3})(?::(\d{2}))?(?![\d:])", _colon, text)
    text = re.sub(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", lambda m: m.group().replace(",", ""), text)
    for symbol, name in sorted(_CURRENCY.items(), key=lambda kv: -len(kv[0])):
        text = re.sub(re.escape(symbol) + r"\s?(-?\d+(?:\.\d+)?)", lambda m, n=name: _cardinal(m[1]) + n, text)
    text = re.sub(r"(-?)(\d+(?:\.\d+)?)\s?%", lambda m: ("负" if m[1] else "") + "百分之" + _cardinal(m[2]), text)
    text = re.sub(r"(-?)(\d+(?:\.\d+)?)\s?‰", lambda m: ("负" if m[1] else "") + "千分之" + _cardinal(m[2]), text)
    text = re.sub(r"(?<![\d/])(\d+)/(\d+)(?![\d/])", lambda m: f"{_cardinal(m[2])}分之{_cardinal(m[1])}", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s?[-~～至]\s?(\d+(?:\.\d+)?)",
                  lambda m: f"{m[1]}到{m[2]}", text)
    text = _UNIT_RX.sub(_unit, text)
    text = re.sub(r"(?<![\dA-Za-z.])[-−](\d)", r"负\1", text)
    text = re.sub(r"(\d+)(?:st|nd|rd|th)\b", lambda m: "第" + _cardinal(m[1]), text)
    text = re.sub(r"负?\d+(?:\.\d+)?", _quantity, text)
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
