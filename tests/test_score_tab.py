"""Checkpoint scores in a real browser: the Train tab shows the best step and the score curves, "Score
checkpoints now" runs pipeline.score as a job, and Synthesize and Export select the best checkpoint (labelled)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from helpers_studio import Studio, studio_page
from test_browser_e2e import CHROMIUM, open_tab, shot
from test_serve import TINY_MODEL

from prep.score import write_scalars
from vits.checkpoints import save_checkpoint
from vits.config import VoiceConfig
from vits.models import build_generator
from vits.scores import write_scores
from vits.voice_folder import config_path, models_dir

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]


def test_train_tab_shows_best_step_and_tabs_default_to_it(tmp_path):
    voice = tmp_path / "Data" / "tiny"
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": 1, "spk2id": {"alice": 0}}, "model": TINY_MODEL})
    cfg.save(config_path(voice))
    torch.manual_seed(0)
    for step in (10, 20, 30):
        save_checkpoint(models_dir(voice) / f"G_{step}.pth", build_generator(cfg), epoch=1, step=step,
                        learning_rate=2e-4)
    # Scores as pipeline.score writes them: step 20 is the best, 30 the newest.
    rows = {10: {"cer": 0.6, "speaker_similarity": 0.5, "score": -0.1},
            20: {"cer": 0.2, "speaker_similarity": 0.7, "score": 0.5},
            30: {"cer": 0.4, "speaker_similarity": 0.6, "score": 0.2}}
    assert write_scores(voice, rows) == 20
    write_scalars(voice, rows)
    config = tmp_path / "config.yml"
    config.write_text("device: cpu\n", encoding="utf-8")
    studio = Studio(tmp_path, config, env={"OMP_NUM_THREADS": "2"})
    try:
        studio.wait_ready()
        with studio_page(studio, 1200) as page:
            open_tab(page, "Train")
            best = page.locator("#train-best")
            best.get_by_text("Best so far: step").wait_for()
            assert "step 20" in best.inner_text() and "G_20.pth" in best.inner_text(), best.inner_text()
            page.locator("#score-plot").get_by_text("speaker similarity").first.wait_for()  # the legend
            page.locator("#train-score").click()
            status = page.locator("#train-status")
            deadline = time.time() + 90
            while "score: finished" not in status.inner_text() and time.time() < deadline:
                assert "score: failed" not in status.inner_text(), status.inner_text()
                page.wait_for_timeout(500)
            assert "score: finished" in status.inner_text(), status.inner_text()  # every step was scored already
            shot(page, "train-best-score")
            open_tab(page, "Synthesize")
            page.wait_for_function(
                "() => document.querySelector('#checkpoint input').value.includes('G_20.pth')")
            assert "best score 0.500" in page.locator("#checkpoint input").input_value()
            open_tab(page, "Export")
            page.wait_for_function(
                "() => document.querySelector('#export-checkpoint input').value.includes('G_20.pth')")
            assert "best score" in page.locator("#export-checkpoint input").input_value()
    finally:
        studio.stop()
