"""One trainer per voice: the lock file ``Data/<voice>/train.lock`` (`vits.voice_folder.TRAIN_LOCK`).

The trainer (rank 0 of a run: `vits.train.lock`) holds it for the whole run, whether started by the studio,
the command line or torchrun. It is an advisory `flock` on the file, which the kernel drops when the holder
dies (kill -9 included), plus a small JSON record of the holder (pid, host, boot id, process start time,
command, start time) that is emptied on a clean exit, and whose modification time is refreshed every
`HEARTBEAT_S` seconds while the run lives.

A record left behind is judged stale, and taken over with a message, when its process is gone (same host:
the pid is dead, was reused by another program, or the machine restarted since) or, for a record written on
another host, when it has had no heartbeat for `STALE_AFTER_S` seconds. This module does not import torch:
the studio asks `lock_holder` before starting a job.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vits.errors import KoeError
from vits.voice_folder import TRAIN_LOCK

try:
    import fcntl
except ImportError:  # Windows: the record alone (pid and heartbeat) decides
    fcntl = None

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
_FLOCK_WAIT_S = 1.0  # a holder that is just writing or emptying its record gets this long
_ORPHAN_WAIT_S = 15.0  # children of a dead holder that still share its flock get this long to exit


class VoiceBusy(KoeError):
    """The voice is already being trained by another live process."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def proc_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a reused pid apart), or None for a zombie or where /proc is absent."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return rest[19] if len(rest) > 19 and rest[0] not in ("Z", "X") else None


def pid_alive(pid: int) -> bool | None:
    """True/False for a pid on this machine (a zombie is not alive); None where that cannot be asked safely
    (Windows). The studio's job runner asks the same."""
    if os.name == "nt":
        return None
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return proc_start(pid) is not None or not Path("/proc/self").exists()


@dataclass
class LockHolder:
    """Who holds (or last held) a voice's training lock, from its record."""

    pid: int
    host: str
    boot_id: str
    proc_start: str | None
    started: float
    command: str
    heartbeat: float  # the record's modification time

    def describe(self) -> str:
        """E.g. "pid 4242 on this machine (python -m pipeline.train Data/alice), started 2026-12-01 18:20 UTC"."""
        where = "this machine" if self.host == socket.gethostname() else f"host {self.host}"
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.started)) if self.started else "unknown time"
        command = f" ({self.command[:120]})" if self.command else ""
        return f"pid {self.pid} on {where}{command}, started {when}"

    def stale_reason(self, now: float | None = None, stale_after_s: float = STALE_AFTER_S) -> str | None:
        """Why this record no longer stands for a live trainer, or None when it (still) does."""
        now = time.time() if now is None else now
        same_machine = self.host == socket.gethostname() and (not self.boot_id or self.boot_id == _boot_id())
        if self.host == socket.gethostname() and not same_machine:
            return "this machine restarted since"
        if same_machine:
            alive = pid_alive(self.pid)
            if alive is False:
                return f"pid {self.pid} is gone (the run crashed or was killed)"
            if alive and self.proc_start and proc_start(self.pid) not in (None, self.proc_start):
                return f"pid {self.pid} now belongs to another program (the run ended without cleaning up)"
            if alive:
                return None
        age = now - self.heartbeat
        if age > stale_after_s:
            return f"no heartbeat for {age / 60:.0f} min (the run on {self.host} is gone)"
        return None


def _command_line() -> str:
    """How this process was started, e.g. "python -m pipeline.train Data/alice --max-steps 100"."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None and spec.name else ["python", sys.argv[0]]
    return " ".join(head + sys.argv[1:])


def _read_record(path: Path) -> LockHolder | None:
    try:
        text = path.read_text(encoding="utf-8")
        mtime = path.stat().st_mtime
    except OSError:
        return None
    if not text.strip():
        return None
    try:
        data = json.loads(text)
        return LockHolder(int(data["pid"]), str(data["host"]), str(data.get("boot_id", "")),
                          data.get("proc_start"), float(data.get("started", 0)), str(data.get("command", "")),
                          mtime)
    except (ValueError, KeyError, TypeError):
        return None  # a record cut short by a crash while being written: nobody stands behind it


def lock_path(voice_dir: str | os.PathLike) -> Path:
    return Path(voice_dir) / TRAIN_LOCK


def lock_holder(voice_dir: str | os.PathLike, stale_after_s: float = STALE_AFTER_S) -> LockHolder | None:
    """The live trainer of a voice, from its lock record (nothing is locked or changed), else None.

    None also for a stale record (its process is gone); the next trainer takes that over.
    """
    holder = _read_record(lock_path(voice_dir))
    if holder is None or holder.stale_reason(stale_after_s=stale_after_s) is not None:
        return None
    return holder


def busy_error(voice_dir: str | os.PathLike, holder: LockHolder | None, orphans: bool = False) -> VoiceBusy:
    """The "already training" error, naming the holder and how to stop it."""
    if orphans and holder is not None:
        return VoiceBusy(f"the training lock is still held by processes left over from a run that ended "
                         f"({holder.describe()}; e.g. its data-loader workers)", where=str(lock_path(voice_dir)),
                         fix=f"wait a few seconds and start again, or end them (fuser -v {lock_path(voice_dir)} lists them)")
    who = holder.describe() if holder else "another process that is just starting"
    remote = holder is not None and holder.host != socket.gethostname()
    stop = (f"stop it on {holder.host}" if remote else
            f"stop it (Stop in the studio's Train tab, Ctrl-C in its terminal, or kill {holder.pid})" if holder
            else "stop it")
    return VoiceBusy(f"this voice is already training: {who}; a second trainer would overwrite its checkpoints",
                     where=str(voice_dir), fix=f"wait for that run to finish, or {stop}; then start again")


class VoiceLock:
    """The training lock of one voice folder, held by this process between `acquire` and `release`.

    Args:
        voice_dir: the voice folder (``Data/<voice>``); the lock file lives in it.
        heartbeat_s: seconds between refreshes of the record's modification time.
        stale_after_s: a record from another host without heartbeat for this long is stale.
    """

    def __init__(self, voice_dir: str | os.PathLike, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S):
        self.voice_dir = Path(voice_dir)
        self.path = lock_path(voice_dir)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> str | None:
        """Take the lock. Returns a message when a stale lock was taken over (else None).

        Raises VoiceBusy when a live process holds it; OSError when the file cannot be created.
        """
        if self.held:
            return None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not self._flock(fd, _FLOCK_WAIT_S):
                holder = _read_record(self.path)
                why = holder.stale_reason(stale_after_s=self.stale_after_s) if holder else None
                # A dead trainer's forked children (data-loader workers) share its flock until they notice
                # and exit, within seconds.
                if why is None or not self._flock(fd, _ORPHAN_WAIT_S):
                    now = _read_record(self.path)  # a new trainer may have taken it meanwhile
                    if why is not None and now is not None and now.stale_reason(stale_after_s=self.stale_after_s) is None:
                        holder, why = now, None
                    raise busy_error(self.voice_dir, holder, orphans=why is not None)
            holder = _read_record(self.path)
            note = None
            if holder is not None and not (holder.pid == os.getpid() and holder.host == socket.gethostname()):
                why = holder.stale_reason(stale_after_s=self.stale_after_s)
                if why is None:
                    raise busy_error(self.voice_dir, holder)
                note = f"took over the training lock {self.path} left by {holder.describe()}: {why}"
            self._write_record(fd)
        except BaseException:
            os.close(fd)  # also drops our flock
            raise
        self._fd = fd
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="voice-lock-heartbeat")
        self._beat.start()
        return note

    def release(self) -> None:
        """Empty the record and let go of the lock (nothing happens when not held)."""
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # the file stays: another process may already wait on this inode
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> VoiceLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def _flock(self, fd: int, wait_s: float) -> bool:
        """Exclusive flock within `wait_s`; False when another process holds it. True where there is no flock."""
        if fcntl is None:
            return True
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return True  # no flock on this file system: the record alone decides
                raise

    def _write_record(self, fd: int) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
                  "proc_start": proc_start(os.getpid()), "started": time.time(),
                  "command": _command_line()}
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except OSError:
                pass  # a missed beat only matters to another host, after STALE_AFTER_S
