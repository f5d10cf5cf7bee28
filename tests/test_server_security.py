"""The API under hostile or unlucky use: seeded audio while other voices load, `--no-paths` and the data root
for every path parameter, 422 (not 500) for out-of-range values on a connection that stays open, the
warning for an open `--host`, and the studio's file serving kept inside the data root."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from helpers_studio import Studio
from test_api_compat import running
from test_serve import write_tiny_voice

from server.registry import default_loader
from server.routes import create_app
from settings import load_settings
from vits.voice_folder import models_dir


@pytest.fixture(scope="module")
def settings(tmp_path_factory, golden_dir):
    """Voices 'tiny' and 'other' (a copy) and, outside the data root, a G file and its config."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("security")
    settings = load_settings(write_tiny_voice(root, golden_dir))
    shutil.copytree(settings.data_root / "tiny", settings.data_root / "other")
    outside = root / "outside"
    shutil.copytree(models_dir(settings.data_root / "tiny"), outside)
    shutil.copyfile(settings.data_root / "tiny" / "configs" / "config.json", outside / "config.json")
    return settings


def test_seeded_audio_is_the_same_while_another_voice_loads_and_unloads(settings):
    with TestClient(create_app(settings, max_models=4)) as c:
        params = {"text": "你好。今天很好。", "seed": 3, "model": "tiny"}
        alone = c.get("/voice", params=params)
        assert alone.status_code == 200, alone.text
        stop, churns = threading.Event(), []

        def churn():  # building a network draws from torch's global generator, as a seeded synthesis does
            while not stop.is_set():
                assert c.post("/models/load", json={"model": "other"}).status_code == 200
                assert c.post("/models/unload", json={"model": "other"}).status_code == 200
                churns.append(1)

        with ThreadPoolExecutor(4) as pool:
            loader = pool.submit(churn)
            answers = list(pool.map(lambda _: c.get("/voice", params=params), range(12)))
            stop.set()
            loader.result()
    assert len(churns) >= 3, "the other voice was hardly loaded during the requests"
    assert [r.status_code for r in answers] == [200] * 12
    assert sum(r.content != alone.content for r in answers) == 0


def _same_refusal(c: TestClient, requests: list[tuple[str, str, dict]], status: int) -> dict:
    """Every (method, url, params) answers `status` with one and the same JSON body; returns it."""
    bodies = []
    for method, url, params in requests:
        r = c.post(url, json=params) if method == "post" else c.get(url, params=params)
        assert r.status_code == status, (url, params, r.text)
        bodies.append(r.json())
    assert all(b == bodies[0] for b in bodies), bodies
    return bodies[0]


def test_no_paths_refuses_every_path_parameter_alike_whether_or_not_it_exists(settings):
    outside = settings.root / "outside"
    real_g, fake_g = str(outside / "G_100.pth"), str(outside / "G_999.pth")
    with TestClient(create_app(settings, allow_paths=False)) as c:
        body = _same_refusal(c, [("post", "/models/load", {"model": "tiny", "checkpoint": real_g}),
                                 ("post", "/models/load", {"model": "tiny", "checkpoint": fake_g}),
                                 ("post", "/models/load", {"model": "tiny", "checkpoint": "../../outside/G_100.pth"})],
                             403)
        assert "checkpoint paths are switched off" in body["error"] and "G_8000.pth" in body["detail"]
        assert c.get("/models").json()["loaded"] == []  # nothing outside the data root was loaded
        for requests in ([("post", "/models/load", {"model": real_g}), ("post", "/models/load", {"model": fake_g}),
                          ("get", "/models/add", {"model_path": real_g}), ("get", "/voice", {"text": "好", "model": fake_g})],
                         [("get", "/models/add", {"model_path": "tiny", "config_path": str(outside / "config.json")}),
                          ("get", "/models/add", {"model_path": "tiny", "config_path": str(outside / "nope.json")})],
                         [("get", "/models/get_local", {"root_dir": str(outside)}),
                          ("get", "/models/get_local", {"root_dir": str(outside / "nope")})],
                         [("get", "/tools/get_audio", {"path": real_g}), ("get", "/tools/get_audio", {"path": fake_g}),
                          ("get", "/tools/get_audio", {"path": str(settings.data_root / "tiny" / "a.wav")})]):
            assert "switched off" in _same_refusal(c, requests, 403)["error"]
        # A checkpoint by file name is one of the voice's own G files.
        r = c.post("/models/load", json={"model": "tiny", "checkpoint": "G_999.pth"})
        assert r.status_code == 404 and r.json()["checkpoints"] == ["G_100.pth"] and "G_100.pth" in r.json()["detail"]
        r = c.get("/voice", params={"text": "你好。", "model": "tiny:G_100.pth", "seed": 1})
        assert r.status_code == 200 and r.headers["x-model"] == "tiny:G_100.pth", r.text
        r = c.post("/models/load", json={"model": "tiny", "checkpoint": "G_100.pth"})
        assert r.status_code == 200 and r.json()["loaded"]["name"] == "tiny:G_100.pth", r.text
        assert [m["name"] for m in c.get("/models").json()["loaded"]] == ["tiny:G_100.pth"]


def test_with_paths_allowed_root_dir_and_get_audio_stay_inside_the_data_root(settings):
    outside = settings.root / "outside"
    with TestClient(create_app(settings)) as c:
        for name, url, values in (("root_dir", "/models/get_unloaded", [str(outside), str(outside / "nope"), "/",
                                                                       str(settings.data_root / ".." / "outside")]),
                                  ("path", "/tools/get_audio", [str(outside / "G_100.pth"), "/etc/passwd",
                                                                str(settings.data_root / ".." / "x.wav")])):
            body = _same_refusal(c, [("get", url, {name: v}) for v in values], 403)
            assert f"'{name}' must be inside the data root" in body["error"]
        # a folder inside the data root is searched like the root: here Data/tiny's own sub-folders
        listed = c.get("/models/get_local", params={"root_dir": str(settings.data_root / "tiny")}).json()
        assert listed == {"models": ["G_100.pth"]}
        # with paths allowed, a checkpoint path loads (the documented behaviour)
        r = c.post("/models/load", json={"model": "tiny", "checkpoint": str(outside / "G_100.pth")})
        assert r.status_code == 200, r.text


def _ask(conn: http.client.HTTPConnection, method: str, url: str, body: bytes | None = None,
         ctype: str = "application/json") -> tuple[int, bytes]:
    conn.request(method, url, body=body, headers={"content-type": ctype} if body is not None else {})
    r = conn.getresponse()
    return r.status, r.read()


def test_out_of_range_values_get_422_and_the_connection_stays_open(settings):
    def loader(path, device, checkpoint=None, **kwargs):
        if path.name == "other":  # stands for any bug in loading: the server must answer, not hang up
            raise RuntimeError("a bug in the loader")
        return default_loader(path, device, checkpoint, **kwargs)

    with running(create_app(settings, loader=loader)) as url:
        host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
        conn = http.client.HTTPConnection(host, port, timeout=120)
        q = urllib.parse.urlencode
        status, body = _ask(conn, "GET", "/voice?" + q({"text": "你好。", "seed": 2**64}))
        sock = conn.sock
        assert status == 422 and "'seed'" in json.loads(body)["error"]
        checks = [
            ("GET", "/voice?" + q({"text": "你好。", "seed": -1}), None, 422, "'seed'"),
            ("POST", "/models/load", json.dumps({"model": "tiny", "device": "gpu7"}).encode(), 422, "unknown device"),
            ("POST", "/models/load", json.dumps({"model": "tiny", "device": "cuda:77"}).encode(), 422, "cuda:77"),
            ("GET", "/models/add?" + q({"model_path": "tiny", "device": "tpu"}), None, 422, "unknown device"),
            ("GET", "/voice?" + q({"text": "你好。", "model": "a" * 5000}), None, 422, "invalid model name"),
            ("POST", "/voice", b"x" * (3 << 20), 413, "too large"),
            ("GET", "/voice?" + q({"text": "你好。", "model": "other"}), None, 500, "a bug in the loader"),
            ("GET", "/models/delete?model_id=" + str(2**70), None, 404, "no loaded model"),
        ]
        for method, path, payload, want, text in checks:
            status, body = _ask(conn, method, path, payload)
            assert status == want and text in json.loads(body)["error"], (path[:80], status, body[:300])
            assert conn.sock is sock, f"the connection was closed after {method} {path[:60]}"
        status, body = _ask(conn, "GET", "/voice?" + q({"text": "你好。", "seed": 2**63 - 1, "model": "tiny"}))
        assert status == 200 and body[:4] == b"RIFF" and conn.sock is sock
        conn.close()


def test_open_host_without_a_key_or_login_warns(settings, monkeypatch, capsys):
    import uvicorn

    from server.__main__ import main

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(kwargs["host"]))
    monkeypatch.delenv("KOE_API_KEY", raising=False)
    args = ["--root", str(settings.data_root), "--no-bert", "--port", "5999"]
    assert main([*args, "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: --host 0.0.0.0 makes the API reachable from other machines" in err and "--api-key" in err
    for quiet in (["--host", "0.0.0.0", "--api-key", "k"], ["--host", "127.0.0.1"], ["--host", "::1"]):
        assert main([*args, *quiet]) == 0
        assert "WARNING" not in capsys.readouterr().err, quiet
    monkeypatch.setenv("KOE_API_KEY", "from-env")
    assert main([*args, "--host", "0.0.0.0"]) == 0 and "WARNING" not in capsys.readouterr().err
    assert served == ["0.0.0.0", "0.0.0.0", "127.0.0.1", "::1", "0.0.0.0"]


def test_the_studio_warns_and_serves_files_from_the_data_root_only(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("data_root: Data\ndevice: cpu\n", encoding="utf-8")
    data = tmp_path / "Data"
    (data / "tiny").mkdir(parents=True)
    (data / "tiny" / "clip.wav").write_bytes(b"RIFF-inside")
    (tmp_path / "secret.txt").write_text("outside the data root")
    (data / "tiny" / "link.wav").symlink_to(tmp_path / "secret.txt")
    studio = Studio(tmp_path, config, "--host", "0.0.0.0", env={"OMP_NUM_THREADS": "1"})
    try:
        studio.wait_ready()
        log = studio.log.read_text(errors="replace")
        assert "WARNING: --host 0.0.0.0 makes the studio and its API reachable" in log and "--auth" in log

        def fetch(path: str) -> httpx.Response:
            return httpx.get(f"{studio.url}/gradio_api/file={path}", timeout=10)

        inside = fetch(str(data / "tiny" / "clip.wav"))
        assert inside.status_code == 200 and inside.content == b"RIFF-inside"
        for path in (str(tmp_path / "secret.txt"), f"{data}/../secret.txt", f"{data}/tiny/../../secret.txt",
                     str(data / "tiny" / "link.wav"), str(config), "/etc/passwd", "config.yml", "app.py"):
            r = fetch(path)
            assert r.status_code in (403, 404) and b"outside the data root" not in r.content, (path, r.status_code)
    finally:
        studio.stop()
