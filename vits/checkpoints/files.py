"""Finding and rotating the checkpoint files of a models/ folder (names: `vits.voice_folder`)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from vits.checkpoints.format import read_checkpoint
from vits.errors import KoeError
from vits.voice_folder import KINDS, list_checkpoints


def _looks_complete(path: Path) -> bool:
    """Cheap check that a file was written completely (torch zip archive with its central directory)."""
    try:
        if path.stat().st_size == 0:
            return False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith("data.pkl") for name in archive.namelist())
        read_checkpoint(path)  # legacy (non-zip) torch format: read it fully
        return True
    except (OSError, zipfile.BadZipFile, KoeError):
        return False


def latest_checkpoints(models_dir: str | os.PathLike) -> tuple[int, dict[str, Path | None]] | None:
    """The newest step with a complete G file, and the files of that step.

    Returns ``(step, {"G": path, "D": path|None, "DUR": path|None, "WD": path|None})`` where the other
    networks are taken from the same step only (None when that step has no such file), or None when
    the folder holds no usable G file.
    """
    found = list_checkpoints(models_dir)
    for step in sorted(found["G"], reverse=True):
        g_path = found["G"][step]
        if _looks_complete(g_path):
            return step, {kind: found[kind].get(step) for kind in KINDS}
    return None


def rotate_checkpoints(models_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete old checkpoints, keeping the newest `keep` steps of each network separately.

    Unlike Bert-VITS2 (which sorts by modification time and lets D_ and DUR_ share one list), files are
    ordered by the step in their name and G, D, DUR and WD each keep their own `keep` newest.
    ``*_0.pth`` (the base model) is never deleted; `keep` <= 0 deletes nothing. Returns the deleted paths.
    """
    if keep <= 0:
        return []
    deleted = []
    for files in list_checkpoints(models_dir).values():
        steps = sorted((s for s in files if s != 0), reverse=True)
        for step in steps[keep:]:
            try:
                files[step].unlink()
                deleted.append(files[step])
            except FileNotFoundError:
                pass
    return deleted
