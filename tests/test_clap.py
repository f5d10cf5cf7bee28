"""Bert-VITS2 2.2 (CLAP) emotion: the embedder on a tiny random CLAP model, the `.emo.npy` files of the
features stage, the 2.2 voice config of `pipeline.prepare --version 2.2`, and the CLI / API emotion
parameters reaching the model's `emo` input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient
from helpers_clap import make_tiny_clap, write_tiny_voice

from prep.voice_version import new_config, set_voice_version, voice_version
from vits.clap import CLAP_RATE, ClapEmbedder, check_clap_dir, emotion_vector, is_emo_file, to_clap_rate
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.lists import bert_path, emo_path
from vits.voice_folder import config_path, models_dir

LINE = "|spk|ZH|你好|_ n i h ao _|0 3 3 3 3 0|1 2 2 1"  # 6 phones, word2ph sums to 6


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    torch.set_num_threads(2)
    return make_tiny_clap(tmp_path_factory.mktemp("clap") / "clap-htsat-fused")


@pytest.fixture(scope="module")
def clap(clap_dir):
    return ClapEmbedder(clap_dir)


def _tone(seconds: float, freq: float, rate: int = 44100) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * np.linspace(0.2, 1, t.size)).astype(np.float32)


# ---- the embedder ---------------------------------------------------------------------------------------

def test_text_feature_is_a_unit_512_column_and_batches_like_singles(clap):
    happy, sad = clap.text_feature("Happy"), clap.text_feature("悲伤")
    assert happy.shape == (512, 1) and happy.dtype == torch.float32
    assert torch.allclose(happy.norm(), torch.tensor(1.0), atol=1e-5)
    assert not torch.allclose(happy, sad)
    both = clap.text_features(["Happy", "悲伤 and a much longer prompt"])  # padded batch
    assert torch.allclose(both[0], happy[:, 0], atol=1e-5)
    with pytest.raises(KoeError, match="empty"):
        clap.text_features(["  "])


def test_audio_feature_is_transformers_clap_at_48k_clip_by_clip(clap):
    from transformers import ClapFeatureExtractor

    short, other = _tone(1.0, 220), _tone(0.6, 440)
    got = clap.audio_feature(short, 44100)
    assert got.shape == (512, 1) and torch.allclose(got.norm(), torch.tensor(1.0), atol=1e-5)
    # the reference computation (clap_wrapper): extractor at 48 kHz -> get_audio_features, L2-normalised
    wave48 = to_clap_rate(short, 44100)
    assert abs(wave48.size - 48000) <= 1
    inputs = ClapFeatureExtractor.from_pretrained(clap.model_dir)(wave48, sampling_rate=CLAP_RATE, return_tensors="pt")
    assert bool(inputs["is_longer"].all())  # a lone short clip is fused from four copies of its mel
    with torch.no_grad():
        pooled = clap.model.audio_model(input_features=inputs["input_features"],
                                        is_longer=inputs["is_longer"]).pooler_output
        ref = torch.nn.functional.normalize(clap.model.audio_projection(pooled), dim=-1)
    assert torch.allclose(got[:, 0], ref[0], atol=1e-5)
    assert torch.allclose(clap.audio_feature(wave48, CLAP_RATE), got, atol=1e-6)
    # a batch gives each clip what it gets alone (batch feature extraction would mark one clip at random)
    batch = clap.audio_features([short, other], 44100)
    assert torch.allclose(batch[0], got[:, 0], atol=1e-5)
    assert torch.allclose(batch[1], clap.audio_feature(other, 44100)[:, 0], atol=1e-5)


def test_missing_model_says_how_to_download(tmp_path, clap_dir):
    with pytest.raises(KoeError, match="pipeline.download clap") as err:
        check_clap_dir(tmp_path / "nothing")
    assert str(tmp_path / "nothing") in str(err.value)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((clap_dir / "config.json").read_text())
    with pytest.raises(KoeError, match="preprocessor_config.json"):
        ClapEmbedder(partial)


def test_emotion_vector_follows_the_22_prompt_rule(clap, tmp_path):
    clip = tmp_path / "ref.wav"
    sf.write(clip, _tone(1.0, 330), 44100, subtype="FLOAT")
    text = emotion_vector(clap, text="悲伤")
    assert text.shape == (512,) and torch.allclose(text, clap.text_feature("悲伤")[:, 0])
    assert torch.allclose(emotion_vector(clap), clap.text_feature("Happy")[:, 0])  # the 2.2 UI's default
    audio = emotion_vector(clap, text="悲伤", audio=str(clip))  # a clip wins unless the mode says text
    assert torch.allclose(audio, clap.audio_feature(_tone(1.0, 330), 44100)[:, 0], atol=1e-5)
    assert torch.allclose(emotion_vector(clap, audio=clip.read_bytes(), mode="audio"), audio, atol=1e-6)
    assert torch.allclose(emotion_vector(clap, text="悲伤", audio=str(clip), mode="text"), text)
    with pytest.raises(KoeError, match="needs a reference clip"):
        emotion_vector(clap, text="Happy", mode="audio")
    with pytest.raises(KoeError, match="not found") as err:
        emotion_vector(clap, audio=str(tmp_path / "gone.wav"))
    assert "gone.wav" in str(err.value)
    with pytest.raises(KoeError, match="cannot read the audio"):
        emotion_vector(clap, audio=b"not audio", where="reference_audio")


# ---- the features stage and the 2.2 voice config ------------------------------------------------------

def _voice(root, name: str, version: str, n: int = 3):
    voice = root / "Data" / name
    (voice / "wavs" / "spk").mkdir(parents=True)
    (voice / "filelists").mkdir()
    lines = []
    for i in range(n):
        wav = f"wavs/spk/clip_{i}.wav"
        sf.write(voice / wav, _tone(0.5 + 0.25 * i, 200 + 100 * i), 44100, subtype="FLOAT")
        torch.save(torch.zeros(8, 13), bert_path(voice / wav))  # valid BERT files: that part has nothing to do
        lines.append(wav + LINE)
    (voice / "filelists" / "train.list").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    (voice / "filelists" / "val.list").write_text(lines[0] + "\n", encoding="utf-8")
    new_config(version).save(config_path(voice))
    return voice


def _features(voice, clap_dir, *extra):
    from pipeline.features import main

    missing = str(voice / "no-bert")
    return main([str(voice), "--bert-zh", missing, "--bert-jp", missing, "--bert-en", missing, "--device", "cpu",
                 "--clap-model", str(clap_dir), "--clap-batch-size", "2", *extra])


def test_features_stage_writes_emo_files_for_22_voices_only(tmp_path, clap_dir, clap, capsys):
    voice = _voice(tmp_path, "v22", "2.2")
    assert voice_version(voice) == "2.2"
    assert _features(voice, clap_dir) == 0
    assert "CLAP emotion: 3 to compute" in capsys.readouterr().out
    files = sorted((voice / "wavs" / "spk").glob("*.emo.npy"))
    assert files == [emo_path(voice / f"wavs/spk/clip_{i}.wav") for i in range(3)]
    assert [f.name for f in files] == [f"clip_{i}.emo.npy" for i in range(3)]
    for i, f in enumerate(files):
        saved = torch.load(f, weights_only=True)  # a torch pickle despite the name (2.2 spec §8.1)
        assert is_emo_file(f) and saved.shape == (512, 1) and saved.dtype == torch.float32
        wave, rate = sf.read(voice / f"wavs/spk/clip_{i}.wav", dtype="float32")
        assert torch.allclose(saved, clap.audio_feature(wave, rate), atol=1e-5)
    stamps = [f.stat().st_mtime_ns for f in files]
    assert _features(voice, clap_dir) == 0
    assert "CLAP emotion: 0 to compute, 3 already valid" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in files] == stamps
    files[1].write_bytes(b"junk")  # a broken file is made again
    torch.save(torch.zeros(512), files[2])  # so is one of the wrong shape
    assert _features(voice, clap_dir) == 0
    assert "CLAP emotion: 2 written, 0 failed" in capsys.readouterr().out
    # an unreadable clip is listed with its list line; the other clips are still done
    (voice / "wavs" / "spk" / "clip_0.wav").write_bytes(b"RIFF broken")
    files[0].unlink()
    files[1].unlink()
    assert _features(voice, clap_dir) == 1
    out = capsys.readouterr().out
    assert f"problem: {voice / 'filelists' / 'val.list'}:1:" in out and is_emo_file(files[1])

    plain = _voice(tmp_path, "v23", "2.3")
    assert _features(plain, clap_dir) == 0
    assert "CLAP" not in capsys.readouterr().out and not list(plain.rglob("*.emo.npy"))
    assert _features(plain, clap_dir, "--clap", "yes") == 0
    assert len(list(plain.rglob("*.emo.npy"))) == 3


def test_prepare_version_22_writes_the_22_config_and_runs_clap(tmp_path, clap_dir, capsys):
    from pipeline.prepare import main

    voice = _voice(tmp_path, "fresh", "2.3")
    config_path(voice).unlink()
    (tmp_path / "config.yml").write_text(f"data_root: Data\ndevice: cpu\nclap: {clap_dir}\nbert:\n"
                                         f"  ZH: {tmp_path / 'x'}\n  JP: {tmp_path / 'x'}\n  EN: {tmp_path / 'x'}\n")
    assert main([str(voice), "--stages", "features", "--version", "2.2", "--device", "cpu", "--in-process",
                 "--config", str(tmp_path / "config.yml")]) == 0
    assert "Bert-VITS2 2.2 voice" in capsys.readouterr().out
    cfg = VoiceConfig.load(config_path(voice))
    raw = cfg.to_dict()
    assert cfg.architecture == "2.2" and raw["version"] == "2.2" and "slm" not in raw["model"]
    assert raw["model"]["gin_channels"] == 256 and raw["train"]["batch_size"] == 12
    assert raw["train"]["fp16_run"] is False
    assert len(list(voice.rglob("*.emo.npy"))) == 3
    # a voice with trained 2.2 checkpoints cannot become 2.3
    models_dir(voice).mkdir()
    (models_dir(voice) / "G_100.pth").write_bytes(b"")
    with pytest.raises(KoeError, match="trained checkpoints") as err:
        set_voice_version(voice, "2.3")
    assert "G_100.pth" in str(err.value)


def test_a_22_base_model_makes_a_new_voice_22(tmp_path):
    voice = write_tiny_voice(tmp_path, "fromBase", "2.2")
    (models_dir(voice) / "G_100.pth").rename(models_dir(voice) / "G_0.pth")
    config_path(voice).unlink()
    assert voice_version(voice) == "2.2"  # read from the G file's keys
    with pytest.raises(KoeError, match="2.2 base model") as err:
        set_voice_version(voice, "2.3")
    assert "choose version 2.2" in str(err.value)
    set_voice_version(voice, "2.2")
    assert VoiceConfig.load(config_path(voice)).architecture == "2.2"


def test_text_stage_keeps_a_22_config(tmp_path):
    from prep.lists import build_filelists

    voice = tmp_path / "Data" / "t"
    (voice / "wavs").mkdir(parents=True)
    for i in range(2):
        sf.write(voice / "wavs" / f"a{i}.wav", _tone(0.5, 300), 44100)
    (voice / "esd.list").write_text("wavs/a0.wav|spk|ZH|你好。\nwavs/a1.wav|spk|ZH|很好。\n", encoding="utf-8")
    set_voice_version(voice, "2.2")
    build_filelists(voice)
    cfg = VoiceConfig.load(config_path(voice))
    assert cfg.architecture == "2.2" and cfg.data.spk2id == {"spk": 0} and "slm" not in cfg.to_dict()["model"]


# ---- emotion prompts reach the model ---------------------------------------------------------------------

def test_cli_emotion_text_and_audio_reach_emo(tmp_path, clap_dir, clap, capsys):
    from pipeline.synthesize import main
    from vits.synthesis import Voice

    voice_dir = write_tiny_voice(tmp_path)
    clip = tmp_path / "ref.wav"
    sf.write(clip, _tone(1.2, 500), 44100, subtype="FLOAT")
    base = [str(voice_dir), "--phones", "_ n i h ao _", "--tones", "0 3 3 3 3 0", "--language", "ZH", "--seed", "3",
            "--float", "--device", "cpu", "--clap-model", str(clap_dir)]
    outs = {}
    for name, extra in (("sad", ["--emotion-text", "悲伤"]), ("audio", ["--emotion-audio", str(clip)])):
        out = tmp_path / f"{name}.wav"
        assert main([*base, *extra, "--out", str(out)]) == 0, capsys.readouterr().err
        outs[name] = sf.read(out, dtype="float32")[0]
    voice = Voice.load(voice_dir)

    def expected(emo):
        return voice.synthesize_phones("_ n i h ao _".split(), [0, 3, 3, 3, 3, 0], "ZH", seed=3, emo=emo)

    np.testing.assert_allclose(outs["sad"], expected(clap.text_feature("悲伤")[:, 0]), atol=1e-5)
    np.testing.assert_allclose(outs["audio"], expected(clap.audio_feature(_tone(1.2, 500), 44100)[:, 0]), atol=1e-5)
    happy = expected(clap.text_feature("Happy")[:, 0])
    assert happy.shape != outs["sad"].shape or not np.allclose(happy, outs["sad"], atol=1e-4)
    assert main([*base, "--emotion-audio", str(tmp_path / "gone.wav"), "--out", str(tmp_path / "x.wav")]) == 1
    assert "gone.wav" in capsys.readouterr().err


@pytest.fixture(scope="module")
def api(tmp_path_factory, golden_dir, clap_dir):
    from server.routes import create_app
    from settings import load_settings
    from vits.text.testing import build_tiny_models

    root = tmp_path_factory.mktemp("api22")
    bert = build_tiny_models(root / "bert", golden_dir / "tokenizers", hidden=1024, layers=3, languages=("ZH",))
    write_tiny_voice(root)
    write_tiny_voice(root, "plain", "2.3")
    (root / "config.yml").write_text(f"data_root: Data\ndevice: cpu\nclap: {clap_dir}\nbert:\n  ZH: {bert['ZH']}\n"
                                     f"  JP: {root / 'missing'}\n  EN: {root / 'missing'}\n")
    with TestClient(create_app(load_settings(root / "config.yml"))) as client:
        yield client


def test_api_emotion_prompt_mode_and_reference_audio(api):
    q = {"text": "你好。", "model": "emo", "seed": 1, "format": "wav"}
    default = api.get("/voice", params=q)
    assert default.status_code == 200, default.text
    assert "x-ignored-parameters" not in default.headers
    happy = api.get("/voice", params={**q, "emotion": "Happy"})
    sad = api.get("/voice", params={**q, "emotion": "悲伤"})
    assert happy.content == default.content and sad.status_code == 200 and sad.content != happy.content
    buf = io.BytesIO()
    sf.write(buf, _tone(1.0, 600), 44100, format="WAV")
    upload = {"reference_audio": ("ref.wav", buf.getvalue(), "audio/wav")}
    audio = api.post("/voice", params=q, data={"emotion": "悲伤"}, files=upload)  # hiyoriUI: the clip wins
    assert audio.status_code == 200, audio.text
    assert audio.content not in (sad.content, happy.content)
    again = api.post("/voice", params={**q, "prompt_mode": "audio"}, files=upload)
    assert again.content == audio.content
    text_mode = api.post("/voice", params={**q, "prompt_mode": "text"}, data={"emotion": "悲伤"}, files=upload)
    assert text_mode.content == sad.content
    missing = api.get("/voice", params={**q, "prompt_mode": "audio"})
    assert missing.status_code == 422 and "reference clip" in missing.json()["error"]
    junk = api.post("/voice", params=q, files={"reference_audio": ("x.wav", b"not audio", "audio/wav")})
    assert junk.status_code == 422 and "reference_audio: cannot read the audio" in junk.json()["error"]
    assert "multipart/form-data" in junk.json()["detail"]
    bad = api.get("/voice", params={**q, "prompt_mode": "loud"})
    assert bad.status_code == 422 and "prompt_mode" in bad.json()["error"]
    # a 2.3 voice has no emotion input: accepted and named as ignored
    plain = api.get("/voice", params={**q, "model": "plain", "emotion": "悲伤"})
    assert plain.status_code == 200 and plain.headers["x-ignored-parameters"] == "emotion"
