"""Finding, verifying and rotating the checkpoint files of a models/ folder (names: `vits.voice_folder`)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vits.checkpoints.format import DamagedCheckpoint, read_checkpoint
from vits.checkpoints.integrity import nonfinite_tensors
from vits.errors import KoeError
from vits.fileio import leftover_temp_files
from vits.voice_folder import KINDS, checkpoint_name, list_checkpoints


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
    the folder holds no usable G file. A cheap check (the zip directory is there); `newest_intact_set`
    verifies every byte and names what it passes over.
    """
    found = list_checkpoints(models_dir)
    for step in sorted(found["G"], reverse=True):
        g_path = found["G"][step]
        if _looks_complete(g_path):
            return step, {kind: found[kind].get(step) for kind in KINDS}
    return None


@dataclass
class IntactSet:
    """The newest checkpoint set whose files all verified, read into memory, and the newer files that did not."""

    step: int
    paths: dict[str, Path | None]
    checkpoints: dict[str, dict]
    damaged: list[tuple[Path, str]] = field(default_factory=list)


def newest_intact_set(models_dir: str | os.PathLike, kinds: Iterable[str] = KINDS) -> IntactSet | None:
    """The newest step above 0 whose files of `kinds` are all whole and finite, read (for a resume).

    Every file of a candidate step is read (CRC-32 of every record checked, weights-only) and its model and
    optimizer tensors checked for NaN/inf; a step with any bad file is passed over for the next older one,
    and the bad files are listed in ``damaged`` with the reason. Files of the step that are absent stay
    None (that network starts fresh). Returns None when the folder has no G file above step 0.
    Raises DamagedCheckpoint when there are G files above step 0 but no set is intact.
    """
    kinds = [k for k in KINDS if k in set(kinds)]
    found = list_checkpoints(models_dir)
    damaged: list[tuple[Path, str]] = []
    for step in sorted((s for s in found["G"] if s > 0), reverse=True):
        paths = {kind: found[kind].get(step) for kind in KINDS}
        loaded, bad = {}, None
        for kind in ["G"] + [k for k in kinds if k != "G"]:
            path = paths[kind]
            if path is None:
                continue
            try:
                ckpt = read_checkpoint(path)
            except KoeError as exc:
                bad = (path, exc.problem.removeprefix("the checkpoint is damaged: "))
                break
            nan = nonfinite_tensors(ckpt)
            if nan:
                bad = (path, f"it holds NaN/inf values ({', '.join(nan)})")
                break
            loaded[kind] = ckpt
        if bad is None:
            return IntactSet(step, paths, loaded, damaged)
        damaged.append(bad)
    if damaged:
        listed = "; ".join(f"{p.name}: {why}" for p, why in damaged)
        raise DamagedCheckpoint(f"no intact checkpoint set to resume from ({listed})", where=str(models_dir),
                                fix="restore the damaged file(s) from a backup, or move them out of models/ "
                                    "to start again from the base model (or from scratch)")
    return None


def clean_leftover_saves(models_dir: str | os.PathLike) -> list[tuple[Path, int]]:
    """Delete temp files of checkpoint saves that a kill interrupted; returns (path, bytes) of each.

    Only temp files of ``<KIND>_<step>.pth`` targets; call it while holding the voice's training lock
    (no other process writes checkpoints then).
    """
    removed = []
    for tmp, target in leftover_temp_files(models_dir):
        if checkpoint_name(target) is None:
            continue
        try:
            size = tmp.stat().st_size
            tmp.unlink()
        except FileNotFoundError:
            continue
        removed.append((tmp, size))
    return removed


def rotate_checkpoints(models_dir: str | os.PathLike, keep: int, protect: Iterable[int] = ()) -> list[Path]:
    """Delete old checkpoints, keeping the newest `keep` steps of each network separately.

    Unlike Bert-VITS2 (which sorts by modification time and lets D_ and DUR_ share one list), files are
    ordered by the step in their name and G, D, DUR and WD each keep their own `keep` newest.
    ``*_0.pth`` (the base model) and the steps in `protect` (the best-scored one, `vits.scores.best_step`)
    are never deleted and do not count against `keep`; `keep` <= 0 deletes nothing. Returns the deleted paths.
    """
    if keep <= 0:
        return []
    protected = {0, *protect}
    deleted = []
    for files in list_checkpoints(models_dir).values():
        steps = sorted((s for s in files if s not in protected), reverse=True)
        for step in steps[keep:]:
            try:
                files[step].unlink()
                deleted.append(files[step])
            except FileNotFoundError:
                pass
    return deleted
