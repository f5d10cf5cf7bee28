"""The job runner: every pipeline stage runs as a subprocess whose state lives on disk.

A job is one command (an argument list, never a shell string) started in its own session, so it and
everything it spawns share one process group. Its stdout and stderr go straight into
``Data/<voice>/logs/<job>.log``; a small wrapper (`studio.jobwrap`) records the exit code in
``<job>.exit``; ``<job>.job.json`` holds the pid, process group, command, start time and expected outputs.
Because nothing lives only in the studio's memory, a restarted studio re-attaches to a running job.

Status: ``running``; ``finished`` (exit 0 and every expected output exists); ``failed`` (a non-zero exit,
missing outputs, or the process vanished); ``cancelled`` (stopped by the user).
"""

from __future__ import annotations

import glob as globlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from settings import REPO_ROOT, Settings
from studio.hints import error_line, failure_hint  # noqa: F401 - failure_hint is part of this module's API
from vits.config import write_text_atomic
from vits.errors import KoeError
from vits.progress import parse_progress
from vits.voice_folder import LOGS
from vits.voice_lock import busy_error, lock_holder, pid_alive, proc_start

RUNNING, FINISHED, FAILED, CANCELLED = "running", "finished", "failed", "cancelled"
TAIL_LINES = 40
# Bytes read back from the end of a log when attaching to it, to find the newest progress line.
_ATTACH_WINDOW = 256 * 1024
# The words that mark the studio header's re-attached note (`JobRunner.reattach_note`).
REATTACHED = "job running: re-attached"


@dataclass
class Job:
    """One subprocess job, as stored in ``<job>.job.json``."""

    id: str
    voice: str | None
    stage: str
    command: list[str]
    log_path: str
    state_path: str
    exit_path: str
    cwd: str
    start_time: float
    expected: list[str] = field(default_factory=list)
    gpu: bool = False
    pid: int = 0
    pgid: int = 0
    proc_start: str | None = None
    status: str = RUNNING
    exit_code: int | None = None
    end_time: float | None = None
    cancel_time: float | None = None
    error: str | None = None
    hint: str | None = None
    tail: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status != RUNNING

    @property
    def elapsed(self) -> float:
        return (self.end_time or time.time()) - self.start_time

    def summary(self) -> str:
        """One line for the UI: stage, status, exit code, elapsed time."""
        text = f"{self.stage}: {self.status}"
        if self.exit_code is not None and self.status != FINISHED:
            text += f" (exit code {self.exit_code})"
        text += f" after {_duration(self.elapsed)}"
        if self.error and self.error != f"exit code {self.exit_code}":
            text += f" — {self.error}"
        return text


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _pid_alive(pid: int, started: str | None) -> bool:
    """`pid` is alive and (when its start time was recorded) still the process the studio started."""
    return bool(pid_alive(pid)) and (started is None or proc_start(pid) in {None, started})


def _group_alive(pgid: int) -> bool:
    if pgid <= 0:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds for zombies; look for a live member.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            rest = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if len(rest) > 2 and rest[2] == str(pgid) and rest[0] not in {"Z", "X"}:
            return True
    return not Path("/proc/self").exists()


def read_tail(path: str | Path, n: int = TAIL_LINES) -> list[str]:
    """The last `n` lines of a text file (decoded leniently); [] when it does not exist."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            block, data = 8192, b""
            while size > 0 and data.count(b"\n") <= n:
                step = min(block, size)
                size -= step
                f.seek(size)
                data = f.read(step) + data
                block *= 2
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").replace("\r", "\n").splitlines()
    return [line for line in lines if line.strip()][-n:]


class JobRunner:
    """Starts, watches, cancels and re-attaches to subprocess jobs under the data root.

    Args:
        settings: studio settings (the data root, voice folder rules, model folders for hints).
        grace_s: seconds between SIGTERM and SIGKILL on cancel.
        python: interpreter used for the exit-code wrapper.
    """

    def __init__(self, settings: Settings, grace_s: float = 30.0, python: str = sys.executable):
        self.settings = settings
        self.grace_s = grace_s
        self.python = python
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._jobs: dict[str, Job] = {}
        self._progress: dict[str, tuple[int, dict | None]] = {}

    # ----------------------------------------------------------------------------------------- paths
    def logs_dir(self, voice: str | None) -> Path:
        """Where a voice's job logs live (``Data/<voice>/logs``); voice-less jobs use ``Data/.studio/logs``."""
        if voice is None:
            return self.settings.data_root / ".studio" / "logs"
        return self.settings.voice_dir(voice) / LOGS

    def _base_dir(self, job: Job) -> Path:
        return self.settings.voice_dir(job.voice) if job.voice else self.settings.data_root

    # ----------------------------------------------------------------------------------------- start
    def start(self, voice: str | None, stage: str, command: list[str], *, expected: list[str] | None = None,
              gpu: bool = False, allow_parallel: bool = False, env: dict | None = None,
              cwd: str | Path | None = None) -> Job:
        """Start `command` as a job of `voice` and return it at once.

        Takes the argument list (``command[0]`` is the program), the outputs that must exist when it
        succeeds (paths or globs, relative to the voice folder), and whether it uses the GPU.
        Raises KoeError if the voice already runs a job, or a GPU job runs and `allow_parallel` is off.
        """
        if not command or not all(isinstance(a, str) for a in command):
            raise KoeError("a job command must be a non-empty list of strings", where=stage)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", stage):
            raise KoeError(f"invalid stage name {stage!r}", fix="use letters, digits, '-', '_'")
        with self._lock:
            busy = self.running()
            if voice is not None:
                same = [j for j in busy if j.voice == voice]
                if same and not allow_parallel:
                    doing = "busy: already training" if same[0].stage == "train" else f"busy with {same[0].stage}"
                    raise KoeError(f"voice {voice!r} is {doing} ({same[0].id})",
                                   fix="wait for it to finish or stop it first")
                if stage == "train" and (holder := lock_holder(self.settings.voice_dir(voice))) is not None:
                    raise busy_error(self.settings.voice_dir(voice), holder)  # a run outside the studio
            if gpu and not allow_parallel:
                gpu_jobs = [j for j in busy if j.gpu]
                if gpu_jobs:
                    j = gpu_jobs[0]
                    raise KoeError(f"the GPU is busy with {j.stage} of {j.voice or 'the studio'} ({j.id})",
                                   fix="wait for it, stop it, or allow parallel GPU jobs")
            logs = self.logs_dir(voice)
            logs.mkdir(parents=True, exist_ok=True)
            job_id = f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            job = Job(id=job_id, voice=voice, stage=stage, command=list(command),
                      log_path=str(logs / f"{job_id}.log"), state_path=str(logs / f"{job_id}.job.json"),
                      exit_path=str(logs / f"{job_id}.exit"), cwd=str(cwd or REPO_ROOT),
                      start_time=time.time(), expected=list(expected or []), gpu=gpu)
            child_env = dict(os.environ)
            child_env.update(env or {})
            child_env["PYTHONUNBUFFERED"] = "1"
            # The wrapper must import studio/ regardless of the job's working directory.
            child_env["PYTHONPATH"] = os.pathsep.join(
                p for p in [str(REPO_ROOT), child_env.get("PYTHONPATH", "")] if p)
            with open(job.log_path, "ab") as log:
                log.write(f"$ {' '.join(command)}\n".encode())
                log.flush()
                try:
                    proc = subprocess.Popen(
                        [self.python, "-m", "studio.jobwrap", job.exit_path, "--", *command],
                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=job.cwd,
                        env=child_env, start_new_session=True, close_fds=True)
                except OSError as exc:
                    raise KoeError(f"could not start {stage}: {exc}", where=command[0]) from None
            job.pid = proc.pid
            job.pgid = proc.pid  # start_new_session makes the wrapper its group's leader
            job.proc_start = proc_start(proc.pid)
            self._procs[job.id] = proc
            self._jobs[job.id] = job
            self._save(job)
            return job

    # ------------------------------------------------------------------------------------ bookkeeping
    def _save(self, job: Job) -> None:
        write_text_atomic(Path(job.state_path), json.dumps(asdict(job), indent=1, ensure_ascii=False))

    def _load(self, path: Path) -> Job | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Job(**{k: v for k, v in data.items() if k in Job.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return None

    def _state_files(self, voice: str | None = None) -> list[Path]:
        if voice is not None:
            return sorted(self.logs_dir(voice).glob("*.job.json"))
        root = self.settings.data_root
        return sorted(root.glob(f"*/{LOGS}/*.job.json")) + sorted((root / ".studio" / "logs").glob("*.job.json"))

    def jobs(self, voice: str | None = None, stage: str | None = None) -> list[Job]:
        """All known jobs (of `voice` / `stage` if given), refreshed, newest first."""
        found = []
        with self._lock:
            for path in self._state_files(voice):
                job_id = path.name[: -len(".job.json")]
                job = self._jobs.get(job_id)
                if job is None or job.status == RUNNING:
                    loaded = self._load(path)
                    if loaded is None:
                        continue
                    if job is None or loaded.status != RUNNING or loaded.cancel_time:
                        job = loaded
                    self._jobs[job_id] = job
                if stage and job.stage != stage:
                    continue
                found.append(self.refresh(job))
        return sorted(found, key=lambda j: j.start_time, reverse=True)

    def running(self, voice: str | None = None) -> list[Job]:
        """Jobs still running (re-attached ones included)."""
        return [j for j in self.jobs(voice) if j.status == RUNNING]

    def reattach_note(self) -> str:
        """The header note of a (re)loaded page: "⏳ `<voice>` has a <stage> job running: re-attached." while a
        voice's job runs (one a restarted studio found on disk included); "" when none runs."""
        running = [j for j in self.running() if j.voice]
        return f"⏳ `{running[0].voice}` has a {running[0].stage} {REATTACHED}." if running else ""

    def note_update(self, shown: str | None) -> str | None:
        """On a timer tick: the header text to show instead of `shown`, or None to leave it. Only a re-attached
        note is redone (so it goes once its job has ended); any other text (the user's last action) stays."""
        if not shown or REATTACHED not in shown:
            return None
        now = self.reattach_note()
        return None if now == shown else now

    def get(self, job_id: str) -> Job:
        """The job `job_id`, refreshed. Raises KoeError if unknown."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                for path in self._state_files():
                    if path.name == f"{job_id}.job.json":
                        job = self._load(path)
                        break
            if job is None:
                raise KoeError(f"unknown job {job_id!r}")
            self._jobs[job_id] = job
            return self.refresh(job)

    def latest(self, voice: str | None, stage: str | None = None) -> Job | None:
        """The newest job of `voice` (and `stage`), or None."""
        jobs = self.jobs(voice, stage)
        return jobs[0] if jobs else None

    def _alive(self, job: Job) -> bool:
        proc = self._procs.get(job.id)
        if proc is not None:
            return proc.poll() is None
        return _pid_alive(job.pid, job.proc_start)

    def refresh(self, job: Job) -> Job:
        """Update `job`'s status from its process and exit file (finishing it when it has ended)."""
        with self._lock:
            if job.status != RUNNING:
                return job
            alive = self._alive(job)
            if alive:
                # A cancel whose grace period ran out while no studio was watching: finish it now.
                if job.cancel_time and time.time() - job.cancel_time > self.grace_s:
                    self._kill_group(job, signal.SIGKILL)
                return job
            code = self._read_exit(job)
            job.exit_code = code
            job.end_time = time.time()
            job.tail = self.tail(job)  # without progress lines: the user reads what went wrong
            if job.cancel_time:
                job.status = CANCELLED
                job.error = "stopped by the user"
            elif code is None:
                job.status = FAILED
                job.error = "the process ended without an exit code (killed, or the machine restarted)"
            elif code != 0:
                job.status = FAILED
                job.error = f"exit code {code}"
            else:
                missing = self.missing_outputs(job)
                if missing:
                    job.status = FAILED
                    job.error = "finished but these outputs are missing: " + ", ".join(missing)
                else:
                    job.status = FINISHED
            if job.status == FAILED:
                job.hint = failure_hint(job.tail, self.settings)
            self._procs.pop(job.id, None)
            # Stragglers the command left behind in its group must not outlive the job.
            if _group_alive(job.pgid):
                self._kill_group(job, signal.SIGKILL)
            self._save(job)
            return job

    def _read_exit(self, job: Job) -> int | None:
        try:
            return int(Path(job.exit_path).read_text().strip())
        except (OSError, ValueError):
            proc = self._procs.get(job.id)
            # The wrapper itself was killed: its own return code is the best we know.
            if proc is not None and proc.returncode is not None and proc.returncode >= 0:
                return proc.returncode
            return None

    def missing_outputs(self, job: Job) -> list[str]:
        """The expected outputs of `job` that do not exist (globs must match at least one file)."""
        base = self._base_dir(job)
        missing = []
        for pattern in job.expected:
            path = Path(pattern) if Path(pattern).is_absolute() else base / pattern
            if any(c in pattern for c in "*?["):
                if not globlib.glob(str(path)):
                    missing.append(pattern)
            elif not path.exists():
                missing.append(pattern)
        return missing

    # ------------------------------------------------------------------------------------------ stop
    def _kill_group(self, job: Job, sig: int) -> None:
        try:
            os.killpg(job.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def cancel(self, job_id: str, grace_s: float | None = None, wait: bool = False) -> Job:
        """Stop a job: SIGTERM to its whole process group, SIGKILL after the grace period.

        Returns at once (the escalation runs in a thread) unless `wait` is set.
        """
        grace = self.grace_s if grace_s is None else grace_s
        with self._lock:
            job = self.get(job_id)
            if job.done:
                return job
            job.cancel_time = time.time()
            self._save(job)
            with open(job.log_path, "ab") as log:
                log.write(b"[studio] stop requested: SIGTERM sent to the job's process group\n")
            self._kill_group(job, signal.SIGTERM)

        def escalate():
            deadline = time.time() + grace
            while time.time() < deadline:
                if not _group_alive(job.pgid) and not self._alive(job):
                    break
                time.sleep(0.1)
            else:
                with open(job.log_path, "ab") as log:
                    log.write(f"[studio] still running after {grace:g}s: SIGKILL\n".encode())
                self._kill_group(job, signal.SIGKILL)
                # SIGKILL is asynchronous: let the group die before reading its status.
                for _ in range(100):
                    if not _group_alive(job.pgid) and not self._alive(job):
                        break
                    time.sleep(0.05)
            self.refresh(job)

        if wait:
            escalate()
        else:
            threading.Thread(target=escalate, daemon=True, name=f"cancel-{job_id}").start()
        return job

    def wait(self, job_id: str, timeout: float | None = None, poll_s: float = 0.1) -> Job:
        """Block until the job is done (or `timeout` seconds pass); returns it."""
        deadline = None if timeout is None else time.time() + timeout
        while True:
            job = self.get(job_id)
            if job.done or (deadline is not None and time.time() > deadline):
                return job
            time.sleep(poll_s)

    # -------------------------------------------------------------------------------------- reading
    def progress(self, job: Job) -> dict | None:
        """The newest KOE_PROGRESS fields the job printed (read incrementally from its log), or None."""
        with self._lock:
            offset, latest = self._progress.get(job.id, (-1, None))
            try:
                with open(job.log_path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    size = f.tell()
                    if offset < 0 or offset > size:
                        offset = max(0, size - _ATTACH_WINDOW)
                    f.seek(offset)
                    data = f.read(size - offset)
            except OSError:
                return latest
            # Only whole lines; a half-written one is read next time.
            end = data.rfind(b"\n") + 1
            for line in data[:end].decode("utf-8", errors="replace").splitlines():
                fields = parse_progress(line)
                if fields is not None:
                    latest = fields
            self._progress[job.id] = (offset + end, latest)
            return latest

    def tail(self, job: Job, n: int = TAIL_LINES, progress_lines: bool = False) -> list[str]:
        """The last `n` log lines of `job` (KOE_PROGRESS lines left out unless asked for)."""
        lines = read_tail(job.log_path, n * 4 if not progress_lines else n)
        if not progress_lines:
            lines = [line for line in lines if parse_progress(line) is None]
        return lines[-n:]

    def status_text(self, job: Job | None) -> str:
        """Markdown describing a job for the UI: status, progress or its result, and for failures the error
        line first, a hint, and the last log lines (progress lines left out)."""
        if job is None:
            return "No job yet."
        job = self.refresh(job)
        icon = {RUNNING: "⏳", FINISHED: "✅", FAILED: "❌", CANCELLED: "⏹"}[job.status]
        text = f"{icon} **{_md(job.summary())}**  \nlog: `{job.log_path}`"
        prog = self.progress(job)
        if prog and job.status == RUNNING:
            text += "\n\n" + format_progress_text(prog)
        elif prog and job.status == FINISHED and prog.get("message"):
            # The stage's closing line ("89 clips from 10 recordings", "0 transcribed, 89 already done").
            text += f"\n\nResult: {_md(str(prog['message']))}"
        if job.status == FAILED:
            tail = [line for line in (job.tail or self.tail(job)) if parse_progress(line) is None]
            if error := error_line(tail):
                text += f"\n\n**Error:** {_md(error)}"
            if job.hint:
                text += f"\n\n**Hint:** {_md(job.hint)}"
            text += "\n\nLast log lines:\n```\n" + "\n".join(tail[-TAIL_LINES:]) + "\n```"
        return text


def _md(text: str) -> str:
    """Text shown literally inside markdown (globs and underscores in paths stay as typed)."""
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", text)


def format_progress_text(p: dict) -> str:
    """One line from progress fields: step/total, percent, epoch, it/s, ETA, message."""
    parts = []
    step, total = p.get("step"), p.get("total")
    if step is not None:
        parts.append(f"{p.get('stage', '')} {step}/{total}" if total else f"{p.get('stage', '')} {step}")
        if total:
            parts.append(f"{100.0 * step / max(total, 1):.0f}%")
    if p.get("epoch") is not None:
        parts.append(f"epoch {p['epoch']}")
    if p.get("it_s"):
        parts.append(f"{p['it_s']:.2f} it/s")
    if p.get("eta_s") is not None:
        parts.append(f"ETA {_duration(p['eta_s'])}")
    if p.get("message"):
        parts.append(str(p["message"]))
    return " · ".join(parts)
