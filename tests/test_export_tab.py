"""The Export tab in a real browser: an ONNX export runs as a job, and the page follows it to the end —
"running" goes away, the result is shown and the exported files are listed, also after a page reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_studio import Studio, studio_page
from test_browser_e2e import CHROMIUM, open_tab, shot, wait_job
from test_serve import TINY_MODEL

from vits.checkpoints import save_checkpoint
from vits.config import VoiceConfig
from vits.models import build_generator
from vits.voice_folder import ONNX, ONNX_METADATA, config_path, models_dir

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]


def test_onnx_export_finishes_on_the_page_and_lists_the_files(tmp_path):
    voice = tmp_path / "Data" / "tiny"
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": 1, "spk2id": {"alice": 0}}, "model": TINY_MODEL})
    cfg.save(config_path(voice))
    torch.manual_seed(0)
    save_checkpoint(models_dir(voice) / "G_10.pth", build_generator(cfg), epoch=1, step=10, learning_rate=2e-4)
    config = tmp_path / "config.yml"
    config.write_text("device: cpu\n", encoding="utf-8")
    studio = Studio(tmp_path, config, env={"OMP_NUM_THREADS": "2"})
    try:
        studio.wait_ready()
        with studio_page(studio, 1000) as page:
            open_tab(page, "Export")
            page.wait_for_function(
                "() => document.querySelector('#export-checkpoint input').value.includes('G_10')")
            page.locator("#export-onnx").click()
            page.locator("#export-onnx-status").get_by_text("export_onnx: running").wait_for()
            text = wait_job(page, "export-onnx-status", "export_onnx", 240)
            assert "running" not in text and "Result: wrote" in text, text
            listed = page.locator(f"#export-onnx-files td.filename[aria-label='{ONNX_METADATA}']")
            listed.wait_for()
            shown = sorted(page.locator("#export-onnx-files td.filename").evaluate_all(
                "cells => cells.map(c => c.getAttribute('aria-label'))"))
            written = sorted(p.name for p in (voice / ONNX).iterdir())
            assert "dec.onnx" in written and shown == written, (written, shown)
            shot(page, "export-onnx-finished")
            # A reloaded page shows the finished job and its files again, not a stale "running".
            page.reload()
            open_tab(page, "Export")
            listed.wait_for()
            assert "export_onnx: finished" in page.locator("#export-onnx-status").inner_text()
    finally:
        studio.stop()
