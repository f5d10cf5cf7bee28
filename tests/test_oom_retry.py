"""Out of memory during training (issue 11): the run goes on from the newest checkpoint at half the batch size,
counting steps from there, and stops with a clear message once batch size 1 does not fit.

The error is injected on the CPU through the loop's test hook (KOE_TEST_OOM, honoured under pytest only);
`torch.OutOfMemoryError` is the class a real CUDA out-of-memory raises.
"""

from __future__ import annotations

import pytest
import torch

from tests.test_data import make_voice, tiny_config
from vits.errors import KoeError
from vits.progress import parse_progress
from vits.train import TrainOptions, train
from vits.train.loop import TEST_OOM_ENV, _half_batch_after_oom, _test_oom
from vits.train.runtime import Runtime

pytestmark = pytest.mark.torch_threads(1)  # tests/conftest.py sets and restores it per test


def _voice(tmp_path, batch_size: int):
    cfg = tiny_config(n_speakers=1)
    cfg.train.batch_size, cfg.train.log_interval, cfg.train.eval_interval = batch_size, 1, 2
    cfg.train.segment_size = 1024
    return make_voice(tmp_path, n_clips=4, n_val=1, n_speakers=1, cfg=cfg, seconds=(1.0, 1.2))


def test_out_of_memory_halves_the_batch_from_the_last_checkpoint_and_keeps_counting(tmp_path, monkeypatch):
    voice = _voice(tmp_path, batch_size=4)
    # From step 3 on, every batch above 1 item "does not fit": 4 fails, 2 fails, 1 trains on.
    monkeypatch.setenv(TEST_OOM_ENV, "3:1")
    lines: list[str] = []
    result = train(TrainOptions(voice_dir=voice, max_steps=5, use_wavlm=False, device="cpu", num_workers=0),
                   log=lines.append)
    text = "\n".join(lines)
    assert (result.step, result.reason, result.batch_size) == (5, "max_steps", 1)
    warnings = [line for line in lines if "out of memory" in line and line.startswith("warning")]
    assert len(warnings) == 2, text
    assert "batch size 4; retrying at batch size 2: resume at step 2 (epoch" in warnings[0]
    assert "batch size 2; retrying at batch size 1: resume at step 2 (epoch" in warnings[1]
    # The trainer resumed where the message said, each time.
    assert text.count("resumed from G_2.pth: step 2") == 2
    events = [p for p in map(parse_progress, lines) if p and p.get("message", "").startswith("out of memory")]
    assert [(e["failed_batch_size"], e["batch_size"]) for e in events] == [(4, 2), (2, 1)]
    # Steps go on from the checkpoint: 1, 2 at batch 4, then 3, 4, 5 at batch 1; nothing counted twice.
    steps = [p["step"] for p in map(parse_progress, lines) if p and "losses" in p]
    assert steps == [1, 2, 3, 4, 5], steps
    g4 = torch.load(voice / "models" / "G_4.pth", weights_only=True)
    assert g4["koe_step"] == 4 and g4["koe_extra"]["batch_size"] == 1


def test_out_of_memory_at_batch_size_one_stops_with_what_to_do(tmp_path, monkeypatch):
    voice = _voice(tmp_path, batch_size=2)
    monkeypatch.setenv(TEST_OOM_ENV, "1")  # every step, every batch size
    lines: list[str] = []
    with pytest.raises(KoeError) as err:
        train(TrainOptions(voice_dir=voice, max_steps=3, use_wavlm=False, device="cpu", num_workers=0),
              log=lines.append)
    message = str(err.value)
    assert "out of memory at step 1 even with batch size 1" in message
    assert "from scratch" in message and "small model preset" in message and "start the training again" in message
    assert any("retrying at batch size 1" in line for line in lines)
    assert not list((voice / "models").glob("G_*.pth"))


def test_several_processes_do_not_retry_but_say_which_batch_size_to_set(tmp_path):
    voice = _voice(tmp_path, batch_size=8)
    rt = Runtime(rank=0, world_size=2, distributed=True)
    with pytest.raises(KoeError) as err:
        _half_batch_after_oom(TrainOptions(voice_dir=voice), rt, 8, 41, lambda _line: None)
    assert "step 42 with batch size 8 per process" in str(err.value) and "set the batch size to 4" in str(err.value)


def test_the_injection_hook_is_ignored_outside_pytest(monkeypatch):
    monkeypatch.setenv(TEST_OOM_ENV, "5:2")
    assert _test_oom() == (5, 2)
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert _test_oom() is None
