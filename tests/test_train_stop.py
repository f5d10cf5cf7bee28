"""Stopping a two-process torchrun training (gloo, CPU) the way a user does: SIGTERM (or Ctrl-C) to the whole
process group. Every rank finishes the step in flight, rank 0 saves one complete checkpoint set at that
step, and nobody is killed. (The Train tab's Stop button: tests/test_studio_buttons.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from tests.test_data import make_voice
from vits.config import VoiceConfig
from vits.progress import parse_progress

REPO = Path(__file__).resolve().parent.parent
# Tests only (vits/discriminators.py): a narrow multi-period discriminator, so the run saves kilobytes, not 560 MB.
TINY_MPD = {"KOE_TESTS_ONLY_MPD_DIVISOR": "16"}


def training_env(root: Path) -> dict:
    (root / "config.yml").write_text(f"base_model:\n  folder: {root / 'no_base'}\ndevice: cpu\n", encoding="utf-8")
    return dict(os.environ, KOE_CONFIG=str(root / "config.yml"), OMP_NUM_THREADS="1", PYTHONPATH=str(REPO),
                PYTHONUNBUFFERED="1", **TINY_MPD)


def test_torchrun_two_processes_stop_on_ctrl_c_with_a_checkpoint(tmp_path):
    """Ctrl-C: SIGINT reaches every process, then torchrun's agent also sends its workers SIGTERM; that second
    signal must not abort the save (only a second SIGINT does)."""
    voice = make_voice(tmp_path, n_clips=4, n_val=1)
    cfg = VoiceConfig.load(voice / "configs" / "config.json")
    cfg.train.log_interval, cfg.train.eval_interval, cfg.train.batch_size = 1, 1000, 1
    cfg.save(voice / "configs" / "config.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipeline.train", str(voice), "--device", "cpu", "--max-steps", "1000", "--no-wavlm"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=training_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    head = []
    try:
        for line in proc.stdout:
            head.append(line)
            progress = parse_progress(line)
            if progress and "losses" in progress and progress["step"] >= 2:
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert any("2 process(es)" in line for line in head), "".join(head)[-3000:] + err[-3000:]
    stopped = [p for p in map(parse_progress, rest.splitlines()) if p and p.get("message") == "stopped by signal"]
    assert len(stopped) == 1, rest[-3000:] + err[-3000:]  # rank 0 reports, once
    step = stopped[0]["step"]
    assert step >= 2 and f"training finished at step {step}" in rest and "signal" in rest
    # One complete checkpoint set at the stop step, written by the graceful path, loadable.
    models = voice / "models"
    assert sorted(p.name for p in models.iterdir()) == [f"DUR_{step}.pth", f"D_{step}.pth", f"G_{step}.pth"]
    assert torch.load(models / f"G_{step}.pth", weights_only=True)["koe_step"] == step
    # Neither rank was killed or crashed: torchrun never had to escalate, and no worker traceback.
    assert "SIGKILL" not in err and "pipeline/train.py" not in err and "vits/train" not in err, err[-3000:]
