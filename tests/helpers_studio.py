"""`python app.py` as a real subprocess on a free port, for the browser and studio-port API tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"  # Debian's chromium (never `playwright install`)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Studio:
    """The studio with its own data root (`<root>/Data`) and config.yml; `extra` are more app.py arguments."""

    def __init__(self, root: Path, config: Path, *extra: str, env: dict | None = None):
        self.root, self.port = root, free_port()
        self.killed = False  # stop() had to SIGKILL it
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"studio-{self.port}.log"
        # A key in the caller's environment would lock the API: each test says what it wants.
        child_env = {k: v for k, v in os.environ.items() if k != "KOE_API_KEY"}
        child_env.update({"GRADIO_ANALYTICS_ENABLED": "False", "KOE_STUDIO_REFRESH_S": "2",
                          "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                          **(env or {})})
        self.proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(self.port), "--root", str(root / "Data"), "--config",
             str(config), *extra], cwd=REPO, env=child_env, stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 120) -> None:
        """Until the page answers 200; raises AssertionError with the log's tail when it exits or times out."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("the studio exited:\n" + self.log.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("the studio did not start:\n" + self.log.read_text(errors="replace")[-3000:])

    def stop(self) -> int:
        """Cancel the jobs it started, then Ctrl-C (SIGKILL after 15 s); returns the exit code."""
        # Jobs outlive the studio by design (a restarted studio re-attaches); a test must not leave any.
        from settings import Settings
        from studio.jobs import JobRunner

        runner = JobRunner(Settings(root=self.root, data_root=self.root / "Data"), grace_s=5)
        for job in runner.running():
            runner.cancel(job.id, wait=True)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.killed = True
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@contextmanager
def studio_page(studio: Studio, height: int = 1000) -> Iterator:
    """A headless Chromium page (1400 x `height`, 30 s timeouts) opened on the running studio; closed after."""
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.set_default_timeout(30000)
            page.goto(studio.url)
            yield page
        finally:
            browser.close()
