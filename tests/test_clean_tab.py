"""The Dataset tab's Clean step in Chromium: denoise a real noisy recording from the studio, then hear the
original and the cleaned copy side by side; and `pipeline.prepare --clean` puts the step into the chain."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers_studio import CHROMIUM, Studio, studio_page
from test_browser_e2e import open_tab, pick, wait_job, wait_text

from pipeline.prepare import STAGES, main, stage_args
from vits.voice_folder import CLEAN, RAW

ARCTIC = Path(__file__).parent / "data" / "arctic_a0007.wav"


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_clean_step_denoises_and_plays_before_and_after(tmp_path):
    speech, rate = sf.read(ARCTIC, dtype="float32")
    noisy = speech + np.random.default_rng(0).normal(0, 0.05, speech.shape).astype(np.float32)
    voice = tmp_path / "Data" / "memo"
    (voice / RAW / "memo").mkdir(parents=True)
    sf.write(voice / RAW / "memo" / "take 1.wav", noisy, rate)
    config = tmp_path / "config.yml"
    config.write_text("device: cpu\n", encoding="utf-8")
    studio = Studio(tmp_path, config, env={"OMP_NUM_THREADS": "2"})
    try:
        studio.wait_ready()
        with studio_page(studio, 1300) as page:
            page.locator("#voice-status").get_by_text("Loading voices").wait_for(state="detached")
            pick(page, "voice", "memo")
            open_tab(page, "Dataset")
            page.wait_for_function("() => document.querySelector('#clean-sample input').value.includes('take 1')")
            wait_text(page, "clean-info", "has no cleaned copy yet")
            page.locator("#clean-btn").click()
            wait_job(page, "dataset-job", "clean", 240)
            cleaned = voice / CLEAN / "memo" / "take 1.wav"
            assert cleaned.is_file()
            page.locator("#clean-btn").click()  # again: the stage skips finished files, the players refresh
            wait_text(page, "clean-info", "after: clean/memo/take 1.wav", timeout_s=60)
            for player in ("clean-before", "clean-after"):
                page.locator(f"#{player} audio, #{player} .waveform-container, #{player} button").first.wait_for()
            out, out_rate = sf.read(cleaned, dtype="float32")
            assert out_rate == 48000 and abs(len(out) / out_rate - len(speech) / rate) < 0.05
    finally:
        studio.stop()


def test_prepare_runs_clean_before_slicing_only_when_asked(capsys):
    assert STAGES.index("clean") == STAGES.index("ingest") + 1 < STAGES.index("slice")
    assert stage_args("clean", "Data/v", argparse.Namespace(clean=())) is None
    assert stage_args("clean", "Data/v", argparse.Namespace(clean=("denoise", "separate"))) == [
        "Data/v", "--separate", "--denoise"]
    with pytest.raises(SystemExit) as exit_info:
        main(["Data/v", "--clean", "dereverb"])
    assert exit_info.value.code == 2 and "use denoise, separate or separate,denoise" in capsys.readouterr().err
