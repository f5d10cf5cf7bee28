"""The dataset folder `Data/<voice>/` and the small JSON state files the stages keep there.

raw/<speaker>/...      ingested source audio (any format)
wavs/<speaker>/*.wav   44.1 kHz mono 16-bit clips
esd.list               wav|speaker|LANG|text (wav relative to the voice folder)
esd.meta.json          per-clip transcription confidence and flags
ingest.json            files refused at ingest (by name, with the reason)
slices.json            which clips each raw file produced (resume state, format fixes)
resample.json          which clips the resample stage conformed (resume state)
filelists/             train.list, val.list, text_state.json
configs/config.json    VoiceConfig
report.json/.txt       health report
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

from vits.config import write_text_atomic

RAW = "raw"
WAVS = "wavs"
ESD_LIST = "esd.list"
ESD_META = "esd.meta.json"
SLICES = "slices.json"
RESAMPLE = "resample.json"
INGEST = "ingest.json"
FILELISTS = "filelists"
TEXT_STATE = "filelists/text_state.json"
CONFIG = "configs/config.json"
REPORT_JSON = "report.json"
REPORT_TXT = "report.txt"

_UNSAFE = re.compile(r"[|\\/\x00-\x1f\x7f]+")


def safe_name(name: str, fallback: str = "clip") -> str:
    """A file/speaker name that cannot break a list line or a path: no `|`, slashes, control chars, leading dots.

    Keeps non-ASCII letters and spaces (NFC-normalised) so Chinese/Japanese names survive.
    """
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    return name or fallback


def clip_stem(stem: str) -> str:
    """A clip file stem: safe_name plus no dots, so `.wav` -> `.bert.pt` string replacement stays exact."""
    return safe_name(stem).replace(".", "_")


def read_json(path: Path, default):
    """Read a JSON state file; a missing or unreadable file yields `default` (state is rebuilt, not trusted)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return default


def write_json(path: Path, data) -> None:
    """Write JSON atomically, UTF-8, human-readable."""
    write_text_atomic(Path(path), json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def rel(path: Path, voice_dir: Path) -> str:
    """`path` relative to the voice folder with forward slashes (absolute if it lies outside)."""
    path, voice_dir = Path(path).resolve(), Path(voice_dir).resolve()
    if path.is_relative_to(voice_dir):
        return path.relative_to(voice_dir).as_posix()
    return str(path)


def file_stamp(path: Path) -> list[int]:
    """[size, mtime_ns] of a file: the change detector the resumable stages use."""
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


def speaker_for(path_in_root: Path, default: str) -> str:
    """Speaker of a file below raw/ or wavs/: its first sub-folder, or `default` for top-level files."""
    parts = Path(path_in_root).parts
    return safe_name(parts[0]) if len(parts) > 1 else safe_name(default)


def list_clips(voice_dir: Path) -> list[tuple[str, str]]:
    """All clips under wavs/ as (path relative to the voice folder, speaker), sorted by path."""
    voice_dir = Path(voice_dir)
    root = voice_dir / WAVS
    out = []
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix.lower() == ".wav" and not p.name.startswith("."):
                out.append((p.relative_to(voice_dir).as_posix(), speaker_for(p.relative_to(root), voice_dir.name)))
    return out


def resolve_wav(voice_dir: Path, wav_field: str) -> tuple[str, Path] | None:
    """Find the file a list line names, as written by us or by Bert-VITS2 (paths relative to its repo root).

    Tries the path relative to the voice folder, as given (absolute or cwd-relative), and with leading
    components stripped (`Data/<voice>/wavs/a.wav` -> `wavs/a.wav`).
    Returns (path to write in lists: relative to the voice folder when inside it, absolute path) or None.
    """
    voice_dir = Path(voice_dir)
    raw = wav_field.strip().replace("\\", "/")
    if not raw:
        return None
    candidates = []
    p = Path(raw)
    if p.is_absolute():
        candidates.append(p)
    else:
        candidates.append(voice_dir / p)
        parts = p.parts
        candidates += [voice_dir.joinpath(*parts[i:]) for i in range(1, len(parts))]
        candidates.append(Path.cwd() / p)
    for c in candidates:
        if c.is_file():
            return rel(c, voice_dir), c.resolve()
    return None
