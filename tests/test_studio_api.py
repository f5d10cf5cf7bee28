"""The HTTP API on the studio's port: `python app.py` answers /voice and /models/info, behind its login."""

from __future__ import annotations

import httpx
import pytest
from helpers_studio import Studio
from test_serve import write_tiny_voice


@pytest.fixture(scope="module")
def studios(tmp_path_factory, golden_dir):
    """Two studios over one tiny voice: one with `--auth u:p`, one open. Started together (start-up is slow)."""
    root = tmp_path_factory.mktemp("studio-api")
    config = write_tiny_voice(root, golden_dir)
    locked, open_ = (Studio(root, config, "--auth", "u:p", env={"OMP_NUM_THREADS": "1"}),
                     Studio(root, config, env={"OMP_NUM_THREADS": "1"}))
    try:
        locked.wait_ready()
        open_.wait_ready()
        yield locked, open_
    finally:
        locked.stop()
        open_.stop()


def test_api_answers_on_the_studio_port_behind_its_login(studios):
    locked, _ = studios
    r = httpx.get(f"{locked.url}/models/info", timeout=10)
    assert r.status_code == 401 and r.json()["error"] and "-u user:password" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(f"{locked.url}/voice", params={"text": "你好。"}, timeout=10).status_code == 401
    assert httpx.get(f"{locked.url}/models/info", auth=("u", "wrong"), timeout=10).status_code == 401
    assert httpx.get(f"{locked.url}/models/info", auth=("u", "p"), timeout=10).json() == {}

    r = httpx.get(f"{locked.url}/voice", params={"text": "你好。", "speaker_name": "bob", "seed": 1},
                  auth=("u", "p"), timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and r.headers["x-speaker"] == "bob"
    assert r.content[:4] == b"RIFF" and len(r.content) > 44
    info = httpx.get(f"{locked.url}/models/info", auth=("u", "p"), timeout=10).json()
    assert [m["name"] for m in info.values()] == ["tiny"] and info["0"]["spk2id"] == {"alice": 0, "bob": 1}
    assert httpx.get(f"{locked.url}/docs", auth=("u", "p"), timeout=10).status_code == 200
    # Gradio's own pages still answer (its login page, since the studio has one).
    assert httpx.get(locked.url, timeout=10).status_code == 200
    assert httpx.get(f"{locked.url}/nope", auth=("u", "p"), timeout=10).status_code != 401


def test_api_is_open_when_the_studio_is(studios):
    _, open_ = studios
    r = httpx.get(f"{open_.url}/models/info", timeout=10)
    assert r.status_code == 200 and r.json() == {}
    status = httpx.get(f"{open_.url}/status", timeout=10).json()
    assert status["api_key_required"] is False and status["limits"]["max_models"] == 1
    r = httpx.get(f"{open_.url}/voice", params={"text": "你好。", "seed": 1}, timeout=120)
    assert r.status_code == 200 and r.headers["x-model"] == "tiny", r.text
    assert httpx.get(f"{open_.url}/models", timeout=10).json()["available"] == ["tiny"]


def test_synthesize_tab_and_api_share_one_registry(tmp_path, golden_dir):
    from fastapi.testclient import TestClient

    from server.routes import create_app
    from settings import load_settings
    from studio.app import new_registry
    from studio.tabs import Context, synthesize

    settings = load_settings(write_tiny_voice(tmp_path, golden_dir))
    registry = new_registry(settings)
    ctx = Context(settings=settings, runner=None, config_path=None)
    ctx.caches[synthesize.REGISTRY] = registry
    choices = synthesize.checkpoint_choices(ctx, "tiny")
    assert [label for label, _ in choices] == ["G_100.pth — step 100"]
    g_path = choices[0][1]
    assert synthesize.speaker_names(g_path) == ["alice", "bob"]
    entry = synthesize.load_checkpoint(ctx, g_path)
    sentences = list(synthesize.speak(entry, registry.bert(), "你好。今天很好。", language="ZH", speaker="bob",
                                      gap=0.2, seed=1, sdp_ratio=0.5, noise_scale=0.6, noise_scale_w=0.9,
                                      length_scale=1.0))
    assert len(sentences) == 2 and len(sentences[1][1]) > int(0.2 * 44100)
    assert synthesize.load_checkpoint(ctx, g_path) is entry  # loaded once
    with TestClient(create_app(settings, registry=registry)) as c:
        info = c.get("/models/info").json()
        assert [m["model_path"] for m in info.values()] == [g_path]
        assert c.get("/voice", params={"text": "你好。", "model": g_path}).status_code == 200
    assert list(registry.models) == [g_path]
