"""Per-voice pronunciation dictionary (Data/<voice>/userdict.txt), applied before g2p.

One entry per line, the word and its pronunciation separated by a TAB (or, for words without spaces,
the first run of spaces); `#` starts a comment. The pronunciation's form says its language:

    重庆	chong2 qing4          Chinese: toned pinyin, one syllable per character (ü as v or ü)
    東京	トーキョー/0            Japanese: kana reading, optional "/accent" (nucleus mora, 0 = flat)
    Koe	K OW1 EY0              English: ARPAbet with stress digits on vowels

A line that cannot be read raises KoeError naming file:line and the expected form.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vits.errors import KoeError

_FIX = ("write `word<TAB>pronunciation`: toned pinyin per character (重庆\tchong2 qing4), "
        "kana with optional /accent (東京\tトーキョー/0) or ARPAbet (Koe\tK OW1 EY0)")
_PINYIN_RX = re.compile(r"^[a-zü:]+[1-5]$")
_KANA_RX = re.compile(r"^[\u3041-\u3096\u30a1-\u30fa\u30fc]+$")
_ARPA_RX = re.compile(r"^[A-Z]{1,2}[0-2]?$")


@dataclass
class UserDict:
    """Pronunciations by language.

    zh: word -> [(initial, TONE3 final)] per character. ja: word -> (katakana, accent or None).
    en: lower-case word -> ARPAbet. source: the file it came from.
    """

    zh: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    ja: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    en: dict[str, list[str]] = field(default_factory=dict)
    source: str = "<string>"

    def __len__(self) -> int:
        return len(self.zh) + len(self.ja) + len(self.en)

    @classmethod
    def load(cls, path: str | os.PathLike) -> UserDict:
        """Read a dictionary file; a missing file is an empty dictionary.

        Raises KoeError for unreadable files or bad lines (file:line, the problem and the fix).
        """
        path = Path(path)
        if not path.exists():
            return cls(source=str(path))
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise KoeError(f"cannot read the pronunciation dictionary ({exc})", where=str(path),
                           fix="save it as UTF-8 text") from None
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> UserDict:
        """Parse dictionary text (see the module docstring); raises KoeError naming source:line."""
        out = cls(source=source)
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{source}:{number}"
            if "\t" in line:
                word, _, pron = line.partition("\t")
            else:
                parts = line.split(None, 1)
                word, pron = (parts + [""])[:2]
            word, pron = word.strip(), pron.strip()
            if not word or not pron:
                raise KoeError(f"line {raw.strip()!r} has no pronunciation", where=where, fix=_FIX)
            out._add(word, pron, where)
        return out

    def _add(self, word: str, pron: str, where: str) -> None:
        tokens = pron.split()
        if all(_PINYIN_RX.match(t) for t in tokens):
            self.zh[word] = _parse_pinyin(word, tokens, where)
        elif _KANA_RX.match(re.split(r"[/\s]", pron)[0]):
            self.ja[word] = _parse_kana(pron, where)
        elif all(_ARPA_RX.match(t) for t in tokens):
            self.en[word.lower()] = _parse_arpabet(tokens, where)
        else:
            raise KoeError(f"cannot tell what {pron!r} is (for {word!r})", where=where, fix=_FIX)


def _parse_pinyin(word: str, syllables: list[str], where: str) -> list[tuple[str, str]]:
    from vits.text.zh.g2p import is_han, split_pinyin, syllable_phones

    if not all(is_han(c) for c in word):
        raise KoeError(f"pinyin given for {word!r}, which is not all Chinese characters", where=where,
                       fix="use pinyin only for Chinese words; English words take ARPAbet")
    if len(syllables) != len(word):
        raise KoeError(f"{word!r} has {len(word)} characters but {len(syllables)} pinyin syllables",
                       where=where, fix="give one toned syllable per character, e.g. 重庆\tchong2 qing4")
    out: list[tuple[str, str]] = []
    for syllable in syllables:
        parts = split_pinyin(syllable)
        if parts is None or syllable_phones(parts[0], parts[1]) is None:
            raise KoeError(f"{syllable!r} is not a Mandarin syllable", where=where,
                           fix="check the spelling (lv4 or lü4 for 绿) and end each syllable with its tone 1-5")
        out.append((parts[0], parts[1] + parts[2]))
    return out


def _parse_kana(pron: str, where: str) -> tuple[str, int | None]:
    from vits.text.ja.kana import hira_to_kata, kana_to_phones, mora_count

    m = re.fullmatch(r"(\S+?)(?:\s*[/\s]\s*(-?\d+))?", pron)
    if not m:
        raise KoeError(f"cannot read the kana reading {pron!r}", where=where, fix=_FIX)
    kana = hira_to_kata(m[1])
    _, unknown = kana_to_phones(kana)
    if unknown:
        raise KoeError(f"the reading {pron!r} has characters that are not kana: {''.join(unknown)}",
                       where=where, fix="write the reading in katakana or hiragana")
    accent = int(m[2]) if m[2] is not None else None
    if accent is not None and not 0 <= accent <= mora_count(kana):
        raise KoeError(f"accent {accent} is outside 0..{mora_count(kana)} (the morae of {kana})",
                       where=where, fix="give the mora after which the pitch falls, 0 for a flat word")
    return kana, accent


def _parse_arpabet(tokens: list[str], where: str) -> list[str]:
    from vits.text.en.g2p import _ARPABET_BASE

    bad = [t for t in tokens if t.rstrip("012") not in _ARPABET_BASE]
    if bad:
        raise KoeError(f"not ARPAbet phones: {' '.join(bad)}", where=where,
                       fix="use CMU ARPAbet (AA AE AH ... ZH) with stress 0-2 on vowels, e.g. K OW1 EY0")
    return tokens
