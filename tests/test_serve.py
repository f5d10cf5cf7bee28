"""The HTTP API against a tiny random voice in a temporary Data folder (real text frontend, tiny BERT)."""

from __future__ import annotations

import io
import json
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient

from server.routes import create_app
from settings import load_settings
from vits.checkpoints import save_checkpoint
from vits.config import VoiceConfig
from vits.models import build_generator
from vits.voice_folder import config_path, models_dir

TINY_MODEL = {
    "inter_channels": 16, "hidden_channels": 16, "filter_channels": 32, "n_heads": 2, "n_layers": 3,
    "upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]],
    "gin_channels": 8, "n_flow_layer": 2, "n_layers_trans_flow": 3,
}


def write_tiny_voice(root, golden_dir):
    """Write Data/tiny (random G, speakers alice and bob), a 1024-wide tiny Chinese BERT and a config.yml
    under `root`; returns the config.yml path (also used by tests/test_studio_api.py)."""
    from vits.text.testing import build_tiny_models

    bert = build_tiny_models(root / "bert", golden_dir / "tokenizers", hidden=1024, layers=3, languages=("ZH",))
    voice = root / "Data" / "tiny"
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": 2, "spk2id": {"alice": 0, "bob": 1}},
                                      "model": TINY_MODEL})
    cfg.save(config_path(voice))
    torch.manual_seed(0)
    save_checkpoint(models_dir(voice) / "G_100.pth", build_generator(cfg), epoch=1, step=100, learning_rate=2e-4)
    (root / "config.yml").write_text(f"data_root: Data\ndevice: cpu\nbert:\n  ZH: {bert['ZH']}\n"
                                     f"  JP: {root / 'missing-jp'}\n  EN: {root / 'missing-en'}\n")
    return root / "config.yml"


@pytest.fixture(scope="module")
def settings(tmp_path_factory, golden_dir):
    """A Data root with voice 'tiny' (speakers alice, bob) and 1024-wide tiny Chinese BERT."""
    torch.set_num_threads(2)
    return load_settings(write_tiny_voice(tmp_path_factory.mktemp("serve"), golden_dir))


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings, max_text_length=500)) as c:
        yield c


def _wav(response) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(io.BytesIO(response.content), dtype="float32")
    return audio, sr


def test_voice_get_post_and_hiyori_form(client):
    r = client.get("/voice", params={"text": "你好。", "speaker_name": "bob", "seed": 1, "sdp_ratio": 0.5})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and r.headers["x-speaker"] == "bob"
    audio, sr = _wav(r)
    assert sr == 44100 and audio.size > 0 and audio.size % 512 == 0 and np.abs(audio).max() > 0
    # Same request as JSON body: same seed, same bytes.
    r2 = client.post("/voice", json={"text": "你好。", "speaker_name": "bob", "seed": 1, "sdp_ratio": 0.5})
    assert r2.status_code == 200 and r2.content == r.content
    # hiyoriUI style: text in a form, the rest in the query, speaker by id.
    r3 = client.post("/voice", params={"model_id": 0, "speaker_id": 1, "seed": 1, "sdp_ratio": 0.5},
                     data={"text": "你好。"})
    assert r3.status_code == 200 and r3.content == r.content
    # A different seed and a different speaker give different audio.
    r4 = client.get("/voice", params={"text": "你好。", "speaker_name": "alice", "seed": 1, "sdp_ratio": 0.5})
    assert r4.status_code == 200 and r4.content != r.content
    r5 = client.get("/voice", params={"text": "你好。", "speaker_name": "bob", "seed": 2, "sdp_ratio": 0.5})
    assert r5.status_code == 200 and r5.headers["x-speaker"] == "bob"
    assert _wav(r5)[0].size > 0 and r5.content != r.content


@pytest.mark.parametrize("fmt", ["flac", "mp3", "ogg"])
def test_other_formats(client, fmt):
    wav = client.get("/voice", params={"text": "你好。", "seed": 2})
    r = client.get("/voice", params={"text": "你好。", "seed": 2, "format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == {"flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}[fmt]
    audio, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    reference, _ = _wav(wav)
    assert sr == 44100 and abs(len(audio) - len(reference)) <= 2048
    if fmt == "flac":  # lossless: the very same 16-bit samples
        assert np.array_equal(audio, reference)


def test_stream_is_sentence_chunks_of_the_same_audio(client):
    params = {"text": "你好。今天很好。", "seed": 5, "speaker_name": "alice"}
    whole, _ = _wav(client.get("/voice", params=params))
    with client.stream("GET", "/voice", params={**params, "stream": "true"}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        chunks = [c for c in r.iter_raw() if c]
    body = b"".join(chunks)
    assert body[:4] == b"RIFF" and struct.unpack("<I", body[40:44])[0] == 0xFFFFFFFF
    streamed = np.frombuffer(body[44:], dtype="<i2").astype(np.float32) / 32768.0
    assert len(chunks) >= 3  # header, sentence 1, sentence 2
    assert np.array_equal(streamed, whole)


def test_models_load_unload_status(client, settings):
    r = client.get("/models")
    assert r.status_code == 200 and r.json()["available"] == ["tiny"]
    r = client.post("/models/load", json={"model": "tiny"})
    assert r.status_code == 200, r.text
    info = r.json()["loaded"]
    assert info["speakers"] == ["alice", "bob"] and info["spk2id"] == {"alice": 0, "bob": 1}
    assert info["sampling_rate"] == 44100 and info["backend"] == "torch"
    status = client.get("/status").json()
    assert status["device"] == "cpu" and status["queue_length"] == 0 and status["memory"]["rss_mb"] > 0
    assert [m["name"] for m in status["models"]] == ["tiny"]
    assert client.get("/models/info").json()[str(info["id"])]["spk2id"] == {"alice": 0, "bob": 1}
    r = client.post("/models/unload", json={"model": "tiny"})
    assert r.status_code == 200 and r.json()["unloaded"] == "tiny"
    assert client.get("/models").json()["loaded"] == []
    r = client.post("/models/unload", json={"model": "tiny"})
    assert r.status_code == 404 and "not loaded" in r.json()["error"]
    # hiyoriUI aliases, by path
    r = client.get("/models/add", params={"model_path": str(settings.data_root / "tiny")})
    assert r.status_code == 200, r.text
    model_id = r.json()["data"]["model_id"]
    assert client.get("/voice", params={"text": "好。", "model_id": model_id}).status_code == 200
    assert client.get("/models/delete", params={"model_id": model_id}).status_code == 200


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail"} and body["error"]
    return body


def test_bad_requests_get_clear_json(client):
    body = _error(client.post("/voice", json={"text": "好" * 100_000}), 413)
    assert "100000 characters" in body["error"] and "500" in body["error"] and body["limit"] == 500
    _error(client.post("/voice", data={"text": "a" * 100_000}), 413)
    _error(client.get("/voice", params={"text": "a" * 50_000}), 413)  # httpx refuses URLs over 64 KiB
    body = _error(client.get("/voice", params={"text": "你好", "speaker_name": "carol"}), 404)
    assert "carol" in body["error"] and body["speakers"] == ["alice", "bob"] and "alice, bob" in body["detail"]
    body = _error(client.get("/voice", params={"text": "你好", "speaker_id": 7}), 404)
    assert "0=alice" in body["detail"]
    body = _error(client.get("/voice", params={"text": "你好", "length": -1}), 422)
    assert "'length'" in body["error"] and "greater than 0" in body["error"]
    body = _error(client.get("/voice", params={"text": "你好", "format": "aac"}), 422)
    assert "unsupported format 'aac'" in body["error"] and "mp3" in body["error"]
    body = _error(client.get("/voice", params={"text": "你好", "sdp_ratio": "abc"}), 422)
    assert "'sdp_ratio'" in body["error"]
    body = _error(client.get("/voice", params={"text": "你好", "language": "FR"}), 422)
    assert "ZH, JP, EN, KO, AUTO, MIX" in body["error"]
    assert "'text' is required" in _error(client.get("/voice"), 422)["error"]
    assert "is empty" in _error(client.post("/voice", json={"text": "   "}), 422)["error"]
    body = _error(client.get("/voice", params={"text": "你好", "model": "nobody"}), 404)
    assert "unknown model 'nobody'" in body["error"] and body["available"] == ["tiny"]
    _error(client.get("/voice", params={"text": "你好", "model": "../etc"}), 404)
    _error(client.get("/voice", params={"text": "你好", "stream": "true", "format": "flac"}), 422)
    body = _error(client.post("/voice", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert "not valid JSON" in body["error"]
    assert _error(client.get("/voice", params={"text": "。。。"}), 422)["detail"]  # the library's fix text
    _error(client.get("/nope"), 404)
    _error(client.delete("/voice"), 405)


def test_concurrent_requests_match_single_ones(client):
    texts = ["你好。", "今天很好。", "再见。"]
    alone = {t: client.get("/voice", params={"text": t, "seed": 9}).content for t in texts}
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda t: (t, client.get("/voice", params={"text": t, "seed": 9})), texts * 2))
    for text, r in results:
        assert r.status_code == 200 and r.content == alone[text]


def test_api_key_and_queue_limit(settings):
    with TestClient(create_app(settings, api_key="s3cret", max_queue=0)) as c:
        body = _error(c.get("/voice", params={"text": "你好"}), 401)
        assert "X-API-Key" in body["detail"]
        _error(c.get("/status", headers={"X-API-Key": "wrong"}), 401)
        assert c.get("/status", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/status", params={"api_key": "s3cret"}).status_code == 200
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
        assert "/voice" in spec["paths"] and "/models/load" in spec["paths"]
        body = _error(c.get("/voice", params={"text": "你好", "api_key": "s3cret"}), 503)
        assert "busy" in body["error"]


def test_onnx_voice_served(client, settings):
    from pipeline.export_onnx import main as export_main

    assert export_main([str(settings.data_root / "tiny"), "--no-verify", "--threads", "2"]) == 0
    r = client.get("/voice", params={"text": "你好。", "model": "tiny@onnx", "seed": 4})
    assert r.status_code == 200, r.text
    audio, sr = _wav(r)
    assert sr == 44100 and audio.size > 0 and r.headers["x-model"] == "tiny@onnx"
    again = client.get("/voice", params={"text": "你好。", "model": "tiny@onnx", "seed": 4})
    assert again.content == r.content
    loaded = {m["name"]: m["backend"] for m in client.get("/models").json()["loaded"]}
    assert loaded["tiny@onnx"] == "onnx"
    assert json.loads(client.get("/status").content)["queue_length"] == 0


def test_no_voice_at_all_says_so_not_that_there_are_several(tmp_path):
    (tmp_path / "config.yml").write_text(f"data_root: {tmp_path / 'Data'}\n", encoding="utf-8")
    empty = load_settings(tmp_path / "config.yml")
    with TestClient(create_app(empty)) as c:
        body = _error(c.get("/voice", params={"text": "你好"}), 404)
        assert "no trained voice" in body["error"] and "more than one" not in body["error"]
        assert "python -m pipeline.train" in body["detail"] and "path" in body["detail"]
    with TestClient(create_app(empty, allow_paths=False)) as c:
        assert "path" not in _error(c.get("/voice", params={"text": "你好"}), 404)["detail"]
