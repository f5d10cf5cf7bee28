"""A Bert-VITS2 2.2 (CLAP) voice in the studio, in a real browser (Debian chromium + playwright).

A voice is created as 2.2-CLAP from the page (its config.json is the 2.2 one); the Synthesize tab shows the
emotion controls for a 2.2 checkpoint only, and a tiny random 2.2 voice speaks with a text prompt and with
an uploaded reference clip (tiny random CLAP and BERT), the two giving different audio.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers_clap import make_tiny_clap, write_tiny_voice
from helpers_studio import Studio
from test_browser_e2e import CHROMIUM, create_voice, field, open_tab, pick, shot, wait_text

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def _results(root: Path) -> list[Path]:
    return sorted((root / "Data" / ".studio" / "synth").glob("*.wav"))


def _wait_result(root: Path, count: int, page, timeout_s: float = 120) -> Path:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = _results(root)
        if len(found) >= count:
            return found[-1]
        page.wait_for_timeout(300)
    raise AssertionError(f"no result {count}; the page shows: {page.locator('#synth-status').inner_text()}")


def test_22_voice_speaks_with_a_text_and_an_audio_emotion_prompt(tmp_path, browser, golden_dir):
    from vits.config import VoiceConfig
    from vits.text.testing import build_tiny_models
    from vits.voice_folder import config_path

    bert = build_tiny_models(tmp_path / "bert", golden_dir / "tokenizers", hidden=1024, layers=3, languages=("ZH",))
    clap = make_tiny_clap(tmp_path / "clap")
    write_tiny_voice(tmp_path, "emo", "2.2")
    write_tiny_voice(tmp_path, "plain", "2.3")
    clip = tmp_path / "angry.wav"
    t = np.arange(44100) / 44100
    sf.write(clip, (0.4 * np.sin(2 * np.pi * 700 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32), 44100)
    config = tmp_path / "config.yml"
    config.write_text(f"device: cpu\nclap: {clap}\nbert:\n  ZH: {bert['ZH']}\n  JP: {tmp_path / 'x'}\n"
                      f"  EN: {tmp_path / 'x'}\n")
    studio = Studio(tmp_path, config)
    try:
        studio.wait_ready()
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(studio.url)
        page.get_by_text("Koe Studio").first.wait_for()

        # --- a new voice made for a 2.2-CLAP base model ---------------------------------------------------------
        pick(page, "new-voice-version", "Bert-VITS2 2.2-CLAP (emotion prompts)")
        create_voice(page, "newclap")
        assert "2.2" in page.locator("#voice-status").inner_text()
        made = VoiceConfig.load(config_path(tmp_path / "Data" / "newclap"))
        assert made.architecture == "2.2" and made.model.gin_channels == 256

        # --- a 2.3 voice: no emotion controls --------------------------------------------------------------------
        open_tab(page, "Synthesize")
        pick(page, "voice", "plain")
        page.wait_for_function("() => document.querySelector('#checkpoint input').value.includes('G_100')")
        page.wait_for_timeout(1000)
        assert not page.locator("#emotion-row").is_visible()

        # --- the 2.2 voice: text prompt, then a reference clip -------------------------------------------------------
        pick(page, "voice", "emo")
        page.locator("#emotion-row").wait_for(state="visible", timeout=20000)  # its checkpoint is 2.2
        field(page, "synth-text").fill("你好。")
        field(page, "seed").fill("7")
        field(page, "emotion-text").fill("悲伤")
        page.locator("#synth-btn").click()
        first = _wait_result(tmp_path, 1, page)
        wait_text(page, "synth-status", "s of audio", 60)
        shot(page, "clap-1-text-prompt")

        page.get_by_label("Audio prompt").check()
        page.locator("#emotion-audio input[type=file]").set_input_files(str(clip))
        page.wait_for_timeout(1500)
        time.sleep(1.1)  # result files are named by the second
        page.locator("#synth-btn").click()
        second = _wait_result(tmp_path, 2, page)
        shot(page, "clap-2-audio-prompt")
        a, rate = sf.read(first, dtype="float32")
        b, _ = sf.read(second, dtype="float32")
        assert rate == 44100 and a.size and b.size
        assert a.shape != b.shape or not np.allclose(a, b, atol=1e-3), "the two emotion prompts gave the same audio"
        page.close()
    finally:
        code = studio.stop()
    assert code is not None
    assert "Traceback" not in studio.log.read_text(errors="replace")
