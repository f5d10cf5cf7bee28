"""The studio's job runner: streaming, progress, failures, cancel of a process tree, re-attach."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from settings import Settings
from studio.jobs import CANCELLED, FAILED, FINISHED, RUNNING, JobRunner, failure_hint
from vits.errors import KoeError

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(root=tmp_path, data_root=tmp_path / "Data")


def _wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def test_streams_log_and_progress_while_running(settings, tmp_path):
    go = tmp_path / "go"
    runner = JobRunner(settings)
    job = runner.start("alice", "slice", py(f"""
        import sys, time, pathlib
        print("hello from the job", flush=True)
        print("KOE_PROGRESS {{\\"stage\\": \\"slice\\", \\"step\\": 1, \\"total\\": 4}}", flush=True)
        print("a warning", file=sys.stderr, flush=True)
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.02)
        print("KOE_PROGRESS {{\\"stage\\": \\"slice\\", \\"step\\": 4, \\"total\\": 4, \\"eta_s\\": 0}}")
        print("done")
    """))
    assert Path(job.log_path).parent == settings.data_root / "alice" / "logs"
    assert _wait_for(lambda: (runner.progress(job) or {}).get("step") == 1)
    assert runner.get(job.id).status == RUNNING
    assert _wait_for(lambda: "a warning" in runner.tail(job))
    assert "hello from the job" in runner.tail(job)
    go.touch()
    job = runner.wait(job.id, timeout=10)
    assert job.status == FINISHED and job.exit_code == 0
    assert runner.progress(job)["step"] == 4
    log = Path(job.log_path).read_text()
    assert log.startswith("$ ") and "done" in log and "a warning" in log
    state = json.loads(Path(job.state_path).read_text())
    assert state["status"] == FINISHED and state["pid"] == job.pid and state["pgid"] == job.pgid
    assert state["command"][0] == PY


def test_failure_by_exit_code_with_tail_and_hint(settings):
    runner = JobRunner(settings)
    job = runner.start("alice", "train", py("""
        import sys
        for i in range(60):
            print(f"line {i}")
        print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
        sys.exit(3)
    """))
    job = runner.wait(job.id, timeout=10)
    assert job.status == FAILED and job.exit_code == 3
    assert len(job.tail) == 40 and job.tail[-1].startswith("RuntimeError: CUDA out of memory")
    assert "line 59" in job.tail and "line 10" not in job.tail
    assert "batch size" in job.hint
    text = runner.status_text(job)
    assert "exit code 3" in text and "batch size" in text and "line 59" in text


def test_failure_by_missing_outputs_and_success_with_globs(settings):
    runner = JobRunner(settings)
    job = runner.start("bob", "text", py("print('ok')"), expected=["filelists/train.list"])
    job = runner.wait(job.id, timeout=10)
    assert job.status == FAILED and job.exit_code == 0
    assert "filelists/train.list" in job.error

    voice = settings.voice_dir("bob")
    code = f"""
        import pathlib
        d = pathlib.Path({str(voice)!r})
        (d / "models").mkdir(parents=True, exist_ok=True)
        (d / "models" / "G_20.pth").write_bytes(b"x")
        (d / "esd.list").write_text("")
    """
    job = runner.start("bob", "train", py(code), expected=["models/G_*.pth", "esd.list"])
    assert runner.wait(job.id, timeout=10).status == FINISHED


def test_cancel_kills_process_tree_including_grandchildren(settings, tmp_path):
    pids = tmp_path / "pids.txt"
    runner = JobRunner(settings, grace_s=5)
    job = runner.start("alice", "features", py(f"""
        import subprocess, sys, time, pathlib
        grand = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        pathlib.Path({str(pids)!r}).write_text(f"{{grand.pid}}")
        time.sleep(60)
    """))
    assert _wait_for(lambda: pids.exists() and pids.read_text())
    grandchild = int(pids.read_text())
    assert _alive(grandchild)
    t0 = time.time()
    job = runner.cancel(job.id, wait=True)
    assert time.time() - t0 < 5  # SIGTERM was enough: no wait for the grace period
    assert job.status == CANCELLED
    assert _wait_for(lambda: not _alive(grandchild), timeout=5)
    assert "SIGTERM" in Path(job.log_path).read_text()


def test_graceful_stop_lets_the_job_save_then_sigkill_after_grace(settings, tmp_path):
    saved = tmp_path / "saved"
    ready = tmp_path / "ready"
    runner = JobRunner(settings, grace_s=0.5)
    # A trainer that saves a checkpoint on SIGTERM and exits.
    job = runner.start("alice", "train", py(f"""
        import signal, sys, time, pathlib
        def stop(*_):
            pathlib.Path({str(saved)!r}).write_text("checkpoint")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        pathlib.Path({str(ready)!r}).touch()
        time.sleep(60)
    """))
    assert _wait_for(ready.exists)
    job = runner.cancel(job.id, grace_s=10, wait=True)
    assert job.status == CANCELLED and saved.read_text() == "checkpoint"

    # A job that ignores SIGTERM is killed after the grace period.
    ready.unlink()
    stubborn = runner.start("alice", "train", py(f"""
        import signal, time, pathlib
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path({str(ready)!r}).touch()
        time.sleep(60)
    """))
    assert _wait_for(ready.exists)
    t0 = time.time()
    runner.cancel(stubborn.id)  # returns at once; a thread escalates
    assert time.time() - t0 < 0.4
    job = runner.wait(stubborn.id, timeout=10)
    assert job.status == CANCELLED and time.time() - t0 >= 0.5
    assert "SIGKILL" in Path(job.log_path).read_text()


def test_reattach_after_studio_restart(settings, tmp_path):
    go = tmp_path / "go"
    first = JobRunner(settings)
    job = first.start("alice", "train", py(f"""
        import time, pathlib
        print("KOE_PROGRESS {{\\"stage\\": \\"train\\", \\"step\\": 7, \\"total\\": 20, \\"epoch\\": 1}}", flush=True)
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.02)
    """), gpu=True, expected=[])
    # The "restarted" studio knows nothing but what is on disk.
    second = JobRunner(settings)
    running = second.running()
    assert [j.id for j in running] == [job.id]
    attached = running[0]
    assert attached.gpu and attached.pid == job.pid
    assert _wait_for(lambda: (second.progress(attached) or {}).get("step") == 7)
    with pytest.raises(KoeError, match="GPU is busy"):
        second.start("bob", "train", py("pass"), gpu=True)
    go.touch()
    done = second.wait(job.id, timeout=10)
    assert done.status == FINISHED and done.exit_code == 0  # the exit code came from the wrapper's file
    assert JobRunner(settings).get(job.id).status == FINISHED


def test_reattached_job_can_be_cancelled_by_the_new_studio(settings):
    first = JobRunner(settings)
    job = first.start("alice", "train", py("import time; time.sleep(60)"))
    second = JobRunner(settings, grace_s=5)
    assert second.cancel(job.id, wait=True).status == CANCELLED
    assert not _alive(job.pid)


def test_vanished_process_is_a_failure(settings):
    runner = JobRunner(settings)
    job = runner.start("alice", "slice", py("pass"))
    runner.wait(job.id, timeout=10)
    # Pretend the state was left behind as "running" by a studio on a machine that rebooted.
    state = json.loads(Path(job.state_path).read_text())
    state.update(status=RUNNING, exit_code=None, end_time=None, pid=2**22 - 3, pgid=2**22 - 3)
    Path(job.state_path).write_text(json.dumps(state))
    Path(job.exit_path).unlink()
    job = JobRunner(settings).get(job.id)
    assert job.status == FAILED and "without an exit code" in job.error


def test_one_job_per_voice_and_gpu_lock(settings):
    runner = JobRunner(settings, grace_s=2)
    a = runner.start("alice", "train", py("import time; time.sleep(30)"), gpu=True)
    try:
        with pytest.raises(KoeError, match="busy"):
            runner.start("alice", "text", py("pass"))
        with pytest.raises(KoeError, match="GPU is busy"):
            runner.start("bob", "features", py("pass"), gpu=True)
        b = runner.start("bob", "slice", py("pass"))  # CPU work on another voice is fine
        c = runner.start("carol", "features", py("pass"), gpu=True, allow_parallel=True)
        assert runner.wait(b.id, 10).status == FINISHED and runner.wait(c.id, 10).status == FINISHED
    finally:
        runner.cancel(a.id, wait=True)


def test_names_cannot_escape_the_data_root(settings):
    runner = JobRunner(settings)
    for voice in ["../evil", "a/b", ".hidden"]:
        with pytest.raises(KoeError):
            runner.start(voice, "slice", py("pass"))
    with pytest.raises(KoeError):
        runner.start("alice", "../x", py("pass"))
    assert not (settings.data_root.parent / "evil").exists()


def test_command_that_cannot_start_fails_cleanly(settings):
    runner = JobRunner(settings)
    job = runner.wait(runner.start("alice", "slice", ["/nonexistent/program"]).id, timeout=10)
    assert job.status == FAILED and job.exit_code == 127


def test_failure_hints():
    s = Settings(root=Path("/r"), data_root=Path("/r/Data"), bert={"ZH": Path("/r/models/bert/zh")})
    assert "/r/models/bert/zh" in failure_hint(["KoeError: BERT folder not found: /x"], s)
    assert "wavlm" in failure_hint(["wavlm-base-plus folder is missing"], s).lower()
    assert failure_hint(["esd.list:3: unknown language 'XX' → use ZH, JP or EN"]) == "use ZH, JP or EN"
    assert failure_hint(["all good"]) is None
