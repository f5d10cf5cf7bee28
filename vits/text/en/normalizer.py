"""English text normalisation: numbers, dates, times, money, units, phone numbers, punctuation."""

from __future__ import annotations

import re
import unicodedata

from vits.symbols import PUNCTUATION

_PUNCT_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    "...": "…", "···": "…", "・・・": "…", "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'", "`": "'",
    "（": "'", "）": "'", "(": "'", ")": "'", "《": "'", "》": "'", "【": "'", "】": "'", "[": "'", "]": "'",
    "—": "-", "–": "-", "−": "-", "～": "-", "~": "-", "「": "'", "」": "'", ":": ",", ";": ",", "«": "'",
    "»": "'", "{": "'", "}": "'", "<": "'", ">": "'",
}
_PUNCT_RX = re.compile("|".join(re.escape(p) for p in sorted(_PUNCT_MAP, key=len, reverse=True)))
_KEEP_RX = re.compile(r"[^A-Za-z\s" + re.escape("".join(PUNCTUATION)) + r"]")

_ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "st": "saint", "prof": "professor",
    "jr": "junior", "sr": "senior", "vs": "versus", "etc": "et cetera", "approx": "approximately",
    "no": "number", "co": "company", "ltd": "limited", "mt": "mount", "ft": "feet", "lbs": "pounds",
}
_DIGIT = "zero one two three four five six seven eight nine".split()
_MONTHS = ("January February March April May June July August September October November "
           "December").split()
_CURRENCY = {"$": ("dollar", "cent"), "£": ("pound", "penny"), "€": ("euro", "cent"), "¥": ("yen", ""),
             "₩": ("won", ""), "₹": ("rupee", "paisa")}
_UNITS = {
    "km/h": "kilometers per hour", "mph": "miles per hour", "m/s": "meters per second", "kg": "kilograms",
    "mg": "milligrams", "g": "grams", "km": "kilometers", "cm": "centimeters", "mm": "millimeters",
    "m": "meters", "ml": "milliliters", "mL": "milliliters", "L": "liters", "°C": "degrees Celsius",
    "℃": "degrees Celsius", "°F": "degrees Fahrenheit", "°": "degrees", "GB": "gigabytes", "MB": "megabytes",
    "KB": "kilobytes", "TB": "terabytes", "kHz": "kilohertz", "MHz": "megahertz", "GHz": "gigahertz",
    "Hz": "hertz", "kW": "kilowatts", "W": "watts", "mAh": "milliamp hours", "lb": "pounds", "oz": "ounces",
    "ft": "feet", "in": "inches", "h": "hours", "min": "minutes", "mins": "minutes", "s": "seconds",
    "ms": "milliseconds", "tbsp": "tablespoons", "tsp": "teaspoons", "hr": "hours", "hrs": "hours",
    "sec": "seconds", "secs": "seconds",
}
_SINGULAR = {"feet": "foot", "inches": "inch", "degrees Celsius": "degree Celsius",
             "degrees Fahrenheit": "degree Fahrenheit"}
# short units that are also words ("in", "m", "s") only count when glued to the number
_GLUED_ONLY = {"in", "s", "h", "m", "g", "L", "W", "ms", "ft", "lb", "oz"}
# kings, queens and popes take "the" + ordinal (Henry II, Elizabeth I); other words a cardinal (World War II)
_REGNAL_NAMES = ("Henry Louis Elizabeth George Charles Edward William James Richard John Mary Peter Paul Pius "
                 "Benedict Leo Gregory Alexander Napoleon Ramses Frederick Philip Catherine Victoria Anne Nicholas "
                 "Ivan Alfonso Ferdinand Constantine Innocent Clement Urban Boniface Sixtus Francis Joseph Wilhelm "
                 "Otto Harald Olaf Gustav Carl Rudolf Juan Felipe Carlos Ludwig Friedrich Stephen Malcolm David "
                 "Robert Alfred Edmund Harold Matilda Isabella Margaret Christian Frederik Haakon Umberto "
                 "Vittorio Pedro Manuel Sancho Casimir Sigismund Władysław Selim Mehmed Suleiman Rama").split()
_NUMBERED_WORDS = ("War Chapter Part Volume Book Act Scene Section Phase Level Episode Type Class Grade Stage "
                   "Bowl Apollo Rocky Article Title Appendix Round Tier Category Series").split()
# after "Part I" these make the I the pronoun ("Part I think ...")
_PRONOUN_NEXT = set("think am was have had will would can could know want need like love guess mean said do did "
                    "feel hope see saw believe got should must may might just really also never always 'm".split())
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
_ROMAN_RX = re.compile(r"\b(" + "|".join(_REGNAL_NAMES + _NUMBERED_WORDS)
                       + r")\s+(M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3}))\b(?![-'])")
_UNIT_RX = re.compile(r"(-?\d+(?:\.\d+)?)(?:\s?(" + "|".join(
    re.escape(u) for u in sorted(set(_UNITS) - _GLUED_ONLY, key=len, reverse=True)) + r")|("
    + "|".join(re.escape(u) for u in sorted(_GLUED_ONLY, key=len, reverse=True)) + r"))(?![A-Za-z])")


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ["", "thousand", "million", "billion", "trillion", "quadrillion"]
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def _words(n: int) -> str:
    """Cardinal number in words without "and" or hyphens: 123 -> "one hundred twenty three"."""
    if n < 1000:
        return " ".join(_below_thousand(n))
    groups: list[str] = []
    scale = 0
    while n and scale < len(_SCALES):
        n, chunk = divmod(n, 1000)
        if chunk:
            groups.insert(0, " ".join(_below_thousand(chunk) + ([_SCALES[scale]] if scale else [])))
        scale += 1
    return " ".join(groups)


def digits(text: str) -> str:
    """Read a digit string one digit at a time (phone numbers, codes)."""
    return " ".join(_DIGIT[int(c)] for c in text if c.isdigit())


def cardinal(text: str) -> str:
    """A number string ("1,234", "-3.14", "2023") as English words."""
    value = text.replace(",", "")
    sign = ""
    if value.startswith("-"):
        sign, value = "minus ", value[1:]
    integer, _, fraction = value.partition(".")
    if not integer.isdigit():
        integer = "0"
    n = int(integer)
    if len(integer) > 15:
        spoken = digits(integer)
    elif not fraction and "," not in text and (1100 <= n <= 1999 or 2010 <= n <= 2099) and len(integer) == 4:
        spoken = _year(n)
    else:
        spoken = _words(n)
    if fraction:
        spoken += " point " + digits(fraction)
    return sign + spoken


def _year(n: int) -> str:
    high, low = divmod(n, 100)
    if low == 0:
        return _words(high) + " hundred"
    return _words(high) + " " + (("oh " + _words(low)) if low < 10 else _words(low))


def _ordinal(n: int) -> str:
    words = _words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _money(m: re.Match) -> str:
    major, minor = _CURRENCY[m[1]]
    amount = m[2].replace(",", "")
    whole, _, cents = amount.partition(".")
    n = int(whole or 0)
    unit = major if n == 1 or major in ("yen", "won") else major + "s"
    out = f"{_words(n)} {unit}"
    if cents and minor and int(cents[:2].ljust(2, "0")):
        c = int(cents[:2].ljust(2, "0"))
        sub = minor if c == 1 else ("pence" if minor == "penny" else minor + "s")
        out += f" and {_words(c)} {sub}"
    elif cents and not minor:
        out = f"{cardinal(amount)} {major}"
    return out


def _time(m: re.Match) -> str:
    hour, minute, suffix = int(m[1]), int(m[2]), (m[4] or "").replace(".", "").lower()
    if minute == 0:
        out = _words(hour) + (" o'clock" if not suffix else "")
    elif minute < 10:
        out = f"{_words(hour)} oh {_words(minute)}"
    else:
        out = f"{_words(hour)} {_words(minute)}"
    if m[3]:
        out += f" and {_words(int(m[3]))} seconds"
    return out + (" " + " ".join(suffix) if suffix else "")


def _fraction(m: re.Match) -> str:
    num, den = int(m[1]), int(m[2])
    if den == 0:
        return f"{_words(num)} over zero"
    if den == 2:
        name = "half" if num == 1 else "halves"
    elif den == 4:
        name = "quarter" if num == 1 else "quarters"
    else:
        name = _ordinal(den) + ("" if num == 1 else "s")
    return f"{_words(num)} {name}"


def _unit(m: re.Match) -> str:
    name = _UNITS[m[2] or m[3]]
    if m[1] in ("1", "-1"):
        name = _SINGULAR.get(name, name[:-1] if name.endswith("s") and " " not in name else name)
    return f"{cardinal(m[1])} {name}"


def _date(m: re.Match) -> str:
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    if not 1 <= month <= 12:
        return m.group()
    return f"{_MONTHS[month - 1]} {_ordinal(day)}, {cardinal(str(year))}"


def _roman(numeral: str) -> int:
    values = [_ROMAN_VALUES[c] for c in numeral]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def _roman_after(m: re.Match) -> str:
    word, numeral = m[1], m[2]
    following = re.match(r"\s*([A-Za-z']+)", m.string[m.end():])
    if not numeral or (numeral == "I" and word not in _REGNAL_NAMES and following
                       and following[1].lower() in _PRONOUN_NEXT):
        return m.group()
    n = _roman(numeral)
    return f"{word} the {_ordinal(n)}" if word in _REGNAL_NAMES else f"{word} {_words(n)}"


def _decade(number: str) -> str:
    """1990 -> "nineteen nineties", 80 -> "eighties", 2000 -> "two thousands"."""
    spoken = (cardinal(number) if len(number) == 4 else _words(int(number))).split()
    last = spoken[-1]
    spoken[-1] = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return " ".join(spoken)


def _street(m: re.Match) -> str:
    full = {"St": "Street", "Ave": "Avenue", "Rd": "Road", "Blvd": "Boulevard", "Ln": "Lane"}[m[2]]
    return f"{m[1]} {full}" + ("." if m[3] else "")


def normalize_numbers(text: str) -> str:
    """Spell out digits in English (dates, times, money, %, fractions, ordinals, units, phone numbers),
    Roman numerals after names (Henry II, World War II), decades (the 1990s) and a.m./p.m."""
    text = unicodedata.normalize("NFKC", text)
    text = _ROMAN_RX.sub(_roman_after, text)
    # "Baker St." is a street (St. before a name is Saint); the dot stays when a sentence ends there
    text = re.sub(r"\b([A-Z][a-z]+) (St|Ave|Rd|Blvd|Ln)\.(\s*$|\s+(?=[A-Z]))?", _street, text)
    text = re.sub(r"\bWi-?Fi\b", "WiFi", text, flags=re.IGNORECASE)
    text = re.sub(r"(?<![\d.,])(1[1-9]\d0|20\d0)'?s\b", lambda m: _decade(m[1]), text)  # the 1990s
    text = re.sub(r"(\b(?:the|mid|early|late|her|his|their|my|your)[ -]|')(\d0)'?s\b",  # the 80s, in her 30s
                  lambda m: m[1].replace("'", "") + _decade(m[2]), text)
    text = re.sub(r"(\d\s?(?:min|mins|tbsp|tsp|hr|hrs|sec|secs|oz|lb|lbs|ft|in))\.(?=\s+[a-z0-9])", r"\1", text)
    text = re.sub(r"(\d)\s?([AaPp])\.?[Mm]\.?(?![A-Za-z])(?=\s+[a-z0-9])", lambda m: f"{m[1]} {m[2].lower()} m", text)
    text = re.sub(r"(\d)\s?([AaPp])\.?[Mm](?![A-Za-z])", lambda m: f"{m[1]} {m[2].lower()} m", text)
    text = re.sub(r"(?<!\d)(?:\+\d{1,3}[ -]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)",
                  lambda m: ", ".join(digits(g) for g in re.findall(r"\d+", m.group())), text)
    text = re.sub(r"(?<![\d.])0\d{3,}(?![\d.])|(?<![\d.,])\d{9,}(?![\d.,])", lambda m: digits(m.group()), text)
    text = re.sub(r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)", _date, text)
    text = re.sub(r"(?<!\d)(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s?([AaPp]\.?[Mm]\.?)(?![A-Za-z]))?", _time, text)
    text = re.sub(r"([$£€¥₩₹])\s?(\d[\d,]*(?:\.\d+)?)", _money, text)
    text = re.sub(r"(-?\d+(?:\.\d+)?)\s?%", lambda m: cardinal(m[1]) + " percent", text)
    text = re.sub(r"(?<![\d/])(\d+)/(\d+)(?![\d/])", _fraction, text)
    text = re.sub(r"(\d+)(?:st|nd|rd|th)\b", lambda m: _ordinal(int(m[1])), text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s?[-–~]\s?(\d+(?:\.\d+)?)(?=\s?[A-Za-z%°℃])", r"\1 to \2", text)
    text = _UNIT_RX.sub(_unit, text)
    text = re.sub(r"(?<![\dA-Za-z])-(\d)", r"minus \1", text)
    text = re.sub(r"\d[\d,]*(?:\.\d+)?",
                  lambda m: " " + cardinal(m.group().rstrip(",")) + ("," if m.group().endswith(",") else "") + " ", text)
    text = re.sub(r"\s*&\s*", " and ", text)
    text = re.sub(r"\s*\+\s*", " plus ", text)
    text = re.sub(r"\s*=\s*", " equals ", text)
    text = re.sub(r"\s*@\s*", " at ", text)
    return text


def _expand_abbreviations(text: str) -> str:
    text = re.sub(r"\be\.g\.", "for example", text, flags=re.IGNORECASE)
    text = re.sub(r"\bi\.e\.", "that is", text, flags=re.IGNORECASE)

    def repl(m: re.Match) -> str:
        word = m[1]
        full = _ABBREVIATIONS[word.lower()]
        return full.capitalize() if word[0].isupper() else full

    return re.sub(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.(?=\s|$)", repl, text, flags=re.IGNORECASE)


def map_punctuation(text: str) -> str:
    """Map quotes, brackets, dashes and full-width marks onto the 7 model marks."""
    return _PUNCT_RX.sub(lambda m: _PUNCT_MAP[m.group()], text)


def strip_accents(text: str) -> str:
    """café -> cafe (combining marks dropped after NFKD)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) != "Mn")


def normalize(text: str) -> tuple[str, list[str]]:
    """Normalise English text for g2p.

    Returns (norm_text, removed): norm_text holds ASCII letters, apostrophes, single spaces and the 7
    punctuation marks, with a space after , . ! ? before a word; removed lists deleted characters.
    """
    text = _expand_abbreviations(normalize_numbers(text))
    text = map_punctuation(strip_accents(text))
    removed = [c for c in _KEEP_RX.findall(text) if not c.isspace()]
    text = _KEEP_RX.sub(" ", text)
    text = re.sub(r"([,.!?…])(?=[A-Za-z])", r"\1 ", text)
    text = re.sub(r"\s+([,.!?…])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip(), removed
