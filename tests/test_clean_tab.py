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
def test_clean_job_brings_the_after_player_without_a_click(tmp_path):
    """A real DeepFilterNet clean job from the studio: when it ends, the after player and the "what is cleaned"
    line follow the disk by themselves (the refresh timer), the broken recording is named as failed."""
    speech, rate = sf.read(ARCTIC, dtype="float32")
    noisy = speech + np.random.default_rng(0).normal(0, 0.05, speech.shape).astype(np.float32)
    voice = tmp_path / "Data" / "memo"
    (voice / RAW / "memo").mkdir(parents=True)
    sf.write(voice / RAW / "memo" / "take 1.wav", noisy, rate)
    (voice / RAW / "static.wav").write_bytes(np.random.default_rng(1).bytes(5000))  # not audio: fails to clean
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
            wait_text(page, "clean-info", "clean/: 0 of 2 recording(s) cleaned.")
            assert page.locator("#clean-after a.download-link").count() == 0
            page.locator("#clean-btn").click()
            wait_job(page, "dataset-job", "clean", 240)
            cleaned = voice / CLEAN / "memo" / "take 1.wav"
            assert cleaned.is_file()
            # No click from here on: the timer (2 s in tests) brings the page to what clean/ holds.
            text = wait_text(page, "clean-info", "after: clean/memo/take 1.wav", timeout_s=30)
            assert "clean/: 1 of 2 recording(s) cleaned. Failed: raw/static.wav" in text, text
            # The after player serves exactly the cleaned file on disk.
            link = page.locator("#clean-after a.download-link")
            link.wait_for(state="attached")
            assert page.request.get(link.get_attribute("href")).body() == cleaned.read_bytes()
            page.locator("#clean-before a.download-link").wait_for(state="attached")
            out, out_rate = sf.read(cleaned, dtype="float32")
            assert out_rate == 48000 and abs(len(out) / out_rate - len(speech) / rate) < 0.05
            # Deleting the cleaned copy on disk takes the after player away again, also without a click.
            cleaned.unlink()
            wait_text(page, "clean-info", "has no cleaned copy yet", timeout_s=30)
            link.wait_for(state="detached")
    finally:
        studio.stop()


def test_sample_view_reads_what_clean_wrote(tmp_path):
    """The players' paths and the info line come from the disk and clean.json, as `clean_voice` leaves them."""
    from prep.clean import clean_voice
    from studio.tabs.clean import sample_view

    voice = tmp_path / "v"
    (voice / RAW).mkdir(parents=True)
    (voice / RAW / "static.wav").write_bytes(np.random.default_rng(1).bytes(5000))
    assert sample_view(voice, None) == (None, None, "Add recordings to hear them here.")
    before, after, info = sample_view(voice, "static.wav")
    assert (before, after) == (str(voice / RAW / "static.wav"), None)
    assert "has no cleaned copy yet" in info and "clean/: 0 of 1 recording(s) cleaned." in info
    clean_voice(voice, denoise=True)
    before, after, info = sample_view(voice, "static.wav")
    assert after is None and info.startswith("Cleaning `raw/static.wav` failed: ") and "cannot decode" in info
    assert "Failed: `raw/static.wav`" in info
    assert "is gone" in sample_view(voice, "other.wav")[2]


def test_prepare_runs_clean_before_slicing_only_when_asked(capsys):
    assert STAGES.index("clean") == STAGES.index("ingest") + 1 < STAGES.index("slice")
    assert stage_args("clean", "Data/v", argparse.Namespace(clean=())) is None
    assert stage_args("clean", "Data/v", argparse.Namespace(clean=("denoise", "separate"))) == [
        "Data/v", "--separate", "--denoise"]
    with pytest.raises(SystemExit) as exit_info:
        main(["Data/v", "--clean", "dereverb"])
    assert exit_info.value.code == 2 and "use denoise, separate or separate,denoise" in capsys.readouterr().err
