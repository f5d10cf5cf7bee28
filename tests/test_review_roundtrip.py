"""The flagged-clip round trip in a real browser: clips transcription left out are shown (first) in the review
table, one action fixes their bad language, a corrected row is kept and its flag cleared, "Keep flagged" puts
back clips an earlier run left out, a run with nothing to do says so and offers redo, a refusal stays on
the page while the refresh timer runs, and the dictionary refuses a line in a format it does not read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers_audio import make_tiny_whisper
from helpers_studio import Studio
from test_browser_e2e import CHROMIUM, idle, open_tab, pick, shot, wait_job, wait_text
from test_studio_buttons import tone

from vits.voice_folder import ESD_LIST, ESD_META

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]


def _voice(voice: Path) -> None:
    """a.wav in esd.list; b (Whisper heard 'yo'), c and d left out by transcription, as esd.meta.json records."""
    for i, name in enumerate("abcd"):
        tone(voice / "wavs" / "alice" / f"{name}.wav", 1.0 + 0.2 * i, 200 + 40 * i)
    (voice / ESD_LIST).write_text("wavs/alice/a.wav|alice|EN|Hello there.\n", encoding="utf-8")

    def item(name, text, language, flags, excluded):
        return {"wav": f"wavs/alice/{name}.wav", "speaker": "alice", "language": language, "text": text,
                "avg_logprob": -0.3, "no_speech_prob": 0.1, "flags": flags, "excluded": excluded}

    (voice / ESD_META).write_text(json.dumps({"clips": {
        "wavs/alice/a.wav": item("a", "Hello there.", "EN", [], False),
        "wavs/alice/b.wav": item("b", "la la la la la", "yo", ["repetition", "unsupported_language"], True),
        "wavs/alice/c.wav": item("c", "Good morning to you.", "EN", ["text_too_long"], True),
        "wavs/alice/d.wav": item("d", "See you tomorrow.", "EN", ["high_compression"], True),
    }}), encoding="utf-8")


def cell(page, row: int, column: int):
    return page.locator(f'#review-table [data-testid="cell-{row}-{column}"]')


def edit_cell(page, row: int, column: int, text: str) -> None:
    idle(page, "review-table")
    cell(page, row, column).dblclick()
    editor = page.locator("#review-table textarea[aria-label='Edit cell']").first
    editor.fill(text)
    editor.press("Enter")
    page.wait_for_timeout(300)
    idle(page, "review-table")


def test_flagged_clips_exclude_show_correct_keep(tmp_path):
    from playwright import sync_api

    voice = tmp_path / "Data" / "alice"
    _voice(voice)
    whisper = make_tiny_whisper(tmp_path / "models" / "tiny.pt")
    config = tmp_path / "config.yml"
    config.write_text(f"device: cpu\nwhisper:\n  model: {whisper}\n", encoding="utf-8")
    studio = Studio(tmp_path, config, env={"OMP_NUM_THREADS": "1"})
    page = None
    try:
        studio.wait_ready()
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30000)
            page.goto(studio.url)
            open_tab(page, "Dataset")
            # Show: the three left-out clips come first, flagged, with what Whisper heard.
            cell(page, 3, 1).wait_for()
            wait_text(page, "review-status", "3 of them left out of esd.list")
            assert [cell(page, r, 1).inner_text() for r in range(4)] == [
                f"wavs/alice/{n}.wav" for n in "bcda"]
            assert cell(page, 0, 0).inner_text().startswith("left out of esd.list")
            # The flag column leaves the text column most of the width.
            flag_w, text_w = (cell(page, 0, c).bounding_box()["width"] for c in (0, 4))
            assert text_w > 2 * flag_w, (flag_w, text_w)
            shot(page, "review-1-left-out")

            # One action fixes Whisper's 'yo'; correcting the text and saving keeps the clip, flag cleared.
            pick(page, "bulk-language", "EN")
            page.locator("#bulk-scope").get_by_text("rows with an unknown language").click()
            page.locator("#bulk-apply").click()
            wait_text(page, "review-status", "Changed 1 row(s)")
            assert cell(page, 0, 3).inner_text() == "EN" and cell(page, 1, 3).inner_text() == "EN"
            edit_cell(page, 0, 4, "Lovely weather today.")
            page.locator("#review-save").click()
            wait_text(page, "review-status", "Saved 2 clips to esd.list")
            assert "2 left-out clip(s) unchanged, still left out" in page.locator("#review-status").inner_text()
            lines = (voice / ESD_LIST).read_text(encoding="utf-8").splitlines()
            assert "wavs/alice/b.wav|alice|EN|Lovely weather today." in lines and len(lines) == 2, lines
            meta = json.loads((voice / ESD_META).read_text(encoding="utf-8"))["clips"]["wavs/alice/b.wav"]
            assert meta["excluded"] is False and meta["flags"] == []
            page.wait_for_function("() => [...document.querySelectorAll('#review-table [data-testid^=cell-]')]"
                                   ".some(c => c.textContent.includes('Lovely weather'))")
            shot(page, "review-2-corrected")

            # A refusal stays on the page while the refresh timer ticks.
            page.locator("#import-folder").click()
            wait_text(page, "dataset-message", "no folder given")
            page.wait_for_timeout(5000)
            assert "no folder given" in page.locator("#dataset-message").inner_text()

            # The dictionary shows the one format it accepts, and a line in another format is not saved.
            page.get_by_text("Pronunciation dictionary (userdict.txt)").click()
            # The accordion renders its content after the click: wait for the example, then read the help.
            page.wait_for_function(r"() => /重庆\s+chong2 qing4/.test(document.querySelector('#tab-dataset').innerText)")
            help_text = page.locator("#tab-dataset").inner_text()
            assert re.search(r"重庆\s+chong2 qing4", help_text) and "a **Tab**" not in help_text, help_text[-800:]
            page.locator("#userdict .cm-content").first.click()
            page.keyboard.type("重庆|ZH|chong2 qing4")
            page.locator("#userdict-save").click()
            wait_text(page, "userdict-status", "not saved")
            assert "userdict.txt:1" in page.locator("#userdict-status").inner_text()
            assert not (voice / "userdict.txt").exists()

            # Keep flagged: the clips an earlier run left out go back into esd.list, without decoding again.
            page.locator("#keep-flagged input").check()
            page.locator("#transcribe-btn").click()
            text = wait_job(page, "dataset-job", "transcribe", 120)
            assert "2 flagged clip(s) put back into esd.list" in text, text
            lines = (voice / ESD_LIST).read_text(encoding="utf-8").splitlines()
            assert len(lines) == 4 and "wavs/alice/d.wav|alice|EN|See you tomorrow." in lines, lines

            # Nothing left to do: the page says so and offers redo instead of a bare "finished".
            page.locator("#keep-flagged input").uncheck()
            page.locator("#transcribe-btn").click()
            text = wait_text(page, "dataset-job", "Nothing was transcribed", 120)
            assert "Transcribe all again" in text and "nothing new to transcribe: all 4 clips" in text, text
            shot(page, "review-3-nothing-to-do")
            browser.close()
    except BaseException:
        if page is not None and not page.is_closed():
            shot(page, "review-failure")
        raise
    finally:
        studio.stop()
