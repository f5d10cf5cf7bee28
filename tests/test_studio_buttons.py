"""The studio's buttons in a real browser (Debian chromium + playwright), one `python app.py --auth u:p` for the
module: the login really guards the page, and each button does what it says on disk: Import folder, Save
dictionary, Delete clip (audio to trash/), the Preprocess report's Apply fix, Start/Stop training (the stop
saves a checkpoint), the Export tab's release and zip buttons and Load model (a model from outside the data root)."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from helpers_studio import Studio
from test_browser_e2e import CHROMIUM, _tiny_voice_config, field, idle, open_tab, shot, wait_job, wait_text
from test_serve import write_tiny_voice

from vits.voice_folder import (
    ESD_LIST,
    EXPORT,
    RAW,
    REPORT_JSON,
    TRAIN_LIST,
    TRASH,
    USERDICT,
    config_path,
    models_dir,
)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]
USER, PASSWORD = "koe", "s3cret-pass"
CLIPS = ["你好。", "今天很好。", "我们走吧。", "再见了。"]


def tone(path: Path, seconds: float, freq: float, sr: int = 44100) -> None:
    t = np.arange(int(seconds * sr)) / sr
    audio = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), sr)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, golden_dir):
    """Voices `tiny` (a random G_100, speakers alice/bob) and `work` (four clips in esd.list, no lists yet), a
    folder of recordings outside the data root, and the studio behind `--auth`."""
    root = tmp_path_factory.mktemp("buttons")
    config = write_tiny_voice(root, golden_dir)
    work = root / "Data" / "work"
    lines = []
    for i, text in enumerate(CLIPS):
        tone(work / "wavs" / f"clip{i}.wav", 1.2 + 0.2 * i, 180 + 40 * i)
        lines.append(f"wavs/clip{i}.wav|alice|ZH|{text}")
    (work / ESD_LIST).write_text("\n".join(lines) + "\n", encoding="utf-8")
    for i in range(2):
        tone(root / "recordings" / f"take{i}.wav", 2.0, 220 + 30 * i)
    # Training jobs inherit the studio's environment: the narrow test-only discriminator keeps them light.
    server = Studio(root, config, "--auth", f"{USER}:{PASSWORD}",
                    env={"OMP_NUM_THREADS": "1", "KOE_TESTS_ONLY_MPD_DIVISOR": "16"})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(studio):
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(30000)
        yield tab
        browser.close()


def choose_voice(page, name: str) -> None:
    page.locator("#voice input").first.click()
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_timeout(500)


def test_login_is_required_before_anything(studio, page):
    # Nothing of the app without a login: the page is the login form; its config, its API and the files refuse.
    assert httpx.get(f"{studio.url}/config", timeout=10).status_code == 401
    r = httpx.post(f"{studio.url}/gradio_api/call/import_folder", json={"data": ["work", "/", None]}, timeout=10)
    assert r.status_code == 401, r.text
    page.goto(studio.url)
    page.get_by_label("username").fill(USER)
    page.get_by_label("password").fill("wrong")
    page.get_by_role("button", name="Login").click()
    page.get_by_text("Incorrect Credentials").wait_for()
    assert page.locator("#voice").count() == 0
    page.goto(studio.url)
    page.get_by_label("username").fill(USER)
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.locator("#voice").wait_for()
    page.get_by_text("Koe Studio").first.wait_for()


def test_import_folder_dictionary_and_delete_to_trash(studio, page):
    work = studio.root / "Data" / "work"
    choose_voice(page, "work")
    open_tab(page, "Dataset")
    # Import folder: a folder on the studio's machine, copied into raw/ by the ingest job.
    field(page, "server-folder").fill(str(studio.root / "recordings"))
    page.locator("#import-folder").click()
    wait_job(page, "dataset-job", "ingest", 90)
    assert sorted(p.name for p in (work / RAW).rglob("*.wav")) == ["take0.wav", "take1.wav"]

    # Save dictionary: what is typed in the editor lands in userdict.txt, checked by the text frontend.
    page.get_by_text("Pronunciation dictionary (userdict.txt)").click()
    editor = page.locator("#userdict .cm-content").first
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("重庆\tchong2 qing4\n")
    page.locator("#userdict-save").click()
    wait_text(page, "userdict-status", "saved userdict.txt", 30)
    assert (work / USERDICT).read_text(encoding="utf-8").strip() == "重庆\tchong2 qing4"

    # Delete clip: select row 2, delete, save: the line leaves esd.list and its audio moves to trash/.
    page.locator("#review-load").click()
    page.locator('#review-table [data-testid="cell-3-1"]').wait_for()
    idle(page, "review-table")
    page.locator('#review-table [data-testid="cell-2-4"]').click()
    assert "phones:" in wait_text(page, "g2p", "phones:")  # the row is selected (its g2p preview shows)
    page.locator("#review-delete").click()
    wait_text(page, "review-status", "Removed", 20)
    page.locator("#review-save").click()
    wait_text(page, "review-status", "Saved 3 clips", 30)
    saved = (work / ESD_LIST).read_text(encoding="utf-8")
    assert "clip2.wav" not in saved and saved.count("\n") == 3
    assert not (work / "wavs" / "clip2.wav").exists()
    assert [p.name for p in (work / TRASH).rglob("clip2.wav")] == ["clip2.wav"]
    shot(page, "buttons-1-dataset")


def test_report_fix_then_train_and_stop_with_a_checkpoint(studio, page):
    work = studio.root / "Data" / "work"
    choose_voice(page, "work")
    open_tab(page, "Preprocess")
    # The report of a voice without training lists offers the fix that builds them; Apply fix runs it.
    page.locator("#stage-report").click()
    wait_job(page, "prepare-job", "report", 90)
    page.locator("#report-refresh").click()
    page.locator("#report-fix").wait_for(state="visible")
    assert "Build the training lists and features" in page.locator("#fix-choice").inner_text() + \
        page.locator("#fix-choice input").first.input_value()
    page.locator("#report-fix").click()
    wait_job(page, "prepare-job", "fix", 180)
    assert len((work / TRAIN_LIST).read_text(encoding="utf-8").splitlines()) >= 2
    assert list((work / "wavs").rglob("*.bert.pt"))
    report = json.loads((work / REPORT_JSON).read_text(encoding="utf-8"))
    assert report["train_lines"] >= 2
    shot(page, "buttons-2-preprocess")

    # Train, then Stop: the run ends by signal, with a checkpoint at the step it reached.
    _tiny_voice_config(config_path(work))
    page.reload()
    page.locator("#voice").wait_for()
    choose_voice(page, "work")
    open_tab(page, "Train")
    field(page, "batch-size").fill("1")
    field(page, "max-steps").fill("1000")
    field(page, "eval-interval").fill("1000")
    field(page, "log-interval").fill("1")
    page.locator("#use-wavlm input").uncheck()
    page.locator("#train-start").click()
    wait_text(page, "train-progress", "/1000", 240, fail=("train-status", "train: failed"))
    page.wait_for_function(  # a first step done (the bar says "train N/1000" with N >= 1)
        "() => /train [1-9][0-9]*\\/1000/.test(document.querySelector('#train-progress').innerText)",
        timeout=240000)
    page.locator("#train-stop").click()
    status = wait_text(page, "train-status", "cancelled", 120)
    deadline = time.time() + 30
    while not list(models_dir(work).glob("G_*.pth")) and time.time() < deadline:
        time.sleep(0.5)
    [g_file] = models_dir(work).glob("G_*.pth")
    step = int(g_file.stem.split("_")[1])
    assert step >= 1 and (models_dir(work) / f"D_{step}.pth").is_file(), status
    log = "\n".join(p.read_text(errors="replace") for p in (work / "logs").glob("*train*.log"))
    assert "stopped by signal" in log and f"training finished at step {step}" in log, log[-2000:]
    shot(page, "buttons-3-train-stopped")


def test_export_buttons_and_outside_model(studio, page, tmp_path):
    tiny = studio.root / "Data" / "tiny"
    page.reload()
    page.locator("#voice").wait_for()
    choose_voice(page, "tiny")
    open_tab(page, "Export")
    page.locator("#export-refresh").click()
    page.wait_for_function("() => document.querySelector('#export-checkpoint input').value.includes('G_100')")
    page.locator("#export-release").click()
    wait_text(page, "export-status", "G_100_fp16.pth", 60)
    assert (tiny / "export" / "G_100_fp16.pth").is_file()
    page.locator("#export-zip").click()
    wait_text(page, "export-status", ".zip", 120)
    assert len(list((tiny / EXPORT).glob("*.zip"))) == 1
    with zipfile.ZipFile(next((tiny / EXPORT).glob("*.zip"))) as archive:
        names = archive.namelist()
    assert any(n.endswith("G_100_fp16.pth") for n in names) and any(n.endswith("config.json") for n in names)
    # (Export ONNX, a job followed on the page: tests/test_export_tab.py.)
    shot(page, "buttons-4-export")

    # Load model: a G file and config.json from elsewhere, uploaded, speaks in the Synthesize tab.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "G_7.pth").write_bytes((models_dir(tiny) / "G_100.pth").read_bytes())
    (outside / "config.json").write_text(config_path(tiny).read_text(encoding="utf-8"), encoding="utf-8")
    open_tab(page, "Synthesize")
    page.get_by_text("Load a Bert-VITS2 model from elsewhere").first.click()
    page.locator("#outside-g input[type=file]").set_input_files(str(outside / "G_7.pth"))
    page.locator("#outside-config input[type=file]").set_input_files(str(outside / "config.json"))
    field(page, "outside-name").fill("visitor")
    page.locator("#outside-load").click()
    page.wait_for_function("() => document.querySelector('#checkpoint input').value.includes('G_7')",
                           timeout=60000)
    field(page, "synth-text").fill("你好。")
    page.locator("#synth-btn").click()
    status = wait_text(page, "synth-status", "s of audio", 120)
    assert "G_7.pth" in status
    shot(page, "buttons-5-outside-model")
