"""Text frontend: raw text in Chinese, Japanese, English, Korean or a mix -> phones, tones, word2ph (spec §7).

    clean_text("你好呀，Hello世界！", "ZH") -> [Cleaned(ZH "你好呀,"), Cleaned(EN "Hello"), Cleaned(ZH "世界!")]

Languages: "ZH", "JP", "EN", "KO" (the host language: its normaliser reads digits, dates, money...; runs in
another script become their own segments: Latin words in Chinese/Japanese text are read in English,
Chinese characters in English text in Chinese, kana in Japanese, Hangul in Korean), "AUTO" (host = the
script with the most syllables; Han characters are Japanese when the text has kana) and "MIX" (markup
`[ZH]...[ZH][EN]...[EN][KO]...[KO]` or `<zh>...<en>...<ko>...` with optional `</zh>`; unmarked text is AUTO).

Defined results for odd input (never an exception other than KoeError for a bad language):
  * empty, whitespace, only punctuation, only emoji -> [] (nothing to read; a TextWarning says so
    unless the text was blank). Callers that must produce audio raise KoeError("nothing to read").
  * characters no language reads (emoji, Cyrillic, lone jamo, symbols) are removed; one TextWarning
    names them.
  * long text is processed whole (split it with `split_sentences` for synthesis).
"""

from __future__ import annotations

import re
import unicodedata
import warnings

from vits.errors import KoeError
from vits.text.common import Cleaned, TextWarning, distribute_phone
from vits.text.userdict import UserDict

__all__ = ["Cleaned", "TextWarning", "UserDict", "clean_text", "clean_single", "split_sentences", "split_markup",
           "split_scripts", "detect_language", "distribute_phone", "LANGUAGES"]

LANGUAGES = ("ZH", "JP", "EN", "KO", "AUTO", "MIX")
_LANG_ALIASES = {"ZH": "ZH", "CN": "ZH", "ZH-CN": "ZH", "JP": "JP", "JA": "JP", "EN": "EN", "KO": "KO", "KR": "KO",
                 "AUTO": "AUTO", "MIX": "MIX"}
_TAG_RX = re.compile(r"\[(ZH|JP|JA|EN|KO)\]|<(/?)(zh|jp|ja|en|ko)>", re.IGNORECASE)


# --- character classes ---------------------------------------------------------------------------

def _char_class(c: str) -> str:
    """H (Han), K (kana), G (Hangul syllable), L (Latin letter), N (neutral: digit, space, punctuation),
    X (unreadable)."""
    o = ord(c)
    if 0xAC00 <= o <= 0xD7A3:
        return "G"
    if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or c in "々〆〇":
        return "H"
    if 0x3041 <= o <= 0x30FF and c not in "・゠" or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F:
        return "K"
    cat = unicodedata.category(c)
    if cat.startswith("L"):
        return "L" if "LATIN" in unicodedata.name(c, "") else "X"
    if cat.startswith(("N", "P", "Z")) or c in "\n\r\t$¥￥£€₩₹%‰°℃+=&@~":
        return "N" if not (cat == "No" and not c.isdigit()) else "X"
    if cat in ("Mn", "Mc") and c in "\u3099\u309a":
        return "K"
    return "X"


def detect_language(text: str) -> str:
    """The dominant language of `text` by script: "ZH", "JP", "EN" or "KO" ("ZH" when nothing decides).

    Kana anywhere makes Han characters Japanese; Latin letters count one syllable per three letters;
    Hangul syllables count one each.
    """
    counts = {"H": 0, "K": 0, "L": 0, "G": 0}
    for c in text:
        k = _char_class(c)
        if k in counts:
            counts[k] += 1
    cjk = counts["H"] + counts["K"]
    if counts["G"] and counts["G"] >= cjk and counts["G"] >= counts["L"] / 3:
        return "KO"
    if cjk == 0 and counts["L"] == 0:
        return "ZH"
    if counts["L"] / 3 > cjk:
        return "EN"
    return "JP" if counts["K"] else "ZH"


def split_markup(text: str) -> list[tuple[str | None, str]]:
    """Split `[ZH]..[ZH][EN]..[EN]` / `<zh>..<en>..` markup into (language or None, text) pieces.

    A bracket tag toggles its language (the second [ZH] closes the first); `<xx>` opens a language that
    lasts until the next tag, `</xx>` closes it. Text outside any tag gets None (detect it).
    """
    out: list[tuple[str | None, str]] = []
    current: str | None = None
    pos = 0
    for m in _TAG_RX.finditer(text):
        if m.start() > pos:
            out.append((current, text[pos:m.start()]))
        pos = m.end()
        if m.group(1):
            lang = _LANG_ALIASES[m.group(1).upper()]
            current = None if current == lang else lang
        else:
            lang = _LANG_ALIASES[m.group(3).upper()]
            current = None if m.group(2) else lang
    if pos < len(text):
        out.append((current, text[pos:]))
    return [(lang, piece) for lang, piece in out if piece]


def split_scripts(text: str, host: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Cut host-language text into (language, text) runs by script; returns (runs, removed chars).

    Latin runs are EN; Hangul runs KO; Han/kana runs are JP if they hold kana or the host is JP, else ZH.
    Digits, spaces and punctuation stay with the run before them (or the first run).
    """
    removed: list[str] = []
    runs: list[list[str]] = []  # [class, text]
    pending = ""
    for c in text:
        k = _char_class(c)
        if k == "X":
            removed.append(c)
            continue
        if k == "N":
            pending += c
            continue
        group = "C" if k in ("H", "K") else k
        if runs and runs[-1][0] == group:
            runs[-1][1] += pending + c
        elif runs:
            runs[-1][1] += pending
            runs.append([group, c])
        else:
            runs.append([group, pending + c])
        pending = ""
    if pending:
        if runs:
            runs[-1][1] += pending
        else:
            runs.append(["N", pending])
    text_has_kana = any(_char_class(c) == "K" for c in text)
    out: list[tuple[str, str]] = []
    for group, piece in runs:
        if group == "L":
            lang = "EN"
        elif group == "G":
            lang = "KO"
        elif group == "C":
            has_kana = any(_char_class(c) == "K" for c in piece)
            lang = "JP" if has_kana or host == "JP" or (host == "EN" and text_has_kana) else "ZH"
        else:
            lang = host
        if out and out[-1][0] == lang:
            out[-1] = (lang, out[-1][1] + piece)
        else:
            out.append((lang, piece))
    return out, removed


# --- per-language cleaning --------------------------------------------------------------------------

def _normalize_numbers(text: str, host: str) -> str:
    if host == "ZH":
        from vits.text.zh.normalizer import normalize_numbers
    elif host == "JP":
        from vits.text.ja.normalizer import normalize_numbers
    elif host == "KO":
        from vits.text.ko.normalizer import normalize_numbers
    else:
        from vits.text.en.normalizer import normalize_numbers
    return normalize_numbers(text)


def _clean_one(language: str, text: str, user_dict: UserDict | None) -> tuple[Cleaned, list[str]]:
    if language == "ZH":
        from vits.text.zh.g2p import g2p
        from vits.text.zh.normalizer import normalize

        norm, removed = normalize(text)
        phones, tones, word2ph, unknown = g2p(norm, user_dict.zh if user_dict else None)
        return Cleaned("ZH", norm, phones, tones, word2ph, unknown=unknown), removed
    if language == "JP":
        from vits.text.ja.g2p import g2p
        from vits.text.ja.normalizer import normalize

        norm, removed = normalize(text)
        phones, tones, word2ph, unknown, bert_text = g2p(norm, user_dict.ja if user_dict else None)
        return Cleaned("JP", bert_text, phones, tones, word2ph, unknown=unknown), removed
    if language == "KO":
        from vits.text.ko.g2p import g2p
        from vits.text.ko.normalizer import normalize

        norm, removed = normalize(text)
        phones, tones, word2ph, unknown = g2p(norm)
        return Cleaned("KO", norm, phones, tones, word2ph, unknown=unknown), removed
    from vits.text.en.g2p import g2p
    from vits.text.en.normalizer import normalize

    norm, removed = normalize(text)
    phones, tones, word2ph, word_phones, unknown = g2p(norm, user_dict.en if user_dict else None)
    return Cleaned("EN", norm, phones, tones, word2ph, word_phones=word_phones, unknown=unknown), removed


def clean_text(text: str, language: str = "ZH", user_dict: UserDict | None = None) -> list[Cleaned]:
    """Normalise and phonemise `text`; one Cleaned per single-language segment, in reading order.

    Args:
        text: any string (markup only matters for language "MIX").
        language: "ZH", "JP", "EN", "KO", "AUTO" or "MIX" (case-insensitive; "JA" = "JP", "KR" = "KO").
        user_dict: pronunciations applied before g2p (`UserDict.load(voice_dir / "userdict.txt")`).
    Returns the readable segments; [] when nothing is left to read (see the module docstring).
    Raises KoeError for an unknown language or a non-string text.
    """
    if not isinstance(text, str):
        raise KoeError(f"text must be a string, got {type(text).__name__}", fix="pass the text as str")
    lang = _LANG_ALIASES.get(str(language).strip().upper())
    if lang is None:
        raise KoeError(f"unknown language {language!r}", fix=f"use one of {', '.join(LANGUAGES)}")
    if lang == "MIX":
        pieces = split_markup(text)
    else:
        pieces = [(None if lang == "AUTO" else lang, text)]
    removed: list[str] = []
    out: list[Cleaned] = []
    for host, piece in pieces:
        if not piece.strip():
            continue
        host = host or detect_language(piece)
        piece = _normalize_numbers(piece, host)
        runs, dropped = split_scripts(piece, host)
        removed += dropped
        for run_lang, run_text in runs:
            cleaned, dropped = _clean_one(run_lang, run_text, user_dict)
            removed += [c for c in dropped if not unicodedata.category(c).startswith(("P", "Z"))]
            if cleaned.readable():
                out.append(cleaned)
    if removed:
        names = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in dict.fromkeys(removed))
        warnings.warn(TextWarning(f"removed characters no language can read: {names}"), stacklevel=2)
    if not out and text.strip():
        warnings.warn(TextWarning(f"nothing to read in {text[:40]!r}"), stacklevel=2)
    return out


def clean_single(text: str, language: str, user_dict: UserDict | None = None) -> Cleaned | None:
    """One Cleaned in exactly `language` (ZH/JP/EN/KO), as training lists need (one language per line).

    Unlike clean_text, runs in other scripts are not split off but deleted (as the reference does),
    with a TextWarning naming them. Returns None when nothing readable is left.
    Raises KoeError for a language other than ZH/JP/EN/KO or a non-string text.
    """
    if not isinstance(text, str):
        raise KoeError(f"text must be a string, got {type(text).__name__}", fix="pass the text as str")
    lang = _LANG_ALIASES.get(str(language).strip().upper())
    if lang not in ("ZH", "JP", "EN", "KO"):
        raise KoeError(f"a training line needs one language, got {language!r}", fix="use ZH, JP, EN or KO")
    if not text.strip():
        return None
    cleaned, removed = _clean_one(lang, _normalize_numbers(text, lang), user_dict)
    removed = [c for c in removed if not unicodedata.category(c).startswith(("P", "Z"))]
    if removed:
        names = ", ".join(f"{c!r}" for c in dict.fromkeys(removed))
        warnings.warn(TextWarning(f"removed characters a {lang} line cannot read: {names}"), stacklevel=2)
    return cleaned if cleaned.readable() else None


# --- sentences ---------------------------------------------------------------------------------------

_SENTENCE_RX = re.compile(r"(?<=[。！？!?…\n])[”’」』）)\"']*|(?<=\.)(?=\s|$)[”’\"']*")


# Words whose "." does not end a sentence ("etc." often does, so it is not here).
_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "cf", "no",
                            "fig", "mt", "approx", "dept", "inc", "ltd", "co"})


def _abbreviation_before(text: str, dot: int) -> bool:
    word = re.search(r"([A-Za-z][A-Za-z.]*)$", text[:dot])
    return bool(word) and (word.group(1).lower() in _ABBREVIATIONS or len(word.group(1)) == 1)


def split_sentences(text: str, max_chars: int = 150) -> list[str]:
    """Split text into sentences for synthesis, keeping end punctuation; [] for blank text.

    Ends at 。！？!?… and newlines, and at "." before a space or the end (so 3.14 stays whole), except after
    an abbreviation or an initial ("Dr. Smith", "e.g. this", "J. R. R. Tolkien").
    Sentences longer than max_chars are cut again at commas, then spaces, then hard.
    """
    out: list[str] = []
    start = 0
    for m in _SENTENCE_RX.finditer(text):
        end = m.end()
        if m.start() > 0 and text[m.start() - 1] == "." and _abbreviation_before(text, m.start() - 1):
            continue  # "Dr. Smith", "e.g. this": the sentence goes on
        if end > start:
            out.append(text[start:end])
            start = end
    out.append(text[start:])
    final: list[str] = []
    for s in (s.strip() for s in out):
        if not any(c.isalnum() for c in s):  # only punctuation/space: nothing to say
            continue
        final += _cut_long(s, max_chars)
    return final


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    pieces = re.split(r"(?<=[,，、;；:：])", sentence)
    if len(pieces) == 1:
        pieces = re.split(r"(?<=\s)", sentence)
    out: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + len(piece) > max_chars:
            out.append(current.strip())
            current = ""
        current += piece
        while len(current) > max_chars:
            out.append(current[:max_chars].strip())
            current = current[max_chars:]
    if current.strip():
        out.append(current.strip())
    return [p for p in out if p]
