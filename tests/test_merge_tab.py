"""The Merge tab in a real browser: Listen speaks the merged weights before anything is saved, and "Save as voice"
runs pipeline.merge as a job whose new voice appears in the voice menu and loads in the Synthesize tab."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers_studio import Studio, studio_page
from test_browser_e2e import CHROMIUM, field, open_tab, pick, shot, wait_job, wait_text
from test_serve import TINY_MODEL, write_tiny_voice

from vits.checkpoints import save_checkpoint
from vits.config import VoiceConfig
from vits.models import build_generator
from vits.voice_folder import MERGE_RECIPE, config_path, models_dir

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]


def test_listen_then_save_as_voice(tmp_path, golden_dir):
    config = write_tiny_voice(tmp_path, golden_dir)  # Data/tiny: speakers alice, bob; tiny Chinese BERT
    other = tmp_path / "Data" / "other"
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": 1, "spk2id": {"bob": 0}}, "model": TINY_MODEL})
    cfg.save(config_path(other))
    torch.manual_seed(5)
    save_checkpoint(models_dir(other) / "G_30.pth", build_generator(cfg), epoch=1, step=30, learning_rate=2e-4)
    studio = Studio(tmp_path, config, env={"OMP_NUM_THREADS": "2"})
    try:
        studio.wait_ready()
        with studio_page(studio, 1100) as page:
            page.locator("#voice-status").get_by_text("Loading voices").wait_for(state="detached")
            open_tab(page, "Merge")
            pick(page, "merge-a", "tiny")
            page.wait_for_function("() => document.querySelector('#merge-a-ckpt input').value.includes('G_100')")
            pick(page, "merge-b", "other")
            page.wait_for_function("() => document.querySelector('#merge-b-ckpt input').value.includes('G_30')")
            page.wait_for_function("() => document.querySelector('#merge-speaker input').value === 'alice'")
            pick(page, "merge-speaker", "bob")
            page.locator("#merge-slerp input").check()
            page.locator("#merge-listen").click()
            status = wait_text(page, "merge-status", "s from the merged weights", 120, fail=("merge-status", "❌"))
            assert "slerp; speaker bob" in status and "bob ← B's bob" in status and "alice ← B's bob" in status, status
            page.wait_for_function("() => !!document.querySelector('#merge-audio audio[src], #merge-audio "
                                   "time#duration')", timeout=30000)
            assert not (tmp_path / "Data" / "mixed").exists()  # Listen writes nothing
            shot(page, "merge-listen")

            field(page, "merge-name").fill("mixed")
            page.locator("#merge-save").click()
            text = wait_job(page, "merge-save-status", "merge", 180)
            assert "in the Voice menu" in text, text
            recipe = json.loads((tmp_path / "Data" / "mixed" / MERGE_RECIPE).read_text())
            assert recipe["slerp"] and recipe["sources"]["b"]["file"].endswith("G_30.pth")
            pick(page, "voice", "mixed")  # the new voice is in the menu at the top
            open_tab(page, "Synthesize")
            page.wait_for_function("() => document.querySelector('#checkpoint input').value.includes('G_0')")
            shot(page, "merge-saved")
    finally:
        studio.stop()
