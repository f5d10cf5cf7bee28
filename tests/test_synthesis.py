"""Voice facade and the synthesize CLI on the golden small model (Bert-VITS2 2.3 reference audio)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from vits import checkpoints as ck
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.synthesis import Voice

pytestmark = pytest.mark.torch_threads(1)  # tests/conftest.py sets and restores it per test


@pytest.fixture(scope="module")
def vectors(golden_dir):
    return torch.load(golden_dir / "model-small" / "vectors.pt", weights_only=True)


@pytest.fixture(scope="module")
def voice(golden_dir):
    return Voice.load(golden_dir / "model-small" / "G_1000.pth")


@pytest.fixture(scope="module")
def voice_dir(golden_dir, tmp_path_factory):
    """A Data/<voice> layout around the golden checkpoint (plus an older, truncated newer step)."""
    root = tmp_path_factory.mktemp("Data") / "golden"
    (root / "models").mkdir(parents=True)
    (root / "configs").mkdir()
    shutil.copy(golden_dir / "model-small" / "config.json", root / "configs" / "config.json")
    shutil.copy(golden_dir / "model-small" / "G_1000.pth", root / "models" / "G_1000.pth")
    (root / "models" / "G_2000.pth").write_bytes(b"PK\x03\x04 interrupted save")
    return root


def _golden_inputs(v):
    return dict(phones=v["x"][0], tones=v["tone"][0], languages=v["language"][0], bert=v["bert"][0],
                ja_bert=v["ja_bert"][0], en_bert=v["en_bert"][0], speaker=int(v["sid"][0]), blanked=True,
                noise_scale=0.0, noise_scale_w=0.0)


@pytest.mark.parametrize("sdp_ratio,length_scale,key", [(0.0, 1.0, "infer_sdp0_audio"),
                                                        (0.5, 1.0, "infer_sdp05_audio"),
                                                        (1.0, 1.0, "infer_sdp1_audio"),
                                                        (0.0, 1.3, "infer_sdp0_len13_audio")])
def test_voice_reproduces_golden_audio(voice, vectors, sdp_ratio, length_scale, key):
    audio = voice.synthesize_phones(**_golden_inputs(vectors), sdp_ratio=sdp_ratio, length_scale=length_scale)
    expected = vectors[key][0, 0].numpy()
    assert audio.dtype == np.float32 and audio.shape == expected.shape
    assert np.abs(audio - expected).max() < 1e-3


def test_voice_matches_model_infer_with_noise(voice, vectors, golden_dir):
    """Our inference path (SDP skipped at ratio 0, folded weights) equals SynthesizerTrn.infer draw for draw."""
    from vits.models import build_generator

    cfg = VoiceConfig.load(golden_dir / "model-small" / "config.json")
    ref = build_generator(cfg)
    ck.load_weights(ref, golden_dir / "model-small" / "G_1000.pth")
    ref.eval()
    v = vectors
    for ratio in (0.0, 0.3, 1.0):
        torch.manual_seed(5)
        with torch.no_grad():
            expected = ref.infer(v["x"], v["x_lengths"], v["sid"], v["tone"], v["language"], v["bert"],
                                 v["ja_bert"], v["en_bert"], noise_scale=0.6, noise_scale_w=0.9,
                                 sdp_ratio=ratio)[0][0, 0].numpy()
        args = _golden_inputs(v) | {"noise_scale": 0.6, "noise_scale_w": 0.9}
        audio = voice.synthesize_phones(**args, sdp_ratio=ratio, seed=5)
        assert audio.shape == expected.shape and np.abs(audio - expected).max() < 1e-4


def test_duration_mix_is_linear_in_sdp_ratio(voice, vectors):
    """logw = (1 - r)·DP + r·SDP for every r (the golden audio at r=0 and r=0.5 round to the same durations,
    so the audio alone cannot show the blend)."""
    from vits.inference import log_durations

    model, v = voice.model, vectors
    h = v["enc_p_hidden"]
    x_mask = torch.ones(1, 1, h.shape[2])
    with torch.no_grad():
        g = model.emb_g(v["sid"]).unsqueeze(-1)
        dp = model.dp(h, x_mask, g=g)
        torch.manual_seed(0)
        sdp = model.sdp(h, x_mask, g=g, reverse=True, noise_scale=0.8)
        assert (dp - v["dp_logw"]).abs().max() < 1e-4
        assert (sdp - dp).abs().max() > 0.05  # the two predictors disagree: a swapped blend would show
        for ratio in (0.0, 0.25, 0.5, 1.0):
            for skip in (False, True):  # the synthesis path skips the predictor whose share is 0
                torch.manual_seed(0)
                logw = log_durations(model, h, x_mask, g, sdp_ratio=ratio, noise_scale_w=0.8, skip_unused=skip)
                assert torch.allclose(logw, (1 - ratio) * dp + ratio * sdp, atol=1e-5), (ratio, skip)


def test_seed_reproducible_and_leaves_caller_rng(voice):
    phones = ["_", "n", "i", "h", "ao", ".", "_"]
    tones = [0, 3, 3, 3, 3, 0, 0]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = voice.synthesize_phones(phones, tones, "ZH", speaker="spk1", seed=7)
    after = torch.rand(3)
    b = voice.synthesize_phones(phones, tones, "ZH", speaker=1, seed=7)
    c = voice.synthesize_phones(phones, tones, "ZH", speaker=1, seed=8)
    assert torch.equal(before, after)  # seeded synthesis does not consume the caller's random numbers
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(a) % 512 == 0 and np.isfinite(a).all()


def test_add_blank_contract(voice):
    ids, tones, langs = voice.prepare_phones(["_", "a", "_"], [0, 2, 0], "JP")
    # the boundary "_" takes the language's tone offset (0 + 6 for JP); blanks are tone 0, language 0 (ZH)
    assert ids == [0, 0, 0, 8, 0, 0, 0] and tones == [0, 6, 0, 8, 0, 6, 0] and langs == [0, 1, 0, 1, 0, 1, 0]
    same = voice.prepare_phones(ids, tones, langs, blanked=True)
    assert same == (ids, tones, langs)
    # BERT must have the final (blanked) length
    with pytest.raises(KoeError, match=r"bert has shape \[1024, 3\], expected \[1024, 7\]"):
        voice.synthesize_phones(["_", "a", "_"], [0, 2, 0], "JP", bert=torch.zeros(1024, 3))


def test_input_errors(voice):
    with pytest.raises(KoeError, match="unknown speaker 'nobody'.*spk0, spk1, spk2"):
        voice.synthesize_phones(["_", "a", "_"], [0, 1, 0], "ZH", speaker="nobody")
    with pytest.raises(KoeError, match="speaker id 3 is out of range"):
        voice.speaker_id(3)
    with pytest.raises(KoeError, match="unknown phone 'qq'"):
        voice.synthesize_phones(["_", "qq", "_"], [0, 1, 0], "ZH")
    with pytest.raises(KoeError, match="same length"):
        voice.synthesize_phones(["_", "a", "_"], [0, 1], "ZH")
    with pytest.raises(KoeError, match="must be a float tensor"):
        voice.synthesize_phones(["_", "a", "_"], [0, 1, 0], "ZH", bert=torch.zeros(1024, 7, dtype=torch.long))
    with pytest.raises(KoeError, match="tone id 12 is out of range"):
        voice.synthesize_phones([0, 8, 0], [0, 12, 0], [0, 0, 0], blanked=True)
    assert voice.speakers == ["spk0", "spk1", "spk2"] and voice.sampling_rate == 44100


def test_load_voice_folder_picks_newest_complete_g(voice_dir, tmp_path):
    v = Voice.load(voice_dir)
    assert v.checkpoint.name == "G_1000.pth"
    assert not any(k.startswith("enc_q") for k in v.model.state_dict())
    assert not any(k.endswith("weight_g") for k in v.model.state_dict())  # weight norm folded
    with pytest.raises(KoeError, match="no generator checkpoint"):
        empty = tmp_path / "empty"
        (empty / "models").mkdir(parents=True)
        Voice.load(empty)
    with pytest.raises(KoeError, match="not found"):
        Voice.load(tmp_path / "missing")


def test_load_fp16_release_and_safetensors(voice_dir, vectors, tmp_path):
    for use_st in (False, True):
        out = ck.export_release(voice_dir / "models" / "G_1000.pth", tmp_path / "release" / "G_release.pth",
                                fp16=True, safetensors=use_st)
        v = Voice.load(out, config_path=voice_dir / "configs" / "config.json")
        assert all(p.dtype == torch.float32 for p in v.model.parameters())
        audio = v.synthesize_phones(**_golden_inputs(vectors), sdp_ratio=0.0)
        # float16 weights: the real error is ~4e-5 on audio that peaks at ~0.12
        assert np.abs(audio - vectors["infer_sdp0_audio"][0, 0].numpy()).max() < 1e-3


def test_decoder_hook(golden_dir, vectors):
    calls = []

    def decoder(z, g):
        calls.append((tuple(z.shape), tuple(g.shape)))
        return torch.zeros(1, 1, z.shape[-1] * 512)

    v = Voice.load(golden_dir / "model-small" / "G_1000.pth", decoder=decoder)
    audio = v.synthesize_phones(**_golden_inputs(vectors), sdp_ratio=0.0)
    assert calls == [((1, 64, 29), (1, 32, 1))] and audio.shape == (29 * 512,) and not audio.any()


def test_text_synthesis_without_bert_is_a_clear_error(voice):
    with pytest.raises(KoeError, match="needs BERT features"):
        voice.synthesize("你好。", "ZH")


@pytest.fixture(scope="module")
def english_bert(golden_dir, tmp_path_factory):
    """A real BertFeatures over a small random DeBERTa-v2 with the model's 1024 features (3 layers)."""
    from vits.text.bert import BertFeatures
    from vits.text.testing import build_tiny_models

    dirs = build_tiny_models(tmp_path_factory.mktemp("bert"), golden_dir / "tokenizers", hidden=1024, layers=3,
                             languages=("EN",))
    return BertFeatures(dirs)


def test_text_stream_and_synthesize(voice, english_bert):
    text = "Hello world. This is a test!"
    pieces = list(voice.stream(text, "EN", speaker="spk1", bert=english_bert, seed=4))
    assert [s for s, _ in pieces] == ["Hello world.", "This is a test!"]
    audio = voice.synthesize(text, "EN", speaker="spk1", bert=english_bert, seed=4, pause=0.25)
    first, second = pieces[0][1], pieces[1][1]
    assert audio.dtype == np.float32 and len(audio) == len(first) + 11025 + len(second)
    assert np.array_equal(audio[: len(first)], first) and np.array_equal(audio[-len(second):], second)
    assert not audio[len(first): len(first) + 11025].any()
    # the first sentence equals synthesize_phones with its own cleaned phones and real EN features
    from vits.text import clean_text

    (seg,) = clean_text("Hello world.", "EN")
    # (bert and ja_bert are left empty: both get the same seeded filler noise, in the same order)
    again = voice.synthesize_phones(seg.phones, seg.tones, "EN", en_bert=english_bert.features(seg),
                                    speaker="spk1", seed=4)
    assert np.array_equal(again, first)
    with pytest.raises(KoeError, match="no text to synthesize"):
        voice.synthesize("...", "EN", bert=english_bert)


def test_seeded_text_is_the_same_before_and_after_bert_loads(voice, golden_dir, tmp_path):
    """Loading a BERT model can draw random numbers (weights it initialises itself); a seeded first
    request must give the same audio as the next one."""
    from vits.text.bert import BertFeatures
    from vits.text.testing import build_tiny_models

    dirs = build_tiny_models(tmp_path, golden_dir / "tokenizers", hidden=1024, layers=3, languages=("ZH",))
    fresh = BertFeatures(dirs)
    first = voice.synthesize("你好。", "ZH", speaker="spk1", bert=fresh, seed=11)
    again = voice.synthesize("你好。", "ZH", speaker="spk1", bert=fresh, seed=11)
    assert np.array_equal(first, again)


def test_segments_join_like_infer_multilang(voice, english_bert):
    from vits.text import clean_text

    (a,) = clean_text("Hello world.", "EN")
    (b,) = clean_text("Good dog!", "EN")
    reals = [english_bert.features(s, add_blank=True) for s in (a, b)]
    ids, tones, langs, feats = voice._join_segments([a, b], reals)
    pa, ta, la = voice.prepare_phones(a.phones, a.tones, "EN")
    pb, tb, lb = voice.prepare_phones(b.phones, b.tones, "EN")
    # spec 6: the first keeps its start and drops its trailing "_", blank; the last drops blank, "_", blank
    assert ids == pa[:-2] + pb[3:] and tones == ta[:-2] + tb[3:] and langs == la[:-2] + lb[3:]
    fa, fb = english_bert.features(a), english_bert.features(b)
    assert torch.equal(feats["en_bert"], torch.cat([fa[:, :-2], fb[:, 3:]], dim=1))
    assert feats["bert"].shape == feats["ja_bert"].shape == (1024, len(ids))


def test_cli_writes_wav(voice_dir, tmp_path, capsys):
    from pipeline.synthesize import main

    out = tmp_path / "out.wav"
    rc = main([str(voice_dir), "--phones", "_ n i h ao . _", "--tones", "0 3 3 3 3 0 0", "--language", "ZH",
               "--speaker", "spk2", "--out", str(out), "--seed", "3", "--sdp-ratio", "0.2"])
    assert rc == 0
    audio, sr = sf.read(out, dtype="float32")
    info = sf.info(out)
    assert sr == 44100 and info.subtype == "PCM_16" and len(audio) > 0 and len(audio) % 512 == 0
    assert "KOE_PROGRESS" in capsys.readouterr().out
    rc = main([str(voice_dir), "--phones", "_ a _", "--tones", "0 1 0", "--speaker", "ghost", "--out",
               str(tmp_path / "x.wav")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "unknown speaker 'ghost'" in err
    assert not (tmp_path / "x.wav").exists()


def test_cli_text_with_bert_from_settings(voice_dir, english_bert, tmp_path, monkeypatch, capsys):
    from pipeline.synthesize import main

    settings = tmp_path / "config.yml"
    settings.write_text(f"data_root: {voice_dir.parent}\nbert:\n  EN: {english_bert.model_dirs['EN']}\n",
                        encoding="utf-8")
    monkeypatch.setenv("KOE_CONFIG", str(settings))
    out = tmp_path / "text.wav"
    # the voice given by name, resolved under data_root
    assert main(["golden", "--text", "Hello world. Good dog!", "--language", "EN", "--out", str(out),
                 "--float", "--seed", "1", "--pause", "0.1"]) == 0
    audio, sr = sf.read(out, dtype="float32")
    assert sf.info(out).subtype == "FLOAT" and sr == 44100 and len(audio) > 4410
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("KOE_PROGRESS")]
    assert any('"item":"Hello world."' in ln for ln in lines) and any('"item":"Good dog!"' in ln for ln in lines)
    # --pause: the same two sentences with 0.2 s (8820 samples) more silence between them
    longer = tmp_path / "longer.wav"
    assert main(["golden", "--text", "Hello world. Good dog!", "--language", "EN", "--out", str(longer),
                 "--float", "--seed", "1", "--pause", "0.3"]) == 0
    wide, _ = sf.read(longer, dtype="float32")
    assert len(wide) == len(audio) + 8820
    split = int(np.argmax(wide[: len(audio)] != audio))  # where the second sentence starts in `audio`
    assert split > 4410 and not audio[split - 4410: split].any()
    assert np.array_equal(wide, np.concatenate([audio[:split], np.zeros(8820, np.float32), audio[split:]]))


def test_one_voice_file_lookup(voice_dir, tmp_path):
    """Voice.load, the CLIs and the ONNX export share find_voice_files: folder, checkpoint name, G file."""
    from vits.synthesis import find_voice_files

    g, cfg = voice_dir / "models" / "G_1000.pth", voice_dir / "configs" / "config.json"
    assert find_voice_files(voice_dir) == (g, cfg)
    assert find_voice_files(voice_dir, checkpoint="G_1000.pth") == (g, cfg)
    assert find_voice_files(g) == (g, cfg)
    assert find_voice_files(voice_dir, config=tmp_path / "other.json") == (g, tmp_path / "other.json")
    assert Voice.load(voice_dir, checkpoint="G_1000.pth").checkpoint == g
    with pytest.raises(KoeError, match="checkpoint file not found"):
        Voice.load(voice_dir, checkpoint="G_5.pth")
