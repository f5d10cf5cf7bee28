"""Score the text frontend against a hand-written reading corpus (tests/data/frontend_corpus/*.tsv).

One case per line, `text<TAB>expected reading`; `#` starts a comment line. The file name's prefix is the
language (`zh_`, `en_`, `ja`, `ko`). Expected readings:
  * zh: toned pinyin per syllable after sandhi, punctuation left out ("yi1 jiu3 jiu3 qi1 nian2");
    `a/b` accepts either (third-tone sandhi across words, where careful readers differ).
  * en: the words as read, case-insensitive, punctuation left out; `{r eh d}` is the phones (no stress)
    of the word at that place, to pin a heteronym or an acronym.
  * ja: the model phones, space-separated, without the boundary "_" and punctuation.
  * ko: the pronunciation written in Hangul (학교 → 학꾜, 10일 → 시빌); spaces and punctuation ignored.
A case is right only when the whole sentence is right.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from vits.symbols import PUNCTUATION

_READING_RX = re.compile(r"\{[^}]*\}|[^\s{}]+")


@dataclass
class Case:
    """One corpus line: where it is, the text, the expected reading."""

    file: str
    line: int
    text: str
    expected: str


@dataclass
class Result:
    """A scored case: `got` is the frontend's reading in the corpus notation."""

    case: Case
    got: str
    right: bool


def load_corpus(path: str | Path) -> list[Case]:
    """The cases of one .tsv file. Raises ValueError naming file and line for a line without a tab."""
    path = Path(path)
    out: list[Case] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        text, tab, expected = line.partition("\t")
        if not tab or not expected.strip():
            raise ValueError(f"{path}:{number}: expected 'text<TAB>reading', got {line!r}")
        out.append(Case(path.name, number, text.strip(), expected.strip()))
    return out


def _zh_syllables(seg) -> list[str]:
    from vits.text.zh.opencpop import PINYIN_TO_PHONES

    reverse: dict[tuple[str, str], str] = {}
    for pinyin, phones in PINYIN_TO_PHONES.items():
        reverse.setdefault(phones, pinyin)
    out, i = [], 1
    while i < len(seg.phones) - 1:
        if seg.phones[i] in PUNCTUATION:
            i += 1
            continue
        pair = (seg.phones[i], seg.phones[i + 1])
        out.append(reverse.get(pair, "?".join(pair)) + str(seg.tones[i]))
        i += 2
    return out


def _en_words(seg) -> list[tuple[str, list[str]]]:
    from vits.text.en.g2p import split_words

    out, pos = [], 1
    for (word, _, _), n in zip(split_words(seg.norm_text), seg.word_phones):
        if word not in PUNCTUATION:
            out.append((word.lower(), seg.phones[pos:pos + n]))
        pos += n
    return out


def reading(text: str, language: str) -> str:
    """The frontend's reading of `text` in the corpus notation of `language` ("zh", "en", "ja")."""
    from vits.text import clean_text

    lang = {"zh": "ZH", "en": "EN", "ja": "JP", "ko": "KO"}[language]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segs = clean_text(text, lang)
    parts: list[str] = []
    for seg in segs:
        if seg.language == "ZH":
            parts += _zh_syllables(seg)
        elif seg.language == "EN":
            parts += ["{" + " ".join(p) + "}" + w for w, p in _en_words(seg)]
        elif seg.language == "KO":
            from vits.text.ko.g2p import phones_to_hangul

            parts.append(phones_to_hangul(seg.phones))
        else:
            parts += [p for p in seg.phones if p != "_" and p not in PUNCTUATION]
    return " ".join(parts)


def _matches(expected: str, got: str, language: str) -> bool:
    want = _READING_RX.findall(expected)
    if language == "zh":
        have = got.split()
        return len(want) == len(have) and all(h in w.split("/") for w, h in zip(want, have))
    if language == "ja":
        return want == got.split()
    if language == "ko":
        return "".join(c for c in expected if "\uac00" <= c <= "\ud7a3") == "".join(got.split())
    have = re.findall(r"\{([^}]*)\}(\S+)", got)  # (phones, word)
    if len(want) != len(have):
        return False
    for w, (phones, word) in zip(want, have):
        if w.startswith("{"):
            if phones.lower().split() not in [alt.lower().split() for alt in w[1:-1].split("/")]:
                return False
        elif w.lower() != word:
            return False
    return True


def language_of(file_name: str) -> str:
    """"zh", "en", "ja" or "ko" from a corpus file name (zh_numbers.tsv -> "zh")."""
    return file_name[:2]


def score(cases: list[Case]) -> list[Result]:
    """Run every case through the frontend; one Result each."""
    out = []
    for case in cases:
        language = language_of(case.file)
        got = reading(case.text, language)
        out.append(Result(case, got, _matches(case.expected, got, language)))
    return out


def plain(got: str) -> str:
    """An en reading without the phones, for messages ("{r eh d}read" -> "read")."""
    return re.sub(r"\{[^}]*\}", "", got)
