"""The raw transcription list `esd.list`: one `wav|speaker|LANG|text` line per clip (spec §7.4).

Reading is lenient line by line: a bad line becomes a LineProblem naming its number and the fix, and
the other lines are kept. Writing never replaces an existing file without a timestamped backup.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from vits.config import write_text_atomic

LANGUAGES = ("ZH", "JP", "EN")
_LANG_ALIASES = {"ZH": "ZH", "JP": "JP", "EN": "EN", "JA": "JP", "CN": "ZH", "ZH-CN": "ZH", "ZH_CN": "ZH"}


@dataclass
class EsdEntry:
    """One valid line: wav path as written, speaker, language (ZH/JP/EN), text."""

    line_no: int
    wav: str
    speaker: str
    language: str
    text: str

    def line(self) -> str:
        return f"{self.wav}|{self.speaker}|{self.language}|{self.text}"


@dataclass
class LineProblem:
    """A line that could not be used, with why and how to fix it."""

    line_no: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.reason} ({self.text[:60]!r})"


def normalize_language(value: str) -> str | None:
    """ZH/JP/EN for the spellings people use (zh, ja, JA, cn ...), or None."""
    return _LANG_ALIASES.get(value.strip().upper())


def parse_esd_line(raw: str, line_no: int) -> EsdEntry | LineProblem | None:
    """Parse one line. Returns an EsdEntry, a LineProblem, or None for blank/comment lines."""
    line = raw.strip().lstrip("\ufeff")
    if not line or line.startswith("#"):
        return None
    if "\ufffd" in line:
        return LineProblem(line_no, line, "not valid UTF-8: save the list as UTF-8")
    fields = line.split("|")
    if len(fields) != 4:
        return LineProblem(line_no, line, f"expected 4 fields wav|speaker|LANG|text, found {len(fields)} "
                                          "(the text may not contain '|')")
    wav, speaker, lang, text = (f.strip() for f in fields)
    if not wav:
        return LineProblem(line_no, line, "empty wav path")
    if not speaker:
        return LineProblem(line_no, line, "empty speaker name")
    language = normalize_language(lang)
    if language is None:
        return LineProblem(line_no, line, f"unknown language {lang!r}: use ZH, JP or EN")
    if not text:
        return LineProblem(line_no, line, "empty text: transcribe the clip or delete the line")
    return EsdEntry(line_no, wav, speaker, language, text)


def read_esd_list(path: str | Path) -> tuple[list[EsdEntry], list[LineProblem]]:
    """Read an esd.list. Returns (valid entries in file order, problems). A missing file reads as empty."""
    path = Path(path)
    if not path.is_file():
        return [], []
    entries, problems = [], []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for n, raw in enumerate(text.splitlines(), 1):
        item = parse_esd_line(raw, n)
        if isinstance(item, EsdEntry):
            entries.append(item)
        elif isinstance(item, LineProblem):
            problems.append(item)
    return entries, problems


def backup_file(path: Path) -> Path | None:
    """Copy `path` to `<name>.<UTC timestamp>.bak` beside it (never overwriting a backup). Returns the copy."""
    path = Path(path)
    if not path.is_file():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target, n = path.with_name(f"{path.name}.{stamp}.bak"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{stamp}-{n}.bak")
    shutil.copy2(path, target)
    return target


def write_lines(path: Path, lines: list[str], backup: bool = True) -> Path | None:
    """Write list lines atomically. When the file exists with different content, back it up first.

    Returns the backup path, or None when nothing was backed up.
    """
    path = Path(path)
    content = "".join(line + "\n" for line in lines)
    saved = None
    if path.is_file():
        if path.read_bytes() == content.encode("utf-8"):
            return None
        if backup:
            saved = backup_file(path)
    write_text_atomic(path, content)
    return saved
