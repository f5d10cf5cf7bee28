"""Shared fixtures. Tests never touch the network: hub access is switched off here.

Under CI (`CI=true`) or `bash scripts/test.sh` (`KOE_TESTS_STRICT=1`), a system tool that
`scripts/setup.sh --dev` installs is required: the run stops before the first test naming what is
missing, instead of tests skipping. A plain `pytest` on a machine without them skips those tests.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Training tests train a multi-period discriminator 16x narrower than Bert-VITS2's (≈0.2M parameters
# instead of 47M; D files of a few MB instead of ~560 MB). Subprocesses inherit it. The spec's full-width
# network is tested on its own (test_discriminators.py, test_mpd_reference.py).
os.environ.setdefault("KOE_TESTS_ONLY_MPD_DIVISOR", "16")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("KOE_SHARED", REPO.parent / "shared"))
STRICT = os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("KOE_TESTS_STRICT") == "1"
# What `scripts/setup.sh --dev` installs from apt, with the path the tests look for.
SYSTEM_TOOLS = {"ffmpeg": "ffmpeg", "espeak-ng": "espeak-ng", "sox": "sox", "chromium": "/usr/bin/chromium"}


def missing_tools() -> list[str]:
    """The system packages of `scripts/setup.sh --dev` that are not installed."""
    return [name for name, exe in SYSTEM_TOOLS.items()
            if not (os.access(exe, os.X_OK) if exe.startswith("/") else shutil.which(exe))]


def pytest_sessionstart(session):
    if STRICT and (missing := missing_tools()):
        pytest.exit(f"CI=true / KOE_TESTS_STRICT=1: missing system packages {', '.join(missing)}; tests would "
                    f"skip instead of running → install them (as root: bash scripts/setup.sh --dev, or "
                    f"apt-get install {' '.join(missing)})", returncode=3)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` (spec, golden vectors, tokenizers). Tests that need it skip when it is absent."""
    if not (SHARED / "golden").is_dir():
        pytest.skip(f"golden data not found at {SHARED} (set KOE_SHARED to the shared/ folder)")
    return SHARED


@pytest.fixture(scope="session")
def golden_dir(shared_dir) -> Path:
    return shared_dir / "golden"


@pytest.fixture(autouse=True)
def _torch_threads(request):
    """`pytest.mark.torch_threads(n)`: run the test with n torch threads and restore the count after it (tiny
    models are fastest on one thread, and do not then fight the subprocesses of other tests for the cores)."""
    marker = request.node.get_closest_marker("torch_threads")
    if marker is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(marker.args[0])
    yield
    torch.set_num_threads(before)
