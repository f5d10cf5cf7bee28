"""The Train tab shows the voice's config.json and writes back only what the user changed (issue 11).

* unit: fields ↔ config.json, only-changed writes on top of what another tab wrote, the start plan (the
  trainer's own rule: resume / fine-tune / scratch), the device line, the small-model preset;
* browser (Chromium): start a training, reload the page and restart the studio while it runs, stop, press
  Resume: the fields show config.json each time, the plan says "resume at step N (epoch E)", and config.json
  is unchanged except for the one field the user edited.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from helpers_studio import Studio

from settings import Settings
from studio.train_state import (
    changed_fields,
    check_changes,
    device_line,
    load_fields,
    plan_line,
    start_plan,
    write_changes,
)
from tests.test_data import make_voice, tiny_config
from vits.config import VoiceConfig, apply_model_preset, model_preset
from vits.errors import KoeError

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _config(voice: Path) -> dict:
    return json.loads((voice / "configs" / "config.json").read_text(encoding="utf-8"))


def _fake_checkpoint(path: Path, step: int, epoch: int, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.zeros(1)}, "iteration": epoch, "optimizer": None, "learning_rate": 2e-4,
                "koe_step": step, "koe_epoch": epoch, "koe_extra": extra}, path)


def test_only_changed_fields_are_written_over_what_the_file_holds_now(tmp_path):
    cfg = tiny_config(n_speakers=1)
    cfg.train.batch_size, cfg.train.eval_interval, cfg.train.max_steps, cfg.train.use_wavlm = 2, 20, 60, False
    voice = make_voice(tmp_path, n_clips=2, n_val=1, n_speakers=1, cfg=cfg)
    model_before = _config(voice)["model"]
    loaded = load_fields(voice)
    assert (loaded["batch_size"], loaded["eval_interval"], loaded["max_steps"], loaded["use_wavlm"]) == (2, 20, 60, False)
    # The page sends its widgets' types (floats, labels): nothing changed, nothing to write.
    shown = dict(loaded, batch_size=2.0, epochs=float(loaded["epochs"]), max_steps=60.0,
                 model_size="custom (config.json edited by hand)")
    assert changed_fields(loaded, shown) == {}
    # Meanwhile the Preprocess tab's "use the suggested batch size" wrote 6; the user changed only epochs.
    on_disk = VoiceConfig.load(voice / "configs" / "config.json")
    on_disk.train.batch_size = 6
    on_disk.save(voice / "configs" / "config.json")
    changes = changed_fields(loaded, dict(shown, epochs=7))
    assert changes == {"epochs": 7}
    write_changes(voice, changes)
    after = _config(voice)["train"]
    assert (after["batch_size"], after["epochs"], after["eval_interval"], after["max_steps"]) == (6, 7, 20, 60)
    assert after["use_wavlm"] is False and _config(voice)["model"] == model_before
    with pytest.raises(KoeError, match="at least 1"):
        check_changes(voice, changed_fields(loaded, dict(shown, eval_interval=0)))


def test_the_suggested_batch_size_fix_compares_with_config_json_not_the_older_report(tmp_path):
    from studio.tabs.preprocess import config_batch_size, fixes

    cfg = tiny_config(n_speakers=1)
    cfg.train.batch_size = 8  # applied (or typed on the Train tab) after the report was written
    voice = make_voice(tmp_path, n_clips=2, n_val=1, n_speakers=1, cfg=cfg)
    report = {"train_lines": 2, "batch_size": 16, "suggested_batch_size": 8}
    assert config_batch_size(voice) == 8
    assert not fixes(report, config_batch_size(voice))
    assert "Use the suggested batch size 8" in fixes(report, 4)


def test_the_plan_is_the_trainers_rule_resume_fine_tune_or_scratch(tmp_path):
    voice = make_voice(tmp_path, n_clips=2, n_val=1, n_speakers=1)
    base = tmp_path / "base"
    settings = Settings(root=tmp_path, data_root=tmp_path, base_model_folder=base)
    assert start_plan(voice, settings, None).describe().startswith("from scratch")
    _fake_checkpoint(base / "G_0.pth", 0, 1)
    assert start_plan(voice, settings, None).describe() == f"fine-tune from base model {base} (G_0.pth); D, DUR, WD start fresh"
    assert start_plan(voice, settings, None, no_base=True).kind == "scratch"  # "from scratch" skips config.yml's
    assert "small model takes few" in plan_line(start_plan(voice, settings, None), "small")
    _fake_checkpoint(voice / "models" / "G_60.pth", 60, 30, world_size=1, batch_size=2)
    plan = start_plan(voice, settings, None)
    assert plan.describe() == "resume at step 60 (epoch 30) from G_60.pth"
    assert "already at Stop after steps = 60" in plan_line(plan, "custom", 60)
    assert "already at" not in plan_line(plan, "custom", 0)
    # A voice with checkpoints keeps its model size: switching it would not resume.
    with pytest.raises(KoeError, match="cannot resume"):
        check_changes(voice, {"model_size": "small"})


def test_a_22_voice_fine_tunes_from_the_22_base_folder_not_the_23_one(tmp_path):
    from prep.voice_version import new_config

    voice = make_voice(tmp_path, n_clips=2, n_val=1, n_speakers=1)
    new_config("2.2").save(voice / "configs" / "config.json")
    base23, base22 = tmp_path / "base23", tmp_path / "base22"
    _fake_checkpoint(base23 / "G_0.pth", 0, 1)
    settings = Settings(root=tmp_path, data_root=tmp_path, base_model_folder=base23, base_model_22_folder=base22)
    assert start_plan(voice, settings, None).kind == "scratch"  # a 2.3 base cannot seed a 2.2 network
    _fake_checkpoint(base22 / "G_0.pth", 0, 1)
    assert start_plan(voice, settings, None).describe() == f"fine-tune from base model {base22} (G_0.pth); D, DUR, WD start fresh"


def test_device_line_on_a_cpu_box_names_threads_and_speed_not_gpu_memory():
    line = device_line("cpu", 1, 4, False, "full")
    threads = torch.get_num_threads()
    assert f"CPU ({threads} thread{'s' if threads > 1 else ''})" in line and "s/step" in line and "GB" not in line
    assert "~2.5 s/step (measured by the last run)" in device_line("cpu", 1, 4, False, "small", 2.5)
    if not torch.cuda.is_available():
        assert "sees no CUDA GPU" in device_line("cuda", 1, 4, False, "full")


def test_device_line_for_a_gpu_names_it_with_its_memory(monkeypatch):
    """The CUDA branch without a GPU here: torch.cuda answers as a 16 GB card would."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: SimpleNamespace(name="Tesla T4", total_memory=int(15.1 * 2**30)))
    line = device_line("cuda", 1, 8, False, "full")
    assert line.startswith("Runs on CUDA: Tesla T4, 15.1 GB") and "≈ 16 GB at batch size 8" in line
    assert "lower the batch size" in line and "CPU" not in line
    assert "lower the batch size" not in device_line("cuda", 1, 4, False, "small")


def test_status_notes_follow_the_log_starting_point_and_out_of_memory_retries(tmp_path):
    from studio.tabs.train import log_notes

    log, cache = tmp_path / "train.log", {}
    log.write_text("data: 4 training clips\nresumed from G_20.pth: step 20, epoch 5\n", encoding="utf-8")
    assert log_notes(str(log), cache) == ["Starting point: `resumed from G_20.pth: step 20, epoch 5`"]
    with open(log, "a", encoding="utf-8") as f:
        f.write("warning: CUDA (T4): out of memory at step 23 with batch size 8; retrying at batch size 4: "
                "resume at step 20 (epoch 5) from G_20.pth\nresumed from G_20.pth: step 20, epoch 5\npartial")
    notes = log_notes(str(log), cache)  # only the new lines are read; the unfinished last one waits
    assert notes[0] == "Starting point: `resumed from G_20.pth: step 20, epoch 5`"
    assert notes[1].startswith("⚠️ CUDA (T4): out of memory at step 23 with batch size 8; retrying at batch size 4")
    assert len(notes) == 2 and cache["offset"] == log.stat().st_size - len("partial")


def test_small_model_preset_round_trips_and_builds():
    from vits.models import build_generator

    cfg = VoiceConfig()
    assert model_preset(cfg) == "full"
    apply_model_preset(cfg, "small")
    assert model_preset(cfg) == "small" and cfg.train.segment_size == 8192
    small = sum(p.numel() for p in build_generator(cfg).parameters())
    apply_model_preset(cfg, "full")
    assert model_preset(cfg) == "full" and cfg.model == VoiceConfig().model
    full = sum(p.numel() for p in build_generator(cfg).parameters())
    assert small < full / 3, (small, full)


# ------------------------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def _value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input").first.input_value()


T0 = [time.time()]


def _until(check, what: str, page, timeout_s: float = 60):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = check()
        if got:
            print(f"{time.time() - T0[0]:6.1f}s {what}")
            return got
        page.wait_for_timeout(250)
    raise AssertionError(f"never: {what}; Train tab shows:\n{page.locator('#tab-train').inner_text()[:3000]}")


def _text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").first.inner_text()


def _open_train(studio: Studio, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30000)
    page.goto(studio.url)
    page.get_by_role("tab", name="Train").click()
    return page


def _shows_config(page) -> bool:
    return (_value(page, "batch-size") == "2" and _value(page, "max-steps") == "400"
            and _value(page, "eval-interval") == "4" and not page.locator("#use-wavlm input").is_checked())


def _steps(voice: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (voice / "models").glob("G_*.pth"))


@pytest.mark.browser
def test_reload_and_restart_mid_training_then_resume_keeps_config_json(tmp_path, browser):
    T0[0] = time.time()
    cfg = tiny_config(n_speakers=1)
    t = cfg.train
    t.batch_size, t.max_steps, t.eval_interval, t.log_interval, t.use_wavlm = 2, 400, 4, 2, False
    t.segment_size = 1024
    voice = make_voice(tmp_path / "Data", n_clips=4, n_val=1, n_speakers=1, cfg=cfg, seconds=(1.0, 1.2))
    config = tmp_path / "config.yml"
    config.write_text(f"device: cpu\nwavlm: {tmp_path / 'no-wavlm'}\nbase_model:\n  folder: {tmp_path / 'no-base'}\n",
                      encoding="utf-8")
    env = {"OMP_NUM_THREADS": "1"}
    studio = Studio(tmp_path, config, env=env)
    restarted = None
    page = None
    try:
        studio.wait_ready()
        page = _open_train(studio, browser)
        _until(lambda: _shows_config(page), "the fields show config.json", page)
        assert "from scratch" in _text(page, "train-plan")
        device = _text(page, "train-device")
        assert "CPU (" in device and "GB of GPU memory" not in device
        page.locator("#train-start").click()
        answer = _until(lambda: any(m in _text(page, "train-started") for m in "▶❌") and _text(page, "train-started"),
                        "Start answered", page)
        assert "▶ from scratch" in answer and "config.json unchanged" in answer, answer
        _until(lambda: _steps(voice), "a first checkpoint", page, 120)

        # Reload the page mid-training: the fields come from config.json again, the plan from the checkpoints.
        page.reload()
        page.get_by_role("tab", name="Train").click()
        _until(lambda: _shows_config(page), "the reloaded page shows config.json", page)
        _until(lambda: "Training now" in _text(page, "train-plan"), "the plan says a training runs", page)

        # Restart the studio (the training goes on: jobs outlive it) and open it again.
        os.killpg(studio.proc.pid, signal.SIGINT)
        studio.proc.wait(timeout=30)
        restarted = Studio(tmp_path, config, env=env)
        restarted.wait_ready()
        page.close()
        page = _open_train(restarted, browser)
        _until(lambda: _shows_config(page), "the restarted studio shows config.json", page)
        _until(lambda: "train: running" in _text(page, "train-status"), "re-attached to the training", page)

        # Stop (a checkpoint is saved), then Resume after one edit on the page and one on disk.
        page.locator("#train-stop").click()
        _until(lambda: re.search(r"train: (cancelled|finished)", _text(page, "train-status")), "the training stopped",
               page, 120)
        stopped_at = _steps(voice)[-1]
        plan = _until(lambda: f"resume at step {stopped_at} (epoch" in _text(page, "train-plan")
                      and _text(page, "train-plan"), f"the plan says resume at step {stopped_at}", page)
        before = _config(voice)
        on_disk = VoiceConfig.load(voice / "configs" / "config.json")
        on_disk.train.batch_size = 3  # what the Preprocess tab's "use the suggested batch size" does
        on_disk.save(voice / "configs" / "config.json")
        _until(lambda: _value(page, "batch-size") == "3", "the batch size written on disk shows", page)
        page.locator("#log-interval input").fill("4")
        page.locator("#log-interval input").press("Enter")
        page.wait_for_timeout(500)
        page.locator("#train-resume").click()
        started = _until(lambda: any(m in _text(page, "train-started") for m in "▶❌")
                         and "from scratch" not in _text(page, "train-started") and _text(page, "train-started"),
                         "Resume answered", page)
        assert f"resume at step {stopped_at} (epoch" in started and "Log every N steps = 4" in started, started
        assert plan.split("Start / Resume will:")[1].split(" from ")[0] in started
        after = _config(voice)
        before["train"].update(batch_size=3, log_interval=4)
        assert after == before  # nothing else written: max_steps 400, eval 4, WavLM off as they were
        _until(lambda: _steps(voice)[-1] > stopped_at, "training goes on after Resume", page, 120)
        log = _until(lambda: "resumed from" in _text(page, "train-status") and _text(page, "train-status"),
                     "the trainer's own starting point shows", page)
        assert f"resumed from G_{stopped_at}.pth: step {stopped_at}" in log
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "train-tab-resumed.png"), full_page=True)
    finally:
        if page is not None:
            page.close()
        (restarted or studio).stop()
        if restarted is not None and studio.proc.poll() is None:
            studio.stop()
