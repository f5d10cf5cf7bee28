"""`python -m server` as a real uvicorn subprocess: the documented switches (`--no-paths`, `--max-models`,
`--model`, $KOE_API_KEY) and every `/voice` knob reaching the model (a swap of two must fail), AUTO/MIX
text and mp3 streaming. The expected audio is computed here with the library (`vits.synthesis.Voice`)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers_studio import free_port
from test_serve import TINY_MODEL

from vits.checkpoints import save_checkpoint
from vits.config import VoiceConfig
from vits.models import build_generator
from vits.voice_folder import USERDICT, config_path, models_dir

REPO = Path(__file__).resolve().parent.parent
KEY = "k3y-from-env"
# 你好 (n i h ao) read as 我们 (w o m en): a change no frontend makes by itself (tests/test_userdict_everywhere.py).
DICT_TEXT, DICT_ENTRY = "你好。", "你好\two3 men2\n"


def write_voices(root: Path, tokenizers: Path, names=("tiny", "tiny2"), languages=("ZH", "EN")) -> Path:
    """Data/<name> for each name (random tiny G, speakers alice and bob, seed = index), tiny 1024-wide BERTs
    for `languages` and a config.yml under `root`; returns the config.yml path."""
    from vits.text.testing import build_tiny_models

    bert = build_tiny_models(root / "bert", tokenizers, hidden=1024, layers=3, languages=languages)
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": 2, "spk2id": {"alice": 0, "bob": 1}},
                                      "model": TINY_MODEL})
    for seed, name in enumerate(names):
        voice = root / "Data" / name
        cfg.save(config_path(voice))
        torch.manual_seed(seed)
        save_checkpoint(models_dir(voice) / "G_100.pth", build_generator(cfg), epoch=1, step=100,
                        learning_rate=2e-4)
    folders = "".join(f"  {lang}: {bert.get(lang, root / ('missing-' + lang.lower()))}\n" for lang in ("ZH", "JP", "EN"))
    (root / "config.yml").write_text(f"data_root: Data\ndevice: cpu\nbert:\n{folders}", encoding="utf-8")
    return root / "config.yml"


class Server:
    """`python -m server` on a free port with `args`; `env` adds environment variables (e.g. KOE_API_KEY)."""

    def __init__(self, root: Path, config: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"server-{self.port}.log"
        child_env = {k: v for k, v in os.environ.items() if k != "KOE_API_KEY"}
        child_env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                          "OMP_NUM_THREADS": "1", **(env or {})})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", str(self.port), "--config", str(config), "--threads", "1",
             *args], cwd=REPO, env=child_env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("the server exited:\n" + self.tail())
            try:
                if httpx.get(f"{self.url}/docs", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError("the server did not start:\n" + self.tail())

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def setup(tmp_path_factory, golden_dir):
    """One locked-down server (`--no-paths --max-models 1 --model tiny`, key from $KOE_API_KEY) over voices
    tiny and tiny2; plus the library objects that compute the expected audio."""
    from settings import load_settings
    from vits.synthesis import Voice
    from vits.text.bert import BertFeatures

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("server-params")
    config = write_voices(root, golden_dir / "tokenizers")
    (root / "Data" / "tiny2" / USERDICT).write_text(DICT_ENTRY, encoding="utf-8")
    server = Server(root, config, "--no-paths", "--max-models", "1", "--model", "tiny", env={"KOE_API_KEY": KEY})
    try:
        server.wait_ready()
        settings = load_settings(config)
        bert = BertFeatures({k: v for k, v in settings.bert.items() if Path(v).is_dir()})
        voice = Voice.load(settings.data_root / "tiny")
        yield {"server": server, "root": root, "settings": settings, "voice": voice, "bert": bert}
    finally:
        server.stop()


def get(setup, path: str, key: str | None = KEY, **params) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return httpx.get(f"{setup['server'].url}{path}", params=params, headers=headers, timeout=300)


def post(setup, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{setup['server'].url}{path}", json=body, headers={"X-API-Key": KEY}, timeout=300)


def samples(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, (response.request.url, response.text)
    audio, sr = sf.read(io.BytesIO(response.content), dtype="int16")
    assert sr == 44100
    return audio.astype(np.int32)


def expected(setup, text: str, language: str = "ZH", **knobs) -> np.ndarray:
    """The int16 samples the library makes for these knobs (what the server must send)."""
    from server.audio import to_int16

    audio = setup["voice"].synthesize(text, language, bert=setup["bert"], **knobs)
    return to_int16(audio).astype(np.int32)


def same_audio(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float rounding between two processes (a 16-bit step or two)."""
    return a.shape == b.shape and int(np.abs(a - b).max(initial=0)) <= 2


def test_model_preload_and_api_key_from_environment(setup):
    # --model tiny: loaded at start-up, before any request asked for it.
    status = get(setup, "/status")
    assert status.status_code == 200, status.text
    body = status.json()
    assert [m["name"] for m in body["models"]] == ["tiny"] and body["models"][0]["served"] == 0
    assert body["api_key_required"] is True and body["limits"]["max_models"] == 1
    # $KOE_API_KEY locks every endpoint but the docs: no key, a wrong key, then the header or ?api_key=.
    for path in ("/status", "/models", "/models/info", "/voice"):
        r = get(setup, path, key=None, text="你好。")
        assert r.status_code == 401 and r.json()["error"] == "this server needs an API key", (path, r.text)
    r = get(setup, "/voice", key="wrong", text="你好。")
    assert r.status_code == 401 and "wrong API key" in r.json()["error"] and "--api-key" in r.json()["detail"]
    assert get(setup, "/models", key=None, api_key=KEY).status_code == 200
    assert get(setup, "/docs", key=None).status_code == 200


def test_no_paths_refuses_every_way_of_naming_a_file(setup):
    data = setup["settings"].data_root
    g_file = str(models_dir(data / "tiny") / "G_100.pth")
    refusals = [
        get(setup, "/voice", text="你好。", model=str(data / "tiny")),
        get(setup, "/voice", text="你好。", model=g_file),
        get(setup, "/voice", text="你好。", model="Data/tiny"),
        get(setup, "/voice", text="你好。", model="G_100.pth"),
        post(setup, "/models/load", {"model": str(data / "tiny2")}),
        get(setup, "/models/add", model_path=str(data / "tiny2")),
    ]
    for r in refusals:
        assert r.status_code == 403, (r.request.url, r.status_code, r.headers.get("content-type"))
        assert "switched off" in r.json()["error"] and "voice name" in r.json()["detail"]
    # Nothing was loaded by those requests; names still work.
    assert [m["name"] for m in get(setup, "/models").json()["loaded"]] == ["tiny"]
    assert get(setup, "/voice", text="你好。", model="tiny", seed=1).status_code == 200


def test_voice_dictionary_applies(setup):
    """Data/tiny2/userdict.txt changes what the server says, exactly as the library applies it."""
    from server.audio import to_int16
    from vits.synthesis import Voice
    from vits.text import UserDict

    voice_dir = setup["settings"].data_root / "tiny2"
    voice = Voice.load(voice_dir)
    knobs = dict(speaker="alice", bert=setup["bert"], seed=2, sdp_ratio=0.2, noise_scale=0.2)
    with_dict = to_int16(voice.synthesize(DICT_TEXT, "ZH", user_dict=UserDict.load(voice_dir / USERDICT), **knobs))
    without = to_int16(voice.synthesize(DICT_TEXT, "ZH", **knobs))
    got = samples(get(setup, "/voice", text=DICT_TEXT, model="tiny2", seed=2))
    assert not same_audio(with_dict.astype(np.int32), without.astype(np.int32))
    assert same_audio(got, with_dict.astype(np.int32))


def test_max_models_evicts_the_least_recently_used(setup):
    assert get(setup, "/voice", text="你好。", model="tiny", seed=1).status_code == 200
    r = get(setup, "/voice", text="你好。", model="tiny2", seed=1)
    assert r.status_code == 200 and r.headers["x-model"] == "tiny2", r.text
    loaded = get(setup, "/models").json()["loaded"]
    assert [m["name"] for m in loaded] == ["tiny2"]  # --max-models 1: tiny went
    # tiny comes back on demand and pushes tiny2 out; the audio is tiny's again (random seeds 0 and 1 differ).
    again = get(setup, "/voice", text="你好。", model="tiny", seed=1)
    assert [m["name"] for m in get(setup, "/models").json()["loaded"]] == ["tiny"]
    assert not same_audio(samples(again), samples(r))
    assert same_audio(samples(again), expected(setup, "你好。", speaker="alice", seed=1, sdp_ratio=0.2,
                                               noise_scale=0.2))


KNOBS = {"noise": 0.45, "noisew": 0.3, "length": 1.4, "pause": 0.55, "sdp_ratio": 0.5}
LIBRARY = {"noise": "noise_scale", "noisew": "noise_scale_w", "length": "length_scale", "pause": "pause",
           "sdp_ratio": "sdp_ratio"}
TWO = "你好。今天很好。"


def _library_knobs(knobs: dict) -> dict:
    return {LIBRARY[k]: v for k, v in knobs.items()}


def test_each_knob_reaches_the_model_under_its_own_name(setup):
    got = samples(get(setup, "/voice", text=TWO, model="tiny", speaker_name="bob", seed=3, **KNOBS))
    right = expected(setup, TWO, speaker="bob", seed=3, **_library_knobs(KNOBS))
    # Every swap of two knobs (and every knob left at its default) gives other audio, so the check can fail.
    for a, b in [("noise", "noisew"), ("length", "pause"), ("noisew", "sdp_ratio"), ("noise", "length")]:
        swapped = _library_knobs({**KNOBS, a: KNOBS[b], b: KNOBS[a]})
        assert not same_audio(right, expected(setup, TWO, speaker="bob", seed=3, **swapped)), (a, b)
    assert same_audio(got, right), f"max diff {np.abs(got[:len(right)] - right[:len(got)]).max()}"
    # The streamed answer is the same audio, pause included.
    with httpx.stream("GET", f"{setup['server'].url}/voice", headers={"X-API-Key": KEY}, timeout=300,
                      params={"text": TWO, "model": "tiny", "speaker_name": "bob", "seed": 3, "stream": "true",
                              **KNOBS}) as s:
        body = b"".join(s.iter_raw())
    assert same_audio(np.frombuffer(body[44:], dtype="<i2").astype(np.int32), right)


def test_knob_effects_are_physical(setup):
    """length stretches the speech, pause adds exactly its silence between sentences."""
    base = dict(text=TWO, model="tiny", seed=3, sdp_ratio=0.0)
    plain = samples(get(setup, "/voice", **base, pause=0.0))
    slow = samples(get(setup, "/voice", **base, pause=0.0, length=2.0))
    paused = samples(get(setup, "/voice", **base, pause=0.5))
    # Durations are ceil(d·length) frames each: doubling length at most doubles them (ceil), and adds much.
    assert 1.5 < len(slow) / len(plain) <= 2.0
    assert len(paused) - len(plain) == int(round(0.5 * 44100))


def test_auto_and_mix_text(setup):
    from vits import text as text_mod

    # AUTO picks English as the host (more syllables), so "12" is read "twelve"; forced ZH reads 十二.
    auto = "hello world 12 你好。"
    assert [(s.language, s.norm_text) for s in text_mod.clean_text(auto, "AUTO")] == [
        ("EN", "hello world twelve"), ("ZH", "你好.")]
    r = get(setup, "/voice", text=auto, language="AUTO", model="tiny", seed=4)
    assert same_audio(samples(r), expected(setup, auto, "AUTO", speaker="alice", seed=4, sdp_ratio=0.2,
                                           noise_scale=0.2))
    forced_zh = samples(get(setup, "/voice", text=auto, language="ZH", model="tiny", seed=4))
    assert not same_audio(samples(r), forced_zh)
    mix = "[ZH]你好[ZH][EN]hello world[EN]"
    assert [s.language for s in text_mod.clean_text(mix, "MIX")] == ["ZH", "EN"]
    r = get(setup, "/voice", text=mix, language="mix", model="tiny", seed=4)
    assert same_audio(samples(r), expected(setup, mix, "MIX", speaker="alice", seed=4, sdp_ratio=0.2,
                                           noise_scale=0.2))


def test_mp3_streaming_sends_one_decodable_piece_per_sentence(setup):
    params = {"text": "你好。今天很好。再见。", "model": "tiny", "seed": 5, "pause": 0.1}
    whole = samples(get(setup, "/voice", **params))
    with httpx.stream("GET", f"{setup['server'].url}/voice", headers={"X-API-Key": KEY}, timeout=300,
                      params={**params, "stream": "true", "format": "mp3"}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
        assert r.headers.get("transfer-encoding") == "chunked"
        chunks = [c for c in r.iter_raw() if c]
    body = b"".join(chunks)
    # Bare frames (no ID3 tag, no Xing frame whose frame count would end the stream after sentence 1).
    assert body[0] == 0xFF and body[1] & 0xE0 == 0xE0 and b"Xing" not in body and b"Info" not in body[:64]
    decoded, sr = sf.read(io.BytesIO(body), dtype="int16")
    assert sr == 44100
    # Each sentence is its own mp3 piece, so each adds an encoder delay and at most a frame of padding.
    assert len(whole) <= len(decoded) <= len(whole) + 3 * 3 * 1152, (len(decoded), len(whole))
