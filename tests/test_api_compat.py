"""hiyoriUI compatibility: a real bot client (nonebot-plugin-bertvits2's request/response handling, on aiohttp
as the plugin is) against our real server (uvicorn), and every hiyoriUI route's answer, field for field.

The plugin reads GET /models/info and, for every model, `spk2id` and `language`; a speaker then speaks with
GET /voice?text&model_id&speaker_id&language&auto_translate=False&auto_split=True and keeps the bytes of a
200 answer. Bert-VITS2's hiyoriUI.py answers /models/info with config_path, model_path, device, language,
spk2id, id2spk (keys as strings in JSON) and version per model id.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import threading
import time

import aiohttp
import httpx
import numpy as np
import pytest
import soundfile as sf
from helpers_studio import free_port
from test_serve import write_tiny_voice

from server.routes import create_app
from settings import load_settings
from vits.lists import CleanedLine
from vits.voice_folder import TRAIN_LIST, config_path, models_dir

HIYORI_MODEL_FIELDS = {"config_path", "model_path", "device", "language", "spk2id", "id2spk", "version"}
HIYORI_STATUS_FIELDS = {"devices", "cpu_percent", "memory_total", "memory_available", "memory_used",
                        "memory_percent", "gpu"}


@contextlib.contextmanager
def running(app):
    """`app` served by uvicorn (h11, as `python -m server`) on a free port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def data(tmp_path_factory, golden_dir):
    """Voice 'tiny' with two G files (G_100, G_200) and a one-clip train.list; returns the settings."""
    root = tmp_path_factory.mktemp("compat")
    settings = load_settings(write_tiny_voice(root, golden_dir))
    voice = settings.data_root / "tiny"
    shutil.copyfile(models_dir(voice) / "G_100.pth", models_dir(voice) / "G_200.pth")
    (voice / "wavs").mkdir()
    sf.write(voice / "wavs" / "a.wav", np.zeros(4410, dtype=np.float32), 44100, subtype="PCM_16")
    (voice / TRAIN_LIST).parent.mkdir(parents=True, exist_ok=True)
    line = CleanedLine("wavs/a.wav", "alice", "ZH", "你好", ["_", "n", "i", "_"], [0, 3, 3, 0], [1, 2, 1])
    (voice / TRAIN_LIST).write_text(line.line() + "\n", encoding="utf-8")
    return settings


@pytest.fixture(scope="module")
def url(data):
    with running(create_app(data)) as base:
        yield base


# -- the plugin's client code, as it handles requests and answers (nonebot_plugin_bertvits2/api.py)

async def plugin_get_speakers(base: str) -> dict[str, dict]:
    result: dict[str, dict] = {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url=f"{base}/models/info") as response:
            models = await response.json()
            for model_id, model in models.items():
                for spk in model["spk2id"].keys():
                    if spk not in result:
                        result[spk] = {"name": spk, "model_id": int(model_id), "speaker_id": model["spk2id"][spk],
                                       "language": model["language"]}
    return result


async def plugin_speak(base: str, speaker: dict, text: str, language: str | None = None,
                       auto_translate: bool = False) -> bytes | None:
    params = {"text": text, "model_id": speaker["model_id"], "speaker_id": speaker["speaker_id"],
              "language": language if language is not None else speaker["language"],
              "auto_translate": str(auto_translate), "auto_split": "True"}
    async with aiohttp.ClientSession() as session:
        async with session.get(url=f"{base}/voice", params=params) as response:
            if response.status == 200:
                return await response.read()
    return None


def test_the_bot_plugin_lists_speakers_and_speaks(url, data):
    assert asyncio.run(plugin_get_speakers(url)) == {}  # nothing loaded yet: an empty list, no crash
    g_file = models_dir(data.data_root / "tiny") / "G_200.pth"
    added = httpx.get(f"{url}/models/add", params={"model_path": str(g_file), "language": "ZH"}, timeout=60).json()
    assert added["status"] == 0 and added["Data"]["model_id"] == 0
    assert set(added["Data"]["model_info"]) >= HIYORI_MODEL_FIELDS
    speakers = asyncio.run(plugin_get_speakers(url))
    assert set(speakers) == {"alice", "bob"}
    assert speakers["bob"] == {"name": "bob", "model_id": 0, "speaker_id": 1, "language": "ZH"}
    audio = asyncio.run(plugin_speak(url, speakers["bob"], "你好。今天很好。"))
    assert audio is not None, "the plugin got no 200 answer"
    samples, sr = sf.read(io.BytesIO(audio), dtype="float32")
    assert sr == 44100 and samples.size > 0 and np.abs(samples).max() > 0
    # The plugin's "bob日语说..." sends language=JP; this server has no Japanese BERT: an answer, not a crash.
    assert asyncio.run(plugin_speak(url, speakers["bob"], "こんにちは", language="JP")) is None
    assert httpx.get(f"{url}/models/delete", params={"model_id": 0}, timeout=10).json()["status"] == 0


def test_models_info_add_delete_field_for_field(url, data):
    voice = data.data_root / "tiny"
    r = httpx.get(f"{url}/models/add", params={"model_path": "tiny", "language": "zh"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == 0 and body["detail"] and body["data"]["model_id"] == body["Data"]["model_id"]
    model_id = str(body["Data"]["model_id"])
    info = httpx.get(f"{url}/models/info", timeout=10).json()[model_id]
    assert set(info) >= HIYORI_MODEL_FIELDS
    assert info["model_path"] == str(models_dir(voice) / "G_200.pth")  # the newest G file, as hiyoriUI names it
    assert info["config_path"] == str(config_path(voice))
    assert info["spk2id"] == {"alice": 0, "bob": 1} and info["id2spk"] == {"0": "alice", "1": "bob"}
    assert info["device"] == "cpu" and info["language"] == "ZH" and info["version"] == "2.3"
    # hiyoriUI lists the G files per voice folder, lowest step first; loaded ones drop out of get_unloaded.
    assert httpx.get(f"{url}/models/get_local", timeout=10).json() == {
        "tiny": ["models/G_100.pth", "models/G_200.pth"]}
    assert httpx.get(f"{url}/models/get_unloaded", params={"root_dir": "Data"}, timeout=10).json() == {
        "tiny": ["models/G_100.pth"]}
    deleted = httpx.get(f"{url}/models/delete", params={"model_id": model_id}, timeout=10)
    assert deleted.status_code == 200 and deleted.json()["status"] == 0
    again = httpx.get(f"{url}/models/delete", params={"model_id": model_id}, timeout=10)
    assert again.status_code == 404 and again.json()["status"] == 14 and again.json()["error"]
    # hiyoriUI's config_path: a config.json for the G file (paths allowed on this server)
    g_file = str(models_dir(voice) / "G_100.pth")
    r = httpx.get(f"{url}/models/add", params={"model_path": g_file, "config_path": str(config_path(voice))},
                  timeout=60)
    assert r.status_code == 200 and r.json()["Data"]["model_info"]["config_path"] == str(config_path(voice))
    missing = httpx.get(f"{url}/models/add", params={"model_path": g_file, "config_path": str(voice / "no.json")},
                        timeout=60)
    assert missing.status_code == 404 and missing.json()["status"] == 15 and "no.json" in missing.json()["error"]
    httpx.get(f"{url}/models/delete", params={"model_id": r.json()["Data"]["model_id"]}, timeout=10)


def test_voice_speaks_the_models_language_and_answers_hiyori_codes(url):
    r = httpx.post(f"{url}/models/load", json={"model": "tiny", "checkpoint": "G_100.pth", "language": "ZH"},
                   timeout=60)
    assert r.status_code == 200 and r.json()["loaded"]["language"] == "ZH", r.text
    model_id = r.json()["loaded"]["id"]
    base = {"text": "你好。", "model_id": model_id, "speaker_name": "alice", "seed": 3}
    implicit = httpx.get(f"{url}/voice", params=base, timeout=60)
    explicit = httpx.get(f"{url}/voice", params={**base, "language": "ZH"}, timeout=60)
    assert implicit.status_code == 200 and implicit.content == explicit.content
    # hiyoriUI's POST: text as a form field, the rest in the query string.
    form = httpx.post(f"{url}/voice", params={k: v for k, v in base.items() if k != "text"},
                      data={"text": "你好。"}, timeout=60)
    assert form.status_code == 200 and form.content == implicit.content
    by_id = {k: v for k, v in base.items() if k != "speaker_name"}
    for params, status, code in (({**base, "speaker_name": "carol"}, 404, 13), ({**by_id, "speaker_id": 9}, 404, 12),
                                 ({**base, "model_id": 99}, 404, 10), ({**base, "auto_translate": "true"}, 422, 20)):
        r = httpx.get(f"{url}/voice", params=params, timeout=60)
        assert r.status_code == status and r.json()["status"] == code and r.json()["detail"], (params, r.text)
    httpx.post(f"{url}/models/unload", json={"model_id": model_id}, timeout=10)


def test_status_and_tools_answer_as_hiyori_does(url, data):
    status = httpx.get(f"{url}/status", timeout=30).json()
    assert set(status) >= HIYORI_STATUS_FIELDS
    assert status["devices"][0] == "cpu" and isinstance(status["gpu"], list)
    assert status["memory_total"] > status["memory_available"] > 0
    assert 0 <= status["memory_percent"] <= 100 and 0 <= status["cpu_percent"] <= 100
    example = httpx.get(f"{url}/tools/random_example", params={"language": "ZH"}, timeout=10).json()
    assert example["status"] == 0 and example["Data"]["text"] == "你好" and example["Data"]["speaker"] == "alice"
    audio = httpx.get(f"{url}/tools/get_audio", params={"path": example["Data"]["audio"]}, timeout=10)
    assert audio.status_code == 200
    assert audio.content == (data.data_root / "tiny" / "wavs" / "a.wav").read_bytes()
    none = httpx.get(f"{url}/tools/random_example", params={"language": "EN"}, timeout=10)
    assert none.status_code == 404 and none.json()["status"] == 17
    r = httpx.get(f"{url}/tools/translate", params={"texts": "你好", "to_language": "en"}, timeout=10)
    assert r.status_code == 501 and "translat" in r.json()["error"]
