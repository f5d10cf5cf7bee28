"""Ingest: copy recordings from a folder, a zip or a single file into `Data/<voice>/raw/<speaker>/`.

Sub-folders of the source become speaker names. Zip members that would land outside raw/ (`../`,
absolute paths, drive letters), symbolic links, members over 4 GiB and members that unpack more than
100:1 (zip bombs) are refused by name; unreadable files are refused by name; everything else is
streamed, never past its declared size, after checking the disk has room. Member names without the
UTF-8 flag are decoded with one encoding per archive (UTF-8, CP932, GBK or CP437). Re-running skips
files already present with the same content.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from prep.audio import is_audio_file, probe_audio
from vits.errors import KoeError
from vits.voice_folder import RAW, safe_name

Progress = Callable[[int, int, str], None]

GIB = 1 << 30
# Limits (docs/studio.md "Limits"): a WAV cannot exceed 4 GiB; recordings deflate by less than 3:1, a zip
# bomb of zeros by 1000:1; the disk keeps some room for the stages that follow.
MAX_MEMBER_BYTES = 4 * GIB
MAX_RATIO = 100
RATIO_CHECK_BYTES = 16 << 20  # small members may compress well (silence); they cannot fill a disk
MIN_FREE_BYTES = 256 << 20


@dataclass
class IngestResult:
    """Outcome of one ingest run: paths below raw/ that were copied or already there, and refusals."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file (hex), read in 1 MiB blocks: how duplicate uploads are recognised."""
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
    digest = file_digest(tmp)
    candidate, n = dest, 1
    while candidate.exists():
        if candidate.stat().st_size == tmp.stat().st_size and file_digest(candidate) == digest:
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
            check_free_space(raw_dir, path.stat().st_size, str(path))
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


def _unicode_path_field(info: zipfile.ZipInfo, raw: bytes) -> str | None:
    """The UTF-8 name of Info-ZIP's Unicode Path extra field (0x7075) when it matches this name's CRC."""
    extra, i = info.extra or b"", 0
    while i + 4 <= len(extra):
        kind, size = struct.unpack_from("<HH", extra, i)
        data = extra[i + 4: i + 4 + size]
        i += 4 + size
        if kind == 0x7075 and len(data) > 5 and data[0] == 1 and struct.unpack_from("<I", data, 1)[0] == zlib.crc32(raw):
            try:
                return data[5:].decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def _doubtful(text: str, encoding: str) -> int:
    """Characters that a wrong guess typically produces: private-use, and for CP932 half-width kana,
    for GBK characters outside GB2312 (the common 6,763 hanzi, kana included)."""
    bad = 0
    for ch in text:
        if ord(ch) < 0x80:
            continue
        if 0xE000 <= ord(ch) <= 0xF8FF:
            bad += 1
        elif encoding == "cp932":
            bad += 0xFF61 <= ord(ch) <= 0xFF9F
        else:
            try:
                ch.encode("gb2312")
            except UnicodeEncodeError:
                bad += 1
    return bad


def archive_name_encoding(raw_names: list[bytes]) -> str:
    """The encoding of a zip's member names that lack the UTF-8 flag, decided once per archive.

    UTF-8 when every name decodes as UTF-8 (macOS, Linux and 7-Zip write it without the flag); else CP932
    (Japanese Windows) or GBK (Chinese Windows), whichever decodes every name with fewer characters a wrong
    guess produces; else CP437, the zip standard's default.
    """
    joined = b"/".join(raw_names)
    if all(b < 0x80 for b in joined):
        return "ascii"
    try:
        joined.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    scores = []
    for encoding in ("cp932", "gbk"):
        try:
            text = joined.decode(encoding)
        except UnicodeDecodeError:
            continue
        wide = sum(ord(ch) >= 0x80 for ch in text)
        kana = any(0x3040 <= ord(ch) <= 0x30FF for ch in text)
        scores.append((_doubtful(text, encoding) / max(wide, 1), not (kana and encoding == "cp932"),
                       encoding))
    if scores and min(scores)[0] <= 0.5:
        return min(scores)[2]
    return "cp437"


def zip_members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, str]]:
    """(member, name as its creator meant it) for the files of a zip (folders left out).

    Names with the UTF-8 flag are kept; an Info-ZIP Unicode Path field is used when present; the other
    names are decoded with one encoding detected for the whole archive (`archive_name_encoding`).
    """
    files = [info for info in zf.infolist() if not info.is_dir()]
    legacy = [info for info in files if not info.flag_bits & 0x800]
    raw = {id(info): info.filename.encode("cp437") for info in legacy}  # zipfile decoded them as CP437
    encoding = archive_name_encoding([raw[id(info)] for info in legacy]) if legacy else "utf-8"
    out = []
    for info in files:
        name = info.filename
        if id(info) in raw:
            name = _unicode_path_field(info, raw[id(info)]) or raw[id(info)].decode(
                "cp437" if encoding == "ascii" else encoding, errors="replace")
        out.append((info, name))
    return out


def member_size_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is refused for its declared size or compression ratio, or None."""
    if info.file_size > MAX_MEMBER_BYTES:
        return (f"declares {info.file_size / GIB:.1f} GiB unpacked, more than the {MAX_MEMBER_BYTES / GIB:.0f} GiB "
                "limit per file (refused: split long recordings)")
    if info.file_size > RATIO_CHECK_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return (f"unpacks {info.file_size / max(info.compress_size, 1):.0f}:1 ({info.compress_size} bytes -> "
                f"{info.file_size / 1e6:.0f} MB), more than {MAX_RATIO}:1: a zip bomb, not a recording (refused; "
                "if it is a recording of near-total digital silence, unpack the zip and ingest the folder)")
    return None


def check_free_space(folder: Path, need: int, where: str) -> None:
    """Raise KoeError when writing `need` bytes under `folder` would leave less than MIN_FREE_BYTES free."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need + MIN_FREE_BYTES > free:
        raise KoeError(f"needs {need / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free on the disk of {folder} "
                       f"(and {MIN_FREE_BYTES >> 20} MiB must stay free)", where=where,
                       fix="free disk space, or ingest fewer files at a time")


def extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, label: str = "") -> None:
    """Stream one member to `target`, stopping at its declared size, the size limit or a full disk.

    Raises zipfile.BadZipFile (broken or lying member), OSError, or KoeError (disk nearly full).
    """
    written = 0
    with zf.open(info) as fin, open(target, "wb") as fout:
        for block in iter(lambda: fin.read(1 << 20), b""):
            written += len(block)
            if written > info.file_size or written > MAX_MEMBER_BYTES:  # a header that lies about the size
                raise zipfile.BadZipFile(f"member unpacks to more than the {info.file_size} bytes it declares")
            if written % (64 << 20) < len(block):  # every 64 MiB: someone else may be filling the disk
                check_free_space(target.parent, 0, label or info.filename)
            fout.write(block)


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
        safe = []
        for info, name in zip_members(zf):
            reason = unsafe_member_reason(info, name) or member_size_problem(info)
            if reason:
                result.rejected.append((name, reason))
            elif not is_audio_file(name):
                result.ignored.append(name)
            else:
                safe.append((info, [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]))
        check_free_space(raw_dir, sum(info.file_size for info, _ in safe), str(src))
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
                extract_member(zf, info, tmp, label)
            except KoeError:
                tmp.unlink(missing_ok=True)
                raise
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, zlib.error) as exc:
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
        check_free_space(raw_dir, src.stat().st_size, str(src))
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
