"""The voice folder `Data/<voice>/`: where every file of a voice lives, and how to find them.

raw/<speaker>/...        ingested source audio (any format)
clean/<speaker>/...      denoised copies of raw/ (python -m pipeline.clean; slicing prefers them)
clean.json               which raw files the clean stage cleaned (resume state, errors)
speaker_embeddings.npz   per-clip GE2E speaker embeddings (cache of the same-speaker check)
wavs/<speaker>/*.wav     44.1 kHz mono 16-bit clips (+ .bert.pt / .spec.pt features beside each)
esd.list                 wav|speaker|LANG|text (wav relative to the voice folder)
esd.meta.json            per-clip transcription confidence and flags
ingest.json              files refused at ingest (by name, with the reason)
slices.json              which clips each raw file produced (resume state, format fixes)
resample.json            which clips the resample stage conformed (resume state)
filelists/               train.list, val.list, text_state.json
configs/config.json      VoiceConfig
models/                  G_<step>.pth, D_, DUR_, WD_ (training), G_0.pth... (base model), release files
export/                  release generators and zips made by the Export tab
onnx/                    ONNX graphs + metadata (python -m pipeline.export_onnx)
  bert/<LANG>/           BERT graphs + tokenizer.json (export_onnx --bert), bert/koe_bert.json
logs/                    TensorBoard events, eval audio, job logs
logs/scores.json         checkpoint scores (python -m pipeline.score) and the best step
backups/                 timestamped copies of lists replaced by a stage or an edit
report.json/.txt         health report
merge.json               how a merged voice was made (sources, sha256, method, weights: python -m pipeline.merge)
train.lock               who is training the voice (`vits.voice_lock`; empty when nobody is)

This module is the one place that knows these names; stages, the trainer, synthesis, the server and the
studio ask it instead of joining strings themselves.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from vits.errors import KoeError

RAW = "raw"
CLEAN = "clean"
CLEAN_MANIFEST = "clean.json"
SPEAKER_EMBEDDINGS = "speaker_embeddings.npz"
WAVS = "wavs"
ESD_LIST = "esd.list"
ESD_META = "esd.meta.json"
SLICES = "slices.json"
RESAMPLE = "resample.json"
INGEST = "ingest.json"
FILELISTS = "filelists"
TRAIN_LIST = "filelists/train.list"
VAL_LIST = "filelists/val.list"
TEXT_STATE = "filelists/text_state.json"
CONFIGS = "configs"
CONFIG = "configs/config.json"
MODELS = "models"
LOGS = "logs"
SCORES = "logs/scores.json"
BACKUPS = "backups"
TRASH = "trash"
EXPORT = "export"
ONNX = "onnx"
ONNX_METADATA = "koe_onnx.json"  # in an ONNX export folder; written last, so its presence means complete
ONNX_BERT = "bert"  # in an ONNX export folder: the BERT graphs (python -m pipeline.export_onnx --bert)
ONNX_BERT_METADATA = "koe_bert.json"  # in ONNX_BERT; written last, like ONNX_METADATA
USERDICT = "userdict.txt"
REPORT_JSON = "report.json"
REPORT_TXT = "report.txt"
TRAIN_LOCK = "train.lock"
MERGE_RECIPE = "merge.json"  # written last by vits.merge.save_voice
MERGE_TEST = "merge_test.wav"  # pipeline.merge --test-text

KINDS = ("G", "D", "DUR", "WD")
_CHECKPOINT_NAME = re.compile(r"^(G|D|DUR|WD)_(\d+)\.pth$")
# Any generator file a user may hold: G_<step>.pth, G_<step>_fp16.pth, G_<step>.safetensors, release files.
_GENERATOR_STEP = re.compile(r"^G_(\d+)(?:_[A-Za-z0-9]+)*\.(?:pth|safetensors)$")

_UNSAFE = re.compile(r"[|\\/\x00-\x1f\x7f]+")


# ---------------------------------------------------------------------------------------------------
# names


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


# ---------------------------------------------------------------------------------------------------
# clips


def speaker_for(path_in_root: Path, default: str) -> str:
    """Speaker of a file below raw/ or wavs/: its first sub-folder, or `default` for top-level files."""
    parts = Path(path_in_root).parts
    return safe_name(parts[0]) if len(parts) > 1 else safe_name(default)


def clean_path(voice_dir: Path, raw_file: Path) -> Path:
    """Where the clean stage writes the cleaned copy of a file under raw/: same relative name under clean/.

    Always a WAV: `raw/a/x.wav` -> `clean/a/x.wav`, `raw/a/x.mp3` -> `clean/a/x.mp3.wav` (no clash with x.wav).
    """
    relative = Path(raw_file).relative_to(Path(voice_dir) / RAW)
    name = relative.name if relative.suffix.lower() == ".wav" else relative.name + ".wav"
    return Path(voice_dir) / CLEAN / relative.parent / name


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


def resolve_path(voice_dir: Path, path: str) -> Path:
    """A list or config path: absolute as is, else relative to the voice folder."""
    p = Path(path)
    return p if p.is_absolute() else Path(voice_dir) / p


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
    base = Path(os.path.abspath(voice_dir))
    for c in candidates:  # only files inside the voice folder: a list never leads a stage outside it
        inside = Path(os.path.normpath(os.path.abspath(c))).is_relative_to(base)
        if c.is_file() and (inside or c.resolve().is_relative_to(base.resolve())):
            return rel(c, voice_dir), c.resolve()
    return None


# ---------------------------------------------------------------------------------------------------
# config and checkpoints


def config_path(voice_dir: str | os.PathLike) -> Path:
    """`<voice>/configs/config.json` (whether or not it exists yet)."""
    return Path(voice_dir) / CONFIG


def models_dir(voice_dir: str | os.PathLike) -> Path:
    """`<voice>/models/`: training checkpoints, the base model, release files."""
    return Path(voice_dir) / MODELS


def userdict_for(path: str | os.PathLike) -> Path | None:
    """The pronunciation dictionary of the voice `path` belongs to, or None when it has none.

    `path` is a voice folder, its ONNX export (``<voice>/onnx``) or a G file (``<voice>/models/G_x.pth``).
    """
    path = Path(path)
    if path.is_dir():
        folders = [path, path.parent] if path.name == ONNX else [path]
    else:
        folders = [path.parent, path.parent.parent]
    return next((f / USERDICT for f in folders if (f / USERDICT).is_file()), None)


def config_for_checkpoint(g_path: str | os.PathLike) -> Path:
    """The config.json that describes a G file: beside it, or the voice folder's `configs/config.json`.

    Looks in `<dir of G>/config.json`, `<dir of G>/../configs/config.json`, `<dir of G>/../config.json`.
    Raises KoeError when none exists.
    """
    g_path = Path(g_path)
    for candidate in (g_path.parent / "config.json", g_path.parent.parent / CONFIG,
                      g_path.parent.parent / "config.json"):
        if candidate.is_file():
            return candidate
    raise KoeError("no config.json beside the checkpoint or in ../configs/", where=str(g_path),
                   fix="put the voice's config.json next to the G file or pass the config path")


def list_checkpoints(folder: str | os.PathLike) -> dict[str, dict[int, Path]]:
    """{"G": {step: path}, "D": ..., "DUR": ..., "WD": ...} for the ``<KIND>_<step>.pth`` files in a folder."""
    found: dict[str, dict[int, Path]] = {k: {} for k in KINDS}
    folder = Path(folder)
    if not folder.is_dir():
        return found
    for entry in folder.iterdir():
        named = checkpoint_name(entry.name)
        if named and entry.is_file():
            found[named[0]][named[1]] = entry
    return found


def checkpoint_name(name: str) -> tuple[str, int] | None:
    """(kind, step) of a training checkpoint file name (``DUR_1000.pth`` -> ("DUR", 1000)), else None."""
    found = _CHECKPOINT_NAME.match(name)
    return (found.group(1), int(found.group(2))) if found else None


def generator_step(path: str | os.PathLike) -> int | None:
    """The step of any generator file name (G_60.pth, G_60_fp16.pth, G_60.safetensors), or None."""
    found = _GENERATOR_STEP.match(Path(path).name)
    return int(found.group(1)) if found else None


def generator_files(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """Every generator file a user can synthesize with, as (step, path), newest step first.

    `folder` is a voice folder (its models/ is searched) or a folder of G files. Takes training
    checkpoints (G_<step>.pth) and release files (G_<step>_fp16.pth, G_<step>.safetensors); within a
    step the training checkpoint comes first.
    """
    folder = Path(folder)
    if (folder / MODELS).is_dir():
        folder = folder / MODELS
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        step = generator_step(path)
        if step is not None and path.is_file():
            found.append((step, path))
    return sorted(found, key=lambda sp: (-sp[0], sp[1].suffix != ".pth" or "_" in sp[1].stem[2:], sp[1].name))
