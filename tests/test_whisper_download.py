"""Whisper from the hub for mirror users: a transformers-format `openai/whisper-<name>` repo is converted
into openai-whisper's `.pt`, which then loads by name (no checksum, no OpenAI server) and computes the same
numbers as the transformers model. Also the rule choosing the source (`openai` vs `hub`)."""

from __future__ import annotations

import pytest
import torch

from prep import download, whisper_convert
from prep.transcribe import load_whisper
from vits.errors import KoeError

N_VOCAB = 51865  # openai-whisper's multilingual tokenizer size (ModelDimensions must match it)


@pytest.fixture(scope="module")
def tiny_hub_repo(tmp_path_factory):
    """A random tiny WhisperForConditionalGeneration saved as a hub repo folder (config.json + model.safetensors)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=N_VOCAB, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
                           decoder_ffn_dim=256, max_source_positions=1500, max_target_positions=448)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # layer norms start at 1/0 and biases at 0: perturb all, so a swapped tensor shows
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    folder = tmp_path_factory.mktemp("hub") / "whisper-tiny-random"
    model.save_pretrained(folder, safe_serialization=True)
    return model, folder


def test_converted_checkpoint_matches_transformers(tiny_hub_repo, tmp_path):
    import whisper

    model, folder = tiny_hub_repo
    target = whisper_convert.convert(folder, tmp_path / "whisper" / "medium.pt")
    assert target.is_file() and not list(target.parent.glob("*.partial"))
    # By name, the way transcription loads it: a converted file fails openai-whisper's checksum, so it must
    # load as a local file (load_whisper), never re-download from OpenAI's server (offline here).
    ours = load_whisper("medium", device="cpu", download_root=str(target.parent))
    assert isinstance(ours, whisper.model.Whisper) and ours.dims.n_audio_state == 64
    direct = whisper.load_model(str(target), device="cpu")
    mel = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[50258, 50259, 50359, 50363, 440, 1723]])
    with torch.no_grad():
        theirs_audio = model.model.encoder(mel).last_hidden_state
        theirs_logits = model(input_features=mel, decoder_input_ids=tokens).logits
        for loaded in (ours, direct):
            audio = loaded.embed_audio(mel)
            assert torch.allclose(audio, theirs_audio, atol=1e-4), (audio - theirs_audio).abs().max()
            logits = loaded.logits(tokens, audio)
            assert torch.allclose(logits, theirs_logits, atol=1e-4), (logits - theirs_logits).abs().max()


def test_weights_that_do_not_fit_are_refused(tiny_hub_repo, tmp_path):
    import json
    import shutil

    _, folder = tiny_hub_repo
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    config["d_model"] = 32
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(KoeError, match="do not fit") as info:
        whisper_convert.convert(broken, tmp_path / "medium.pt")
    assert "pipeline.download whisper" in info.value.fix and not (tmp_path / "medium.pt").exists()


def test_hub_repo_names():
    assert whisper_convert.hub_repo("medium") == "openai/whisper-medium"
    assert whisper_convert.hub_repo("large") == "openai/whisper-large-v3"  # openai-whisper's "large" is v3
    assert whisper_convert.hub_repo("large-v1") == "openai/whisper-large"
    assert whisper_convert.hub_repo("turbo") == "openai/whisper-large-v3-turbo"


def test_source_rule(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert download.whisper_source(None, "") == "openai"
    assert download.whisper_source(None, "https://hf-mirror.com") == "hub"
    assert download.whisper_source("openai", "https://hf-mirror.com") == "openai"
    assert download.whisper_source("hub", "") == "hub"
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")
    assert download.whisper_source(None, "") == "hub"
    with pytest.raises(KoeError, match="unknown Whisper source"):
        download.whisper_source("cdn", "")


def test_fix_names_the_source(tmp_path):
    assert "openaipublic" in download.whisper_fix("medium", tmp_path, "openai")
    assert "--source hub" in download.whisper_fix("medium", tmp_path, "openai")
    hub_fix = download.whisper_fix("medium", tmp_path, "hub")
    assert "openai/whisper-medium" in hub_fix and str(tmp_path / "medium.pt") in hub_fix


def test_download_cli_fetches_from_the_mirror_and_converts(tiny_hub_repo, tmp_path):
    """`pipeline.download whisper --endpoint <mirror>` takes the hub source by default, fetches only
    config.json + model.safetensors of openai/whisper-medium from the stand-in mirror and leaves medium.pt."""
    import os
    import subprocess
    import sys

    import whisper
    from helpers_studio import free_port
    from test_download_mirror import REPO, StandInHub

    _, folder = tiny_hub_repo
    files = {p.name: p.read_bytes() for p in folder.iterdir()} | {"pytorch_model.bin": b"not wanted"}
    hub = StandInHub({"openai/whisper-medium": files})
    try:
        root = tmp_path / "whisper"
        # config.yml names another model: --model (what the studio's Whisper model field passes) wins.
        (tmp_path / "config.yml").write_text(f"whisper:\n  model: small\n  download_root: {root}\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "KOE_CONFIG")}
        env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")

        def run(name, *args):
            return subprocess.run([sys.executable, "-m", "pipeline.download", "whisper", "--config",
                                   str(tmp_path / "config.yml"), "--model", name, *args], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=300)

        proc = run("medium", "--endpoint", hub.url)
        listing = sorted(p.name for p in root.iterdir())
        dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        failed = run("large-v3", "--endpoint", dead)
    finally:
        hub.httpd.shutdown()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"whisper from {hub.url}" in proc.stdout
    assert {p.rsplit("/", 1)[1] for p in hub.downloads() if p.startswith("/openai/whisper-medium/")} == {
        "config.json", "model.safetensors"}  # only what the converter reads (not pytorch_model.bin)
    assert listing == ["medium.pt"]  # the staging folder is gone
    assert whisper.load_model(str(root / "medium.pt"), device="cpu").dims.n_text_layer == 2
    # A mirror that does not answer: one line naming the repository, and the other source as a way out.
    assert failed.returncode == 1
    out = failed.stdout + failed.stderr
    assert f"could not download openai/whisper-large-v3 from {dead}" in out and "--source openai" in out
    assert "Traceback" not in out


def test_studio_download_command_and_choices():
    from studio import stages
    from studio.tabs.dataset import whisper_choices

    argv = stages.download("whisper", "https://hf-mirror.com", "hub", "large-v3").argv
    assert argv[1:] == ["-m", "pipeline.download", "whisper", "--endpoint", "https://hf-mirror.com",
                        "--source", "hub", "--model", "large-v3"]
    choices, default = whisper_choices("")
    assert choices[default] == ("openai", "")  # no mirror: OpenAI's server, as the CLI does
    choices, default = whisper_choices("https://hf-mirror.com")
    assert choices[default] == ("hub", "https://hf-mirror.com")
    assert ("hub", "https://huggingface.co") in choices.values()  # the official hub, named so no mirror wins
    choices, default = whisper_choices("https://mirror.example")
    assert choices[default] == ("hub", "https://mirror.example")


def test_hub_download_skips_a_model_already_there(tmp_path):
    from settings import Settings

    (tmp_path / "medium.pt").write_bytes(b"kept")
    said = []
    settings = Settings(root=tmp_path, data_root=tmp_path, whisper_model="medium", whisper_root=tmp_path)
    download.download_whisper(settings, said.append, source="hub")
    assert (tmp_path / "medium.pt").read_bytes() == b"kept" and "already there" in said[0]


@pytest.mark.browser
def test_studio_button_downloads_whisper_from_the_configured_mirror(tiny_hub_repo, tmp_path):
    """Dataset tab: config.yml names a mirror, so "Download Whisper from" offers it by default; the button runs
    `pipeline.download whisper` as a job that fetches openai/whisper-medium there and leaves medium.pt."""
    from pathlib import Path

    from helpers_studio import Studio
    from test_browser_e2e import CHROMIUM, open_tab, wait_text
    from test_download_mirror import StandInHub

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    from playwright import sync_api

    _, folder = tiny_hub_repo
    hub = StandInHub({"openai/whisper-medium": {p.name: p.read_bytes() for p in folder.iterdir()}})
    root = tmp_path / "whisper"
    config = tmp_path / "config.yml"
    config.write_text(f"device: cpu\nhub:\n  endpoint: {hub.url}\nwhisper:\n  model: medium\n"
                      f"  download_root: {root}\n", encoding="utf-8")
    studio = Studio(tmp_path, config, env={"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"})
    try:
        studio.wait_ready()
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(studio.url)
            page.get_by_text("Koe Studio").first.wait_for()
            open_tab(page, "Dataset")
            assert hub.url in page.locator("#whisper-from input").first.input_value()
            page.locator("#download-whisper").click()
            wait_text(page, "whisper-download", "finished", 120, fail=("whisper-download", "failed"))
            browser.close()
    finally:
        studio.stop()
        hub.httpd.shutdown()
    assert sorted(p.name for p in root.iterdir()) == ["medium.pt"]
    assert any(p.startswith("/openai/whisper-medium/resolve/") for p in hub.downloads())
