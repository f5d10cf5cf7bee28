"""The review table of a voice's clips: read esd.list, flag doubtful clips, save edits atomically.

The table also shows the clips transcription left out of esd.list (flagged, kept in esd.meta.json), first.
Saving a row the user changed (text, speaker, language, or the flag cell emptied) keeps the clip and clears
its flags in esd.meta.json; a left-out row saved unchanged stays out.

esd.list lines are ``wav|speaker|LANG|text`` with the wav path relative to the voice folder; the line format
is `vits.lists`'s (one parser, one language alias table). Saving writes a timestamped backup of the previous
file first (``backups/esd.list.<UTC time>.bak``, as every stage does), then replaces the file atomically.
Deleted clips' audio moves to ``trash/`` instead of being erased.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vits.errors import KoeError
from vits.fileio import read_json, write_json
from vits.lists import (
    LANGUAGES,
    EsdEntry,
    backup_file,
    esd_fields,
    normalize_language,
    parse_esd_line,
    write_lines,
)
from vits.voice_folder import ESD_LIST, ESD_META, REPORT_JSON, TRASH

COLUMNS = ["flag", "wav", "speaker", "language", "text"]
# Share of the table's width per column: the flag column must not squeeze the text.
COLUMN_WIDTHS = ["16%", "20%", "10%", "8%", "46%"]
LEFT_OUT = "left out of esd.list"
# Below this Whisper confidence a clip is shown at the top of the table.
LOW_CONFIDENCE = 0.6


@dataclass
class Clip:
    """One esd.list line."""

    wav: str
    speaker: str
    language: str
    text: str
    flags: list[str] = field(default_factory=list)
    confidence: float | None = None
    excluded: bool = False  # transcription left it out of esd.list (only in esd.meta.json)

    def line(self) -> str:
        return f"{self.wav}|{self.speaker}|{self.language}|{self.text}"


def read_esd(path: str | Path) -> list[Clip]:
    """Parse esd.list leniently. Takes its path; returns the clips (empty if the file is missing).

    Lines go through `vits.lists.parse_esd_line`; a malformed line becomes a clip flagged with the problem
    (so the table can fix it, and saving refuses until it is fixed) instead of being dropped.
    """
    path = Path(path)
    if not path.is_file():
        return []
    clips = []
    for number, raw in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), 1):
        item = parse_esd_line(raw, number, path.parent)
        if item is None:
            continue
        if isinstance(item, EsdEntry):
            clips.append(Clip(item.wav, item.speaker, item.language, item.text))
            continue
        # Keep what the line holds, field by field, so the row can be fixed in the table.
        parts = esd_fields(item.text)
        language = normalize_language(parts[2]) or parts[2].upper()
        clips.append(Clip(parts[0], parts[1], language, parts[3], flags=[f"line {number}: {item.reason}"]))
    return clips


def _safe_relative(voice_dir: Path, wav: str, where: str | None = None) -> Path:
    """The clip's path inside the voice folder; raises KoeError if it would point outside."""
    path = (voice_dir / wav).resolve()
    if not path.is_relative_to(voice_dir.resolve()):
        raise KoeError(f"clip path {wav!r} points outside the voice folder", where=where or str(voice_dir),
                       fix="clip paths are relative to the voice folder, e.g. wavs/spk/clip_0001.wav")
    return path


def validate(voice_dir: Path, clips: list[Clip]) -> None:
    """Refuse edits that would corrupt esd.list. Raises KoeError naming the row and the fix."""
    for row, clip in enumerate(clips, 1):
        where = f"row {row} ({clip.wav})"
        for name in ("wav", "speaker", "language", "text"):
            value = getattr(clip, name)
            if "|" in value or "\n" in value or "\r" in value:
                raise KoeError(f"{name} may not contain '|' or line breaks", where=where,
                               fix="remove the character")
        if not clip.wav or not clip.speaker:
            raise KoeError("wav and speaker may not be empty", where=where)
        if clip.language not in LANGUAGES:
            raise KoeError(f"unknown language {clip.language!r}", where=where, fix="use ZH, JP or EN")
        if not clip.text.strip():
            raise KoeError("the text is empty", where=where, fix="type what is said, or delete the clip")
        _safe_relative(voice_dir, clip.wav, where)


def save_esd(voice_dir: str | Path, clips: list[Clip], deleted: list[str] = ()) -> Path | None:
    """Write `clips` to ``<voice_dir>/esd.list`` after a backup; move `deleted` clips' audio to trash/.

    Returns the backup path (None when there was no previous file). Raises KoeError on invalid rows,
    leaving esd.list untouched.
    """
    voice_dir = Path(voice_dir)
    validate(voice_dir, clips)
    trash_paths = [_safe_relative(voice_dir, wav) for wav in deleted]
    esd = voice_dir / ESD_LIST
    # Always a backup before a save from the table, even when the text did not change.
    backup = backup_file(esd)
    write_lines(esd, [clip.line() for clip in clips], backup=False)
    for path in trash_paths:
        if path.is_file():
            target = voice_dir / TRASH / path.relative_to(voice_dir.resolve())
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
            # Features computed for the clip go with it.
            for extra in path.parent.glob(path.stem + ".*"):
                if extra.suffix in {".pt", ".npy"} or extra.name.endswith((".spec.pt", ".bert.pt")):
                    shutil.move(str(extra), target.parent / extra.name)
    return backup


def load_flags(voice_dir: str | Path) -> dict[str, tuple[float | None, list[str]]]:
    """Per clip: (transcription confidence 0..1, reasons it is doubtful), from the stage outputs.

    Reads ``esd.meta.json`` (the transcribe stage: avg_logprob → confidence = exp(avg_logprob), flags)
    and ``report.json`` (problems naming a clip) when they exist; unknown shapes are ignored.
    """
    voice_dir = Path(voice_dir)
    found: dict[str, tuple[float | None, list[str]]] = {}

    def add(wav, confidence=None, reason=None):
        conf, reasons = found.get(wav, (None, []))
        if confidence is not None:
            conf = float(confidence)
        if reason and reason not in reasons:
            reasons = [*reasons, reason]
        found[wav] = (conf, reasons)

    meta = read_json(voice_dir / ESD_META, None)
    clips = meta.get("clips") if isinstance(meta, dict) else None
    for wav, item in (clips or {}).items() if isinstance(clips, dict) else []:
        if not isinstance(item, dict):
            continue
        logprob = item.get("avg_logprob")
        conf = item.get("confidence")
        if conf is None and isinstance(logprob, int | float):
            conf = math.exp(min(float(logprob), 0.0))
        add(wav, conf if isinstance(conf, int | float) else None)
        for flag in item.get("flags") or []:
            add(wav, reason=str(flag))
    report = read_json(voice_dir / REPORT_JSON, None)
    if isinstance(report, dict):
        # clip_problems: the health report's per-clip findings (same-speaker check included, with its score)
        for problem in [*(report.get("problems", []) or []), *(report.get("clip_problems", []) or [])]:
            if isinstance(problem, dict):
                wav = problem.get("wav") or problem.get("clip")
                if wav:
                    add(str(wav), reason=str(problem.get("problem") or problem.get("message") or "problem"))
    return found


def speaker_scores(voice_dir: str | Path) -> dict[str, float]:
    """Similarity to their speaker of the clips the health report's same-speaker check flagged (report.json)."""
    report = read_json(Path(voice_dir) / REPORT_JSON, None)
    out: dict[str, float] = {}
    for item in (report.get("speaker_outliers") or []) if isinstance(report, dict) else []:
        if isinstance(item, dict) and item.get("wav") and isinstance(item.get("score"), int | float):
            out[str(item["wav"])] = float(item["score"])
    return out


def _meta_clips(voice_dir: Path) -> dict:
    meta = read_json(voice_dir / ESD_META, None)
    clips = meta.get("clips") if isinstance(meta, dict) else None
    return clips if isinstance(clips, dict) else {}


def table(voice_dir: str | Path) -> list[Clip]:
    """The clips of a voice with their flags: clips the same-speaker check flagged first (least similar on
    top, their score in the flags), then those transcription left out of esd.list (while their audio is in
    wavs/), then doubtful ones, then the rest in esd.list order."""
    voice_dir = Path(voice_dir)
    clips = read_esd(voice_dir / ESD_LIST)
    listed = {c.wav for c in clips}
    meta = _meta_clips(voice_dir)
    left_out = [Clip(wav, str(item.get("speaker", "")), str(item.get("language", "")), str(item.get("text", "")),
                     excluded=True)
                for wav, item in meta.items()
                if isinstance(item, dict) and item.get("excluded") and wav not in listed
                and (voice_dir / wav).is_file()]
    flags = load_flags(voice_dir)
    for clip in left_out + clips:
        conf, reasons = flags.get(clip.wav, (None, []))
        if (meta.get(clip.wav) or {}).get("reviewed"):
            conf, reasons = None, []  # the user checked this clip: Whisper's doubts no longer apply
        clip.confidence = conf
        clip.flags = clip.flags + list(reasons)
        if conf is not None and conf < LOW_CONFIDENCE:
            clip.flags.insert(0, f"low confidence {conf:.2f}")
        if clip.excluded:
            clip.flags.insert(0, LEFT_OUT)
        if not (voice_dir / clip.wav).is_file():
            clip.flags.append("audio missing")
    order = {id(c): i for i, c in enumerate(left_out + clips)}
    outliers = speaker_scores(voice_dir)  # maybe another speaker: first, the least similar on top

    def rank(c: Clip):
        score = outliers.get(c.wav)
        return (score is None, score if score is not None else 0.0, not c.excluded, not c.flags, order[id(c)])

    return sorted(left_out + clips, key=rank)


def to_rows(clips: list[Clip]) -> list[list[str]]:
    """Rows for the UI table, in COLUMNS order."""
    return [["; ".join(c.flags), c.wav, c.speaker, c.language, c.text] for c in clips]


def _cells(rows) -> list[list[str]]:
    if hasattr(rows, "values") and hasattr(rows, "columns"):
        rows = rows.values.tolist()
    out = []
    for row in rows or []:
        row = ["" if v is None else str(v) for v in row]
        if len(row) >= 5 and any(cell.strip() for cell in row):
            out.append(row[:5])
    return out


def from_rows(rows) -> list[Clip]:
    """Clips from edited UI rows (a pandas DataFrame or a list of lists in COLUMNS order)."""
    clips = []
    for row in _cells(rows):
        language = normalize_language(row[3]) or row[3].strip().upper()
        clips.append(Clip(wav=row[1].strip(), speaker=row[2].strip(), language=language, text=row[4].strip(),
                          flags=[row[0].strip()] if row[0].strip() else [],
                          excluded=row[0].strip().startswith(LEFT_OUT)))
    return clips


def save_review(voice_dir: str | Path, rows, loaded, deleted: list[str] = ()) -> tuple[Path | None, int, int]:
    """Save the review table: `rows` as edited, `loaded` as the table showed them before the edits.

    A row that differs from its loaded version (any cell; an emptied flag cell means "keep it") is kept
    in esd.list and its flags are cleared in esd.meta.json; a left-out row saved unchanged stays out.
    Returns (the backup of esd.list or None, rows written, left-out rows still left out).
    Raises KoeError on invalid rows, leaving both files untouched.
    """
    voice_dir = Path(voice_dir)
    before = {row[1].strip(): row for row in _cells(loaded)}
    keep, reviewed, still_out = [], [], 0
    for row, clip in zip(_cells(rows), from_rows(rows)):
        changed = before.get(clip.wav) != row
        if clip.excluded and not changed:
            still_out += 1
            continue
        keep.append(clip)
        if changed:
            reviewed.append(clip)
    backup = save_esd(voice_dir, keep, deleted)
    meta_path = voice_dir / ESD_META
    meta = read_json(meta_path, None)
    if reviewed and isinstance(meta, dict) and isinstance(meta.get("clips"), dict):
        for clip in reviewed:
            item = meta["clips"].get(clip.wav)
            if isinstance(item, dict):
                item.update(excluded=False, flags=[], reviewed=True, text=clip.text, language=clip.language,
                            speaker=clip.speaker)
        write_json(meta_path, meta)
    return backup, len(keep), still_out


def bulk_edit(rows, language: str | None = None, speaker: str | None = None,
              scope: str = "all") -> tuple[list[list[str]], int]:
    """Set the language and/or speaker of many rows at once (the table; Save writes it).

    `scope`: "all" rows, or "unknown" (rows whose language is not ZH/JP/EN, e.g. Whisper's 'yo').
    Returns (the new rows, how many changed).
    """
    out, changed = [], 0
    for row in _cells(rows):
        new = list(row)
        unknown = (normalize_language(row[3]) or row[3].strip().upper()) not in LANGUAGES
        if scope == "all" or unknown:
            if language:
                new[3] = language
            if speaker and speaker.strip():
                new[2] = speaker.strip()
        changed += new != row
        out.append(new)
    return out, changed


def g2p_preview(text: str, language: str, userdict: str | Path | None = None) -> str:
    """What the text frontend makes of a line: normalized text, phones with tones, word2ph.

    Returns a short multi-line string; errors from the frontend are returned as text, not raised.
    """
    try:
        from vits.text import clean_text
    except ImportError as exc:
        return f"(text frontend not available: {exc})"
    user_dict = None
    if userdict and Path(userdict).is_file():
        try:
            from vits.text import UserDict

            user_dict = UserDict.load(userdict)
        except Exception as exc:  # noqa: BLE001 - show the problem in the preview
            return f"pronunciation dictionary: {exc}"
    try:
        parts = clean_text(text, language, user_dict=user_dict) if user_dict else clean_text(text, language)
    except Exception as exc:  # noqa: BLE001 - the preview reports any frontend error in place
        return f"error: {exc}"
    if not isinstance(parts, list):
        parts = [parts]
    lines = []
    for part in parts:
        phones = " ".join(f"{p}{t}" if t else p for p, t in zip(part.phones, part.tones))
        lines.append(f"[{part.language}] {part.norm_text}\nphones: {phones}\nword2ph: {part.word2ph}")
    return "\n".join(lines)
