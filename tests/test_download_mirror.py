"""`python -m pipeline.download` reaches the mirror it is told about: `--endpoint`, else config.yml
`hub.endpoint`, else $HF_ENDPOINT. The mirror is a stand-in Hugging Face hub on 127.0.0.1 (the few hub
API routes `snapshot_download` uses) serving a tiny base model and stand-in WavLM files; nothing leaves the machine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch
from helpers_studio import free_port
from test_serve import TINY_MODEL

REPO = Path(__file__).resolve().parent.parent
BASE_REPO, WAVLM_REPO = "someone/tiny-base", "microsoft/wavlm-base-plus"


class StandInHub:
    """A local HTTP server answering repo info, the file tree and file downloads for `repos`
    ({repo: {path: bytes}}); `requests` records (method, path) of every request."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos, self.requests = repos, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._answer(head=True)

            def do_GET(self):
                self._answer(head=False)

            def _send(self, code: int, body: bytes, ctype: str, head: bool, headers: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _answer(self, head: bool):
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path))
                for repo, files in hub.repos.items():
                    sha = hashlib.sha1(repo.encode() + b"".join(files.values())).hexdigest()
                    if path.startswith(f"/api/models/{repo}/revision/"):
                        body = {"id": repo, "sha": sha, "siblings": [{"rfilename": n} for n in files]}
                        return self._send(200, json.dumps(body).encode(), "application/json", head)
                    if path.startswith(f"/api/models/{repo}/tree/"):
                        body = [{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                for n, b in files.items()]
                        return self._send(200, json.dumps(body).encode(), "application/json", head)
                    if path.startswith(f"/{repo}/resolve/"):
                        name = path[len(f"/{repo}/resolve/"):].split("/", 1)[1]
                        if name in files:
                            return self._send(200, files[name], "application/octet-stream", head, {
                                "X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(files[name]).hexdigest()}"'})
                self._send(404, b'{"error": "Repository not found"}', "application/json", head,
                           {"X-Error-Code": "RepoNotFound"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def downloads(self) -> set[str]:
        return {path for method, path in self.requests if method == "GET" and "/resolve/" in path}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The stand-in hub: a tiny 2.3 base model (a real tiny G + config.json, in a subfolder as the community
    repository has it; stand-in D/DUR/WD bytes) and stand-in WavLM files."""
    from vits.checkpoints import save_checkpoint
    from vits.config import VoiceConfig
    from vits.models import build_generator

    root = tmp_path_factory.mktemp("hub")
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": 2, "spk2id": {"a": 0, "b": 1}}, "model": TINY_MODEL})
    cfg.save(root / "config.json")
    torch.manual_seed(0)
    save_checkpoint(root / "G_0.pth", build_generator(cfg), epoch=0, step=0, learning_rate=2e-4)
    base = {"Bert-VITS2_2.3/G_0.pth": (root / "G_0.pth").read_bytes(),
            "Bert-VITS2_2.3/config.json": (root / "config.json").read_bytes(), "README.md": b"not wanted"}
    for name in ("D_0.pth", "DUR_0.pth", "WD_0.pth"):
        base[f"Bert-VITS2_2.3/{name}"] = f"stand-in {name}".encode()
    wavlm = {"config.json": b'{"model_type": "wavlm"}', "model.safetensors": b"stand-in weights",
             "tf_model.h5": b"not wanted"}
    server = StandInHub({BASE_REPO: base, WAVLM_REPO: wavlm})
    yield server
    server.httpd.shutdown()


def download(tmp: Path, what: str, *args: str, config_endpoint: str = "", env_endpoint: str | None = None):
    """Run the download CLI with its own config.yml under `tmp`; returns (process, base folder, wavlm folder)."""
    base, wavlm = tmp / "base", tmp / "wavlm"
    (tmp / "config.yml").write_text(f"hub:\n  endpoint: \"{config_endpoint}\"\nwavlm: {wavlm}\n"
                                    f"base_model:\n  repo: {BASE_REPO}\n  folder: {base}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "KOE_CONFIG")}
    env.update(HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    if env_endpoint is not None:
        env["HF_ENDPOINT"] = env_endpoint
    proc = subprocess.run([sys.executable, "-m", "pipeline.download", what, "--config", str(tmp / "config.yml"),
                           *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc, base, wavlm


def dead_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: a download that went there fails


def test_endpoint_flag_wins_over_config_and_environment(hub, tmp_path):
    from vits.synthesis import Voice

    before = len(hub.requests)
    proc, base, _ = download(tmp_path, "base", "--endpoint", hub.url, config_endpoint=dead_endpoint(),
                             env_endpoint=dead_endpoint())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"from {hub.url}" in proc.stdout
    assert sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) == [
        "DUR_0.pth", "D_0.pth", "G_0.pth", "WD_0.pth", "config.json"]
    assert (base / "WD_0.pth").read_bytes() == b"stand-in WD_0.pth"
    assert Voice.load(base / "G_0.pth").speakers == ["a", "b"]  # the served model is usable as it landed
    assert {f"/{BASE_REPO}/resolve/" in p for _, p in hub.requests[before:]} == {False, True}
    assert not any("README.md" in p for p in hub.downloads())  # only the files the target names


def test_config_endpoint_wins_over_environment(hub, tmp_path):
    before = len(hub.requests)
    proc, base, _ = download(tmp_path, "base", config_endpoint=hub.url, env_endpoint=dead_endpoint())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (base / "G_0.pth").is_file() and len(hub.requests) > before


def test_environment_endpoint_reaches_the_wavlm_download(hub, tmp_path):
    proc, _, wavlm = download(tmp_path, "wavlm", env_endpoint=hub.url)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert any(p.startswith(f"/{WAVLM_REPO}/resolve/") for p in hub.downloads())
    assert (wavlm / "model.safetensors").read_bytes() == b"stand-in weights"
    assert (wavlm / "config.json").is_file() and not (wavlm / "tf_model.h5").exists()


def test_unreachable_mirror_fails_with_the_repository_and_the_fix(tmp_path):
    endpoint = dead_endpoint()
    proc, base, _ = download(tmp_path, "base", "--endpoint", endpoint)
    assert proc.returncode == 1
    # One line naming the repository, the mirror that failed, the folder and the fix.
    [error] = proc.stderr.strip().splitlines()
    assert error.startswith("error: ") and f"could not download {BASE_REPO} from {endpoint}" in error, error
    assert "Connection refused" in error and "--endpoint" in error and str(base) in error
    assert not (base / "G_0.pth").exists()
