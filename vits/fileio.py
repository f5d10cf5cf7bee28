"""Atomic file writes: a temp file in the target's folder, renamed over the target only when complete."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `path`; when the block succeeds, rename it onto `path`.

    A crash or exception never leaves a half-written `path` (the temp file is removed). With `durable`,
    the file and the rename are fsynced (checkpoints: a kill -9 or power loss keeps the last complete one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are ordinary user files
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if durable:
        try:  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


# atomic_path's temp names: "." + target name + "." + mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def leftover_temp_files(folder: str | os.PathLike) -> list[tuple[Path, str]]:
    """Temp files `atomic_path` left in `folder` when its process was killed mid-write: (temp path, target name).

    A process that is still writing has its temp file here too: only call this while nobody writes there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir()):
        named = _TEMP_NAME.match(entry.name)
        if named and entry.is_file():
            found.append((entry, named.group("target")))
    return found


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` (LF line ends) to `path` atomically and durably."""
    with atomic_path(path, durable=True) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def read_json(path: str | os.PathLike, default):
    """Read a JSON state file; a missing or unreadable file yields `default` (state is rebuilt, not trusted)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return default


def write_json(path: str | os.PathLike, data) -> None:
    """Write JSON atomically, UTF-8, human-readable."""
    write_text_atomic(Path(path), json.dumps(data, ensure_ascii=False, indent=1) + "\n")
