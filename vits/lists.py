"""The list files of a voice, read and written here only (spec §7.4, §7.8).

- `esd.list`: one `wav|speaker|LANG|text` line per clip (the transcription, hand-editable).
- `filelists/train.list`, `val.list`: the cleaned 7-field lines
  `wav|speaker|LANG|norm_text|phones|tones|word2ph` the trainer and the feature stage read.
- `<clip>.bert.pt` / `<clip>.spec.pt` / `<clip>.emo.npy` (2.2 voices): the feature files that belong to a clip's wav.

Reading esd.list is lenient line by line: a bad line becomes a LineProblem naming its number and the fix,
and the other lines are kept. Cleaned lines are strict: a bad one raises KoeError with `file:line`.
Every reader confines wav paths to the voice folder: `../../x.wav` or `/tmp/x.wav` is refused with its
line number (`wav_outside`), so no stage reads or writes features beside files outside Data/<voice>/.
Replacing a list that a user may have edited always keeps a copy in the voice's `backups/` first
(UTC timestamps, never overwriting an older copy).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from vits.errors import KoeError
from vits.fileio import write_text_atomic
from vits.voice_folder import BACKUPS

LANGUAGES = ("ZH", "JP", "EN", "KO")
# The spellings people (and other tools' lists) use for the languages.
_LANG_ALIASES = {"ZH": "ZH", "JP": "JP", "EN": "EN", "JA": "JP", "CN": "ZH", "ZH-CN": "ZH", "ZH_CN": "ZH",
                 "EN-US": "EN", "EN_US": "EN", "KO": "KO", "KR": "KO", "KO-KR": "KO", "KO_KR": "KO"}


def normalize_language(value: str) -> str | None:
    """ZH/JP/EN/KO for the spellings people use (zh, ja, JA, cn, zh-CN, ko, kr ...), or None."""
    return _LANG_ALIASES.get(value.strip().upper())


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


def wav_outside(wav: str, voice_dir: str | Path | None = None) -> bool:
    """True when a list's wav path leads outside the voice folder (`../../x.wav`, `/tmp/x.wav`).

    Decided from the path alone (whether the file exists does not matter). Without `voice_dir` only
    relative paths that climb out (`..`) are caught; absolute paths need the folder to judge.
    """
    raw = wav.strip().replace("\\", "/")
    if not Path(raw).is_absolute():
        norm = os.path.normpath(raw)
        return norm == ".." or norm.startswith("../")
    if voice_dir is None:
        return False
    base = Path(os.path.abspath(voice_dir))
    if Path(os.path.normpath(raw)).is_relative_to(base):
        return False
    # The voice folder reached through a symbolic link (Data/ on another disk) is still the voice folder.
    return not Path(raw).resolve().is_relative_to(base.resolve())


def _outside_message(wav: str) -> str:
    return f"wav path {wav!r} leads outside the voice folder (refused: features would be written there)"


OUTSIDE_FIX = ("write the path relative to the voice folder (wavs/<speaker>/<clip>.wav) and move the clip "
               "into the voice's wavs/ folder")


def check_wav_inside(wav: str, voice_dir: str | Path | None, where: str) -> None:
    """Raise KoeError (at `where`, a `file:line`) when `wav` leads outside the voice folder."""
    if wav_outside(wav, voice_dir):
        raise KoeError(_outside_message(wav), where=where, fix=OUTSIDE_FIX)


def wav_field(line: str) -> str:
    """The wav path a list line starts with (esd or cleaned), even when the rest of the line is malformed."""
    return line.strip().lstrip("\ufeff").split("|", 1)[0].strip()


def esd_fields(line: str) -> list[str]:
    """The four esd.list fields of a possibly malformed line, stripped, padded with "" (for fixing it by hand)."""
    parts = [p.strip() for p in line.strip().lstrip("\ufeff").split("|", 3)]
    return parts + [""] * (4 - len(parts))


def parse_esd_line(raw: str, line_no: int, voice_dir: str | Path | None = None) -> EsdEntry | LineProblem | None:
    """Parse one line. Returns an EsdEntry, a LineProblem, or None for blank/comment lines.

    A wav path leading outside the voice folder (`wav_outside`; absolute ones judged against `voice_dir`)
    is a LineProblem.
    """
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
    if wav_outside(wav, voice_dir):
        return LineProblem(line_no, line, f"{_outside_message(wav)}: {OUTSIDE_FIX}")
    if not speaker:
        return LineProblem(line_no, line, "empty speaker name")
    language = normalize_language(lang)
    if language is None:
        return LineProblem(line_no, line, f"unknown language {lang!r}: use ZH, JP, EN or KO")
    if not text:
        return LineProblem(line_no, line, "empty text: transcribe the clip or delete the line")
    return EsdEntry(line_no, wav, speaker, language, text)


def read_esd_list(path: str | Path, voice_dir: str | Path | None = None) -> tuple[list[EsdEntry], list[LineProblem]]:
    """Read an esd.list. Returns (valid entries in file order, problems). A missing file reads as empty.

    Wav paths are confined to `voice_dir` (default: the list's folder, where esd.list lives).
    """
    path = Path(path)
    if not path.is_file():
        return [], []
    entries, problems = [], []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for n, raw in enumerate(text.splitlines(), 1):
        item = parse_esd_line(raw, n, path.parent if voice_dir is None else voice_dir)
        if isinstance(item, EsdEntry):
            entries.append(item)
        elif isinstance(item, LineProblem):
            problems.append(item)
    return entries, problems


# ---------------------------------------------------------------------------------------------------
# cleaned lists (train.list / val.list)


@dataclass
class CleanedLine:
    """One cleaned list line (spec §7.4); `wav` as written in the file."""

    wav: str
    speaker: str
    language: str
    text: str
    phones: list[str]
    tones: list[int]
    word2ph: list[int]

    def line(self) -> str:
        return "|".join([self.wav, self.speaker, self.language, self.text, " ".join(self.phones),
                         " ".join(str(t) for t in self.tones), " ".join(str(w) for w in self.word2ph)])


def parse_cleaned_line(line: str, where: str, voice_dir: str | Path | None = None) -> CleanedLine:
    """Parse one 7-field cleaned line. Raises KoeError (with `where`) on a wrong field count, bad numbers,
    or a wav path leading outside the voice folder (absolute ones judged against `voice_dir`)."""
    fields = line.rstrip("\r\n").split("|")
    if len(fields) != 7:
        raise KoeError(f"expected 7 '|'-separated fields, found {len(fields)}", where=where,
                       fix="use wav|speaker|LANG|text|phones|tones|word2ph (re-run python -m pipeline.text)")
    wav, speaker, language, text, phones, tones, word2ph = fields
    try:
        tone_list = [int(t) for t in tones.split()]
        w2p_list = [int(w) for w in word2ph.split()]
    except ValueError:
        raise KoeError("tones and word2ph must be space-separated integers", where=where,
                       fix="re-run the text stage (python -m pipeline.text)") from None
    check_wav_inside(wav, voice_dir, where)
    return CleanedLine(wav.strip(), speaker, normalize_language(language) or language.strip(), text,
                       phones.split(), tone_list, w2p_list)


def read_cleaned_lines(path: str | Path) -> list[tuple[str, str]]:
    """The non-blank lines of a cleaned list as (`file:line`, line). Raises KoeError for a missing file."""
    path = Path(path)
    if not path.is_file():
        raise KoeError("list file not found", where=str(path),
                       fix="run the text stage (python -m pipeline.text) to write the filelists")
    return [(f"{path}:{n}", line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if line.strip()]


def read_cleaned_list(path: str | Path, voice_dir: str | Path | None = None) -> list[tuple[str, CleanedLine]]:
    """Every line of a cleaned list as (`file:line`, CleanedLine). Raises KoeError on a missing file or bad line
    (wav paths confined to `voice_dir`, see `parse_cleaned_line`)."""
    return [(where, parse_cleaned_line(line, where, voice_dir)) for where, line in read_cleaned_lines(path)]


# ---------------------------------------------------------------------------------------------------
# feature files of a clip


def _stem(wav: Path) -> str:
    name = Path(wav).name
    return name[:-4] if name.lower().endswith(".wav") else name


def bert_path(wav: str | Path) -> Path:
    """`clip.wav` -> `clip.bert.pt` beside it (spec §7.8, `.WAV` treated like `.wav`)."""
    wav = Path(wav)
    return wav.with_name(_stem(wav) + ".bert.pt")


def spec_path(wav: str | Path) -> Path:
    """`clip.wav` -> `clip.spec.pt` beside it (spec §8)."""
    wav = Path(wav)
    return wav.with_name(_stem(wav) + ".spec.pt")


def emo_path(wav: str | Path) -> Path:
    """`clip.wav` -> `clip.emo.npy` beside it: the 2.2 CLAP audio embedding (2.2 spec §8.1).

    Despite the extension it is a `torch.save` of a float32 [512, 1] tensor, as Bert-VITS2 2.2 writes it.
    """
    wav = Path(wav)
    return wav.with_name(_stem(wav) + ".emo.npy")


# ---------------------------------------------------------------------------------------------------
# writing


def backup_file(path: str | Path) -> Path | None:
    """Copy `path` to `backups/<name>.<UTC timestamp>.bak` in its folder, never overwriting a backup.

    For `Data/<voice>/esd.list` that is `Data/<voice>/backups/`. Returns the copy (None: no file).
    """
    path = Path(path)
    if not path.is_file():
        return None
    folder = path.parent / BACKUPS
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target, n = folder / f"{path.name}.{stamp}.bak", 1
    while target.exists():
        n += 1
        target = folder / f"{path.name}.{stamp}-{n}.bak"
    shutil.copy2(path, target)
    return target


def write_lines(path: str | Path, lines: list[str], backup: bool = True) -> Path | None:
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
