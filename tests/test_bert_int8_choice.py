"""Choosing the int8 BERT of an ONNX voice (`export_onnx --bert --int8`): the API's `bert=int8|fp32` on /voice over
real HTTP (uvicorn), the registry opening the int8 graphs only on the first int8 request, and the Synthesize tab's
BERT precision control in Chromium. fp32 stays what it was; int8 audio differs, with features inside the error class
koe_bert.json records."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from helpers_studio import CHROMIUM, Studio, studio_page
from test_api_compat import running

from server.audio import to_int16
from server.routes import create_app
from settings import load_settings
from vits.voice_folder import ONNX, ONNX_BERT, ONNX_BERT_METADATA

TEXT = "你好，世界。今天天气很好！"
QUERY = {"text": TEXT, "model": "small@onnx", "speaker_name": "spk1", "language": "ZH", "seed": 7}


def build_voices(root: Path, golden_dir: Path) -> Path:
    """Under `root`: Data/small (the golden small model, exported with a 1024-wide tiny ZH BERT, fp32 + int8),
    Data/fp32only (that export without its int8 graphs) and Data/nobert (without BERT graphs); returns config.yml."""
    from pipeline.export_onnx import main as export_main
    from vits.text.testing import build_tiny_models

    dirs = build_tiny_models(root / "bert", golden_dir / "tokenizers", hidden=1024, layers=3, languages=("ZH",))
    voice = root / "Data" / "small"
    (voice / "models").mkdir(parents=True)
    (voice / "configs").mkdir()
    shutil.copy(golden_dir / "model-small" / "G_1000.pth", voice / "models" / "G_1000.pth")
    shutil.copy(golden_dir / "model-small" / "config.json", voice / "configs" / "config.json")
    config = root / "config.yml"
    config.write_text(f"data_root: Data\ndevice: cpu\nbert:\n  ZH: {dirs['ZH']}\n", encoding="utf-8")
    mp = pytest.MonkeyPatch()
    mp.setenv("KOE_CONFIG", str(config))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert export_main([str(voice), "--bert", "--int8", "--bert-languages", "ZH", "--no-verify"]) == 0
    finally:
        mp.undo()
    fp32only = root / "Data" / "fp32only" / ONNX
    shutil.copytree(voice / ONNX, fp32only)
    meta = json.loads((fp32only / ONNX_BERT / ONNX_BERT_METADATA).read_text(encoding="utf-8"))
    for entry in meta["languages"].values():
        del entry["graphs"]["int8"], entry["int8_vs_fp32"]
    (fp32only / ONNX_BERT / ONNX_BERT_METADATA).write_text(json.dumps(meta), encoding="utf-8")
    shutil.copytree(voice / ONNX, root / "Data" / "nobert" / ONNX, ignore=shutil.ignore_patterns(ONNX_BERT))
    return config


@pytest.fixture(scope="module")
def voices(tmp_path_factory, golden_dir):
    root = tmp_path_factory.mktemp("bert-int8")
    return root, build_voices(root, golden_dir)


@pytest.fixture(scope="module")
def served(voices):
    """(base URL, the app's registry) of a real uvicorn server over the voices."""
    _, config = voices
    app = create_app(load_settings(config), max_text_length=500)
    with running(app) as url:
        yield url, app.state.registry


def _audio(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    audio, sr = sf.read(io.BytesIO(response.content), dtype="int16")
    assert sr == 44100 and audio.size > 0
    return audio


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine per phone column of two [hidden, T] feature arrays."""
    return (a * b).sum(axis=0) / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0)


def test_fp32_is_the_default_and_unchanged(served, voices):
    from vits.onnx_runtime import OnnxVoice

    url, registry = served
    root, _ = voices
    absent = httpx.get(f"{url}/voice", params=QUERY, timeout=120)
    explicit = httpx.get(f"{url}/voice", params={**QUERY, "bert": "FP32"}, timeout=120)
    posted = httpx.post(f"{url}/voice", json={**QUERY, "bert": "fp32"}, timeout=120)
    assert absent.content == explicit.content == posted.content
    assert absent.headers["x-bert"] == "ONNX BERT (fp32)"
    # the bytes the export's fp32 graphs give outside the server (hiyoriUI's sdp_ratio/noise defaults)
    want = OnnxVoice.load(root / "Data" / "small" / ONNX).synthesize(TEXT, "ZH", speaker="spk1", seed=7,
                                                                      sdp_ratio=0.2, noise_scale=0.2)
    assert np.array_equal(_audio(absent), to_int16(want))
    entry = registry.find("small@onnx", None)
    assert entry.bert_int8 is None  # fp32 requests never open the int8 graphs
    assert entry.info()["bert_precisions"] == ["fp32", "int8"]


def test_int8_is_read_by_the_int8_graphs_opened_once(served, voices):
    from vits.onnx_runtime import OnnxVoice

    url, registry = served
    root, _ = voices
    fp32 = _audio(httpx.get(f"{url}/voice", params=QUERY, timeout=120))
    r = httpx.get(f"{url}/voice", params={**QUERY, "bert": "int8"}, timeout=120)
    int8 = _audio(r)
    assert r.headers["x-bert"] == "ONNX BERT (int8)"
    assert int8.shape != fp32.shape or not np.array_equal(int8, fp32), "int8 BERT gave the fp32 audio"
    want = OnnxVoice.load(root / "Data" / "small" / ONNX, bert_int8=True).synthesize(
        TEXT, "ZH", speaker="spk1", seed=7, sdp_ratio=0.2, noise_scale=0.2)
    assert np.array_equal(int8, to_int16(want))  # exactly the int8 graphs, nothing else changed
    entry = registry.find("small@onnx", None)
    opened = entry.bert_int8
    assert opened is not None and opened.int8 and opened is not entry.voice.bert
    streamed = httpx.post(f"{url}/voice", json={**QUERY, "bert": "int8", "stream": True, "format": "wav"},
                          timeout=120)
    assert streamed.status_code == 200 and streamed.headers["x-bert"] == "ONNX BERT (int8)"
    assert entry.bert_int8 is opened  # kept with the voice, not opened again
    assert registry.bert_for(entry, "int8") is opened and registry.bert_for(entry) is entry.voice.bert


def test_int8_stays_in_the_recorded_error_class(served):
    """An int8 request's features differ from fp32's by no more than koe_bert.json's error class (per-phone cosine
    not below its lowest cosine by more than its own distance from 1, max abs within 2x), and so does its audio:
    same length, different samples, RMS difference under the recorded worst relative feature error."""
    import vits.text as text_mod

    url, registry = served
    fp32_audio = _audio(httpx.get(f"{url}/voice", params=QUERY, timeout=120)).astype(np.float64)
    int8_audio = _audio(httpx.get(f"{url}/voice", params={**QUERY, "bert": "int8"}, timeout=120)).astype(np.float64)
    entry = registry.find("small@onnx", None)
    recorded = httpx.get(f"{url}/models", timeout=30).json()["loaded"]
    recorded = next(m for m in recorded if m["name"] == "small@onnx")["bert_int8_error"]["ZH"]
    assert recorded == entry.info()["bert_int8_error"]["ZH"]
    assert fp32_audio.shape == int8_audio.shape  # the durations did not move
    relative = np.sqrt(((int8_audio - fp32_audio) ** 2).mean() / (fp32_audio ** 2).mean())
    assert 0 < relative <= recorded["max_abs_relative"], (relative, recorded)
    assert 0 < recorded["max_abs"] and 0.9 < recorded["min_cosine"] <= recorded["mean_cosine"] <= 1 + 1e-6
    segments = [s for sentence in text_mod.split_sentences(TEXT) for s in text_mod.clean_text(sentence, "ZH")]
    fp32 = registry.bert_for(entry, "fp32").features_batch(segments)
    int8 = registry.bert_for(entry, "int8").features_batch(segments)
    for a, b in zip(fp32, int8):
        assert a.shape == b.shape and not np.array_equal(a, b)
        cos = _cosines(a, b)
        assert cos.min() >= 1 - 2 * (1 - recorded["min_cosine"]), (cos.min(), recorded)
        assert np.abs(a - b).max() <= 2 * recorded["max_abs"], (np.abs(a - b).max(), recorded)


def test_int8_that_cannot_be_read_is_a_clear_error(served):
    url, _ = served
    bad = httpx.get(f"{url}/voice", params={**QUERY, "bert": "int4"}, timeout=30)
    assert bad.status_code == 422 and bad.json()["error"].startswith("invalid parameter 'bert': unknown BERT "
                                                                     "precision 'int4'; use fp32")
    for model, problem in (("fp32only@onnx", "has no int8 BERT graphs"), ("nobert@onnx", "has no BERT graphs"),
                           ("small", "runs on torch")):
        r = httpx.get(f"{url}/voice", params={**QUERY, "model": model, "bert": "int8"}, timeout=120)
        body = r.json()
        assert r.status_code == 422 and problem in body["error"], (model, body)
        assert "--bert --int8" in body["detail"] and "leave bert out" in body["detail"], body
    info = {m["name"]: m for m in httpx.get(f"{url}/models", timeout=30).json()["loaded"]}
    assert info["fp32only@onnx"]["bert_precisions"] == ["fp32"] and info["fp32only@onnx"]["bert_int8_error"] is None
    assert "bert_precisions" not in info["small"]  # a torch voice: its BERT is the server's
    # fp32 still works on all three, the torch voice unchanged by the parameter's default
    for model in ("fp32only@onnx", "small"):
        plain = httpx.get(f"{url}/voice", params={**QUERY, "model": model}, timeout=120)
        assert _audio(plain).size and plain.content == httpx.get(
            f"{url}/voice", params={**QUERY, "model": model, "bert": "fp32"}, timeout=120).content


def test_tab_offers_int8_only_where_the_export_has_it(voices):
    from studio.tabs import Context
    from studio.tabs.synthesize import FP32, INT8, ONNX_ENGINE, TORCH, bert_precision_update

    _, config = voices
    ctx = Context(settings=load_settings(config), runner=None, config_path=None)
    assert bert_precision_update(ctx, "small", TORCH, INT8)["visible"] is False  # torch: the studio's BERT
    offered = bert_precision_update(ctx, "small", ONNX_ENGINE, INT8)
    assert offered["interactive"] and offered["value"] == INT8
    assert offered["info"].startswith("int8 vs fp32 feature error (koe_bert.json): ZH mean cosine 0.99")
    for voice, why in (("fp32only", "this export has no int8 BERT graphs"), ("nobert", "has no BERT graphs")):
        shown = bert_precision_update(ctx, voice, ONNX_ENGINE, INT8)
        assert shown["visible"] and not shown["interactive"] and shown["value"] == FP32
        assert why in shown["info"] and "--bert --int8" in shown["info"], shown


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_synthesize_tab_offers_int8_with_its_recorded_error(voices):
    from test_browser_e2e import field, idle, open_tab, pick, shot, wait_text

    root, config = voices
    studio = Studio(root, config, env={"OMP_NUM_THREADS": "2"})
    try:
        studio.wait_ready()
        with studio_page(studio, 1100) as page:
            page.locator("#voice-status").get_by_text("Loading voices").wait_for(state="detached")
            open_tab(page, "Synthesize")
            pick(page, "voice", "small")
            # the voice change settles first (it sets the Engine back to PyTorch)
            page.wait_for_function("() => document.querySelector('#checkpoint input').value.includes('G_1000')")
            wait_text(page, "synth-model", "Engine: PyTorch", 60)
            page.locator("#synth-engine").wait_for(state="visible")
            idle(page, "synth-engine")
            assert not page.locator("#synth-bert").is_visible()  # PyTorch engine: the server's BERT
            page.locator("#synth-engine").get_by_label("ONNX export (onnxruntime)").check()
            precision = page.locator("#synth-bert")
            precision.wait_for(state="visible")
            page.wait_for_function("() => document.querySelector('#synth-bert').innerText.includes('mean cosine')")
            assert "ZH" in precision.inner_text() and "lowest" in precision.inner_text(), precision.inner_text()
            wait_text(page, "synth-model", "ONNX BERT (fp32)", 60)  # the export is loaded
            precision.get_by_label("int8", exact=False).check()
            wait_text(page, "synth-model", "ONNX BERT (int8)", 60)
            field(page, "synth-text").fill("你好。")
            field(page, "seed").fill("3")
            page.locator("#synth-btn").click()
            status = wait_text(page, "synth-status", "s of audio", 120, fail=("synth-status", "❌"))
            assert "ONNX BERT (int8)" in status, status
            shot(page, "synth-bert-int8")
            # an export without int8 graphs: fp32 only, and the control says why
            pick(page, "voice", "fp32only")
            page.wait_for_function("() => document.querySelector('#synth-bert').innerText.includes('no int8')")
            assert precision.locator("input[value=int8]").is_disabled()
    finally:
        studio.stop()
    assert "Traceback" not in studio.log.read_text(errors="replace")
