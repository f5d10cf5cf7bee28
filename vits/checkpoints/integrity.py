"""Is a checkpoint file whole, and safe to load? CRC-32 of every record, the pickle's globals, NaN/inf values.

`torch.save` writes a zip archive holding a CRC-32 of every record (the pickled index ``data.pkl`` and
each tensor storage ``data/<n>``), computed while it writes; `torch.load` never checks them, so a file
overwritten in place (same size) loads garbage without a word. `crc_problem` checks them (0.7 s for 420 MB,
less than the torch.load itself).
Files that record no CRC (the pre-1.6 non-zip format, or saved with torch's CRC-32 turned off) cannot be
checked this way; `nonfinite_tensors` still catches the usual result of damage, NaN/inf values.

`pickle_globals` lists the Python objects a pickle refers to by reading its opcodes, which runs nothing;
it tells a file that needs code from the file apart from a truncated one.
"""

from __future__ import annotations

import io
import os
import pickletools
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

_CHUNK = 1 << 22
# Globals that run commands or arbitrary code when a pickle calls them (modules wholesale, or by name).
_CODE_MODULES = {"os", "posix", "nt", "subprocess", "pty", "runpy", "importlib", "shutil", "socket", "sys", "code",
                 "codeop", "ctypes", "marshal", "pickle", "_pickle", "webbrowser", "commands", "popen2", "platform",
                 "timeit", "pdb", "bdb", "multiprocessing"}
_CODE_NAMES = {"eval", "exec", "execfile", "compile", "__import__", "open", "system", "popen", "spawn", "spawnl",
               "spawnv", "execv", "execve", "execl", "call", "check_call", "check_output", "run", "Popen", "apply",
               "breakpoint", "input"}
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}


def crc_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a torch zip file's records, in plain words; None when every CRC-32 matches.

    Also None for a file that is not a zip archive or records no CRC at all (nothing to check).
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return None
    record = None
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if not any(info.CRC for info in infos if info.file_size):
                return None  # saved with torch.serialization.set_crc32_options(False)
            for info in infos:
                record = info.filename.split("/", 1)[-1]
                with archive.open(info) as fh:
                    while fh.read(_CHUNK):
                        pass  # ZipExtFile checks the CRC-32 at the end of each record
    except (zipfile.BadZipFile, EOFError, zlib.error, ValueError, NotImplementedError) as exc:
        if record is None:
            return f"its zip directory is damaged ({exc})"
        what = "the pickled index" if record == "data.pkl" else "a tensor storage" if record.startswith(
            "data/") else "a format record"
        if "CRC-32" in str(exc):
            return (f"record {record} ({what}) does not match the CRC-32 recorded when the file was saved: "
                    "it was changed or damaged after saving")
        return f"the header of record {record} ({what}) is damaged ({exc})"
    except OSError as exc:
        return f"it cannot be read back from the disk ({exc})"
    return None


def _pickle_streams(path: Path) -> list[bytes]:
    """The pickle(s) to scan: ``data.pkl`` of a zip file, else the head of a legacy/plain pickle file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")]
    with open(path, "rb") as fh:
        return [fh.read(64 << 20)]


def pickle_globals(path: str | os.PathLike) -> list[str] | None:
    """``module.name`` of every global the file's pickle refers to, read from its opcodes (nothing runs).

    Returns None when the file is not a readable pickle (truncated, garbage). A legacy torch file is a run
    of pickles (magic number, protocol, system info, object, storage keys); the first five are read.
    """
    found: list[str] = []
    try:
        streams = _pickle_streams(Path(path))
    except (OSError, zipfile.BadZipFile):
        return None
    for data in streams:
        stream = io.BytesIO(data)
        for index in range(5):
            if stream.tell() >= len(data):
                break
            try:
                found += _globals_of_one(stream)
            except (ValueError, EOFError, KeyError, IndexError, UnicodeDecodeError):
                if index == 0:
                    return None
                break  # the raw storage bytes after a legacy file's pickles
    return list(dict.fromkeys(found))


def _globals_of_one(stream: io.BytesIO) -> list[str]:
    out, recent, memo = [], [], {}
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            out.append(str(arg).replace(" ", "."))
        elif name == "STACK_GLOBAL" and len(recent) >= 2:
            out.append(f"{recent[-2]}.{recent[-1]}")
        elif name in _STRING_OPS:
            recent.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
        elif name == "MEMOIZE" and recent:
            memo[len(memo)] = recent[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT") and recent:
            memo[arg] = recent[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET") and arg in memo:
            recent.append(memo[arg])
        if name == "STOP":
            break
    return out


def refused_globals(path: str | os.PathLike) -> list[str]:
    """The globals of `path` that ``weights_only`` loading refuses ([] when none, or unreadable)."""
    names = pickle_globals(path) or []
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except ImportError:  # a torch without the private table: judge by module
        allowed = set()
    extra = {f"{g.__module__}.{g.__qualname__}" for g in torch.serialization.get_safe_globals()
             if hasattr(g, "__qualname__")}
    if not allowed:
        allowed_prefixes = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.complex", "_codecs.encode")
        return [n for n in names if n not in extra and not n.startswith(allowed_prefixes)]
    return [n for n in names if n not in allowed and n not in extra]


def runs_code(global_name: str) -> bool:
    """True for globals that run commands or arbitrary code (os.system, builtins.eval, subprocess.Popen...)."""
    module, _, name = global_name.rpartition(".")
    return module.split(".")[0] in _CODE_MODULES or name in _CODE_NAMES


def nonfinite_tensors(ckpt: Mapping, limit: int = 4) -> list[str]:
    """Names of floating-point tensors holding NaN/inf in a checkpoint's ``model`` and ``optimizer`` state.

    At most `limit` names (the first found); [] when every value is finite.
    """
    bad: list[str] = []

    def visit(value, name: str) -> None:
        if len(bad) >= limit:
            return
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                visit(item, f"{name}.{key}" if name else str(key))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(item, f"{name}[{i}]")

    visit(ckpt.get("model") or {}, "")
    optimizer = ckpt.get("optimizer")
    if isinstance(optimizer, Mapping):
        visit(optimizer.get("state") or {}, "optimizer state")
    return bad
