"""Ingest: copy recordings from a folder, a zip or a single file into `Data/<voice>/raw/<speaker>/`.

Sub-folders of the source become speaker names. Zip members that would land outside raw/ (`../`,
absolute paths, drive letters) and symbolic links are refused by name; unreadable files are refused by
name; everything else is copied. Re-running skips files already present with the same content.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from prep.audio import is_audio_file, probe_audio
from vits.errors import KoeError
from vits.voice_folder import RAW, safe_name

Progress = Callable[[int, int, str], None]


@dataclass
class IngestResult:
    """Outcome of one ingest run: paths below raw/ that were copied or already there, and refusals."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _destination(raw_dir: Path, parts: list[str], default_speaker: str) -> Path:
    """raw/<speaker>/<rest>: top-level files go to the default speaker's folder."""
    parts = [safe_name(p, "_") for p in parts]
    if len(parts) == 1:
        parts = [safe_name(default_speaker)] + parts
    return raw_dir.joinpath(*parts)


def _place(tmp: Path, dest: Path, result: IngestResult, raw_dir: Path) -> None:
    """Move a fully written, checked temp file to `dest`, skipping identical copies, renaming clashes."""
    digest = _sha256(tmp)
    candidate, n = dest, 1
    while candidate.exists():
        if candidate.stat().st_size == tmp.stat().st_size and _sha256(candidate) == digest:
            tmp.unlink()
            result.skipped.append(candidate.relative_to(raw_dir).as_posix())
            return
        n += 1
        candidate = dest.with_name(f"{dest.stem} ({n}){dest.suffix}")
    candidate.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, candidate)
    result.copied.append(candidate.relative_to(raw_dir).as_posix())


def _check_and_place(tmp: Path, dest: Path, result: IngestResult, raw_dir: Path, name: str) -> None:
    try:
        probe_audio(tmp)
    except KoeError as exc:
        tmp.unlink(missing_ok=True)
        result.rejected.append((name, exc.problem))
        return
    _place(tmp, dest, result, raw_dir)


def _temp_in(folder: Path, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ingest.", suffix=suffix)
    os.close(fd)
    return Path(tmp)


def _ingest_folder(src: Path, raw_dir: Path, speaker: str, result: IngestResult, progress: Progress | None):
    files = []
    for root, _dirs, names in os.walk(src):  # folder symlinks are not followed (os.walk default)
        for name in sorted(names):
            files.append(Path(root) / name)
    files.sort()
    total = len(files)
    for i, path in enumerate(files, 1):
        relp = path.relative_to(src)
        label = relp.as_posix()
        if not is_audio_file(path):
            result.ignored.append(label)
        else:
            dest = _destination(raw_dir, list(relp.parts), speaker)
            tmp = _temp_in(dest.parent, path.suffix)
            try:
                shutil.copyfile(path, tmp)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                result.rejected.append((label, f"cannot read ({exc.strerror or exc})"))
            else:
                _check_and_place(tmp, dest, result, raw_dir, label)
        if progress:
            progress(i, total, label)


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member name as its creator meant it: zips from Windows store GBK/CP932 names without the UTF-8 flag."""
    name = info.filename
    if not info.flag_bits & 0x800:
        raw = name.encode("cp437", errors="replace")
        for enc in ("utf-8", "gbk", "cp932"):
            try:
                return raw.decode(enc)
            except UnicodeDecodeError:
                continue
    return name


def unsafe_member_reason(info: zipfile.ZipInfo, name: str) -> str | None:
    """Why a zip member may not be extracted (escapes the target folder, is a link), or None when safe."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path in zip (refused: it would be written outside the dataset folder)"
    if any(part == ".." for part in PurePosixPath(norm).parts):
        return "path with '..' in zip (refused: it would be written outside the dataset folder)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link in zip (refused)"
    return None


def _ingest_zip(src: Path, raw_dir: Path, speaker: str, result: IngestResult, progress: Progress | None):
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise KoeError(f"not a readable zip file ({exc})", where=str(src),
                       fix="re-create the zip, or unpack it and ingest the folder") from None
    with zf:
        members = [(info, _member_name(info)) for info in zf.infolist() if not info.is_dir()]
        safe = []
        for info, name in members:
            reason = unsafe_member_reason(info, name)
            if reason:
                result.rejected.append((name, reason))
            elif not is_audio_file(name):
                result.ignored.append(name)
            else:
                safe.append((info, [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]))
        need = sum(info.file_size for info, _ in safe)
        free = shutil.disk_usage(raw_dir if raw_dir.exists() else raw_dir.parent).free
        if need > free:
            raise KoeError(f"zip unpacks to {need / 1e9:.1f} GB but only {free / 1e9:.1f} GB are free",
                           where=str(src), fix="free disk space or ingest a smaller zip")
        # A zip of one folder ("voice/spk/a.wav") should not make "voice" the only speaker.
        tops = {parts[0] for _, parts in safe}
        if len(tops) == 1 and any(len(parts) >= 3 for _, parts in safe):
            safe = [(info, parts[1:] if len(parts) > 1 else parts) for info, parts in safe]
        total = len(safe)
        for i, (info, parts) in enumerate(safe, 1):
            label = "/".join(parts)
            dest = _destination(raw_dir, parts, speaker)
            tmp = _temp_in(dest.parent, Path(parts[-1]).suffix)
            try:
                with zf.open(info) as fin, open(tmp, "wb") as fout:
                    written = 0
                    for block in iter(lambda fin=fin: fin.read(1 << 20), b""):
                        written += len(block)
                        if written > info.file_size:  # a member whose header lies about its size
                            raise zipfile.BadZipFile("member larger than declared")
                        fout.write(block)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                tmp.unlink(missing_ok=True)
                result.rejected.append((label, f"cannot unpack from zip ({exc})"))
            else:
                _check_and_place(tmp, dest, result, raw_dir, label)
            if progress:
                progress(i, total, label)


def ingest(source: str | os.PathLike, voice_dir: str | os.PathLike, speaker: str | None = None,
           progress: Progress | None = None) -> IngestResult:
    """Copy audio from `source` (folder, .zip or one file) into `voice_dir/raw/<speaker>/`.

    Takes: source; the voice folder; `speaker` for files not inside a sub-folder (default: voice name);
    `progress(done, total, item)` callback.
    Returns: IngestResult (copied / skipped-as-identical / rejected with reasons / ignored non-audio).
    Raises: KoeError when the source is missing or is an unreadable zip.
    """
    src, voice_dir = Path(source), Path(voice_dir)
    raw_dir = voice_dir / RAW
    raw_dir.mkdir(parents=True, exist_ok=True)
    speaker = speaker or voice_dir.name
    result = IngestResult()
    if src.is_dir():
        if src.resolve() == raw_dir.resolve() or raw_dir.resolve().is_relative_to(src.resolve()):
            raise KoeError("the source folder contains the dataset's own raw/ folder", where=str(src),
                           fix="ingest from a folder outside the dataset")
        _ingest_folder(src, raw_dir, speaker, result, progress)
    elif src.is_file() and src.suffix.lower() == ".zip":
        _ingest_zip(src, raw_dir, speaker, result, progress)
    elif src.is_file() and is_audio_file(src):
        tmp = _temp_in(raw_dir / safe_name(speaker), src.suffix)
        shutil.copyfile(src, tmp)
        _check_and_place(tmp, _destination(raw_dir, [src.name], speaker), result, raw_dir, src.name)
        if progress:
            progress(1, 1, src.name)
    elif src.exists():
        raise KoeError("not a folder, a .zip or an audio file", where=str(src),
                       fix="point ingest at a folder of recordings, a zip of them, or one audio file")
    else:
        raise KoeError("source not found", where=str(src), fix="check the path")
    return result
