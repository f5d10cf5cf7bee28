"""Bert-VITS2 2.2 (CLAP emotion) networks against the reference: layout, counts and every golden tensor of
`shared/golden/model-22` (1e-4, audio 1e-3, alignment paths and code indices equal)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vits import checkpoints as ck
from vits.commons import sequence_mask
from vits.config import VoiceConfig
from vits.discriminators import DurationDiscriminator22, build_discriminators
from vits.emotion import emotion_embedding, quantize_eval
from vits.errors import KoeError
from vits.models import build_generator
from vits.synthesis import Voice

INFER_CASES = {
    "sdp0": {"sdp_ratio": 0.0},
    "sdp05": {"sdp_ratio": 0.5},
    "sdp1": {"sdp_ratio": 1.0},
    "sdp0_len13": {"sdp_ratio": 0.0, "length_scale": 1.3},
}


pytestmark = pytest.mark.torch_threads(2)  # tests/conftest.py sets and restores it per test


@pytest.fixture(scope="module")
def d22(golden_dir):
    return golden_dir / "model-22"


@pytest.fixture(scope="module")
def cfg(d22):
    return VoiceConfig.load(d22 / "config.json")


@pytest.fixture(scope="module")
def model(d22, cfg):
    net = build_generator(cfg)
    report = ck.load_weights(net, d22 / "G_1000.pth", kind="G")
    assert (report.loaded, report.total) == (1090, 1090)
    return net.eval()


@pytest.fixture(scope="module")
def v(d22):
    return torch.load(d22 / "vectors.pt", map_location="cpu", weights_only=True)


def _diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def _text(v, prefix=""):
    b = "" if not prefix else prefix
    return (v[f"{b}x"], v[f"{b}x_lengths"], v[f"{b}tone"], v[f"{b}language"])


# --- layout, loading, counts --------------------------------------------------------------------


def test_config_is_22_and_checkpoint_keys_in_order(d22, cfg, model):
    assert cfg.architecture == "2.2" and cfg.version == "2.2"
    state = ck.read_checkpoint(d22 / "G_1000.pth")["model"]
    assert ck.generator_version(state) == "2.2"
    ours = model.state_dict()
    assert list(ours) == list(state) and all(ours[k].shape == state[k].shape for k in state)
    assert ours["enc_p.emo_vq._codebook.initted"].dtype == torch.float32
    assert len(ours) - len(list(model.parameters())) == 4  # the quantiser's codebook buffers


def test_duration_discriminator_loads_strictly(d22, cfg):
    _, dur, _ = build_discriminators(cfg)
    assert isinstance(dur, DurationDiscriminator22)
    report = ck.load_weights(dur, d22 / "DUR_1000.pth", kind="DUR")
    assert (report.loaded, report.total) == (22, 22)
    assert sum(p.numel() for p in dur.parameters()) == 64_513


def _appendix(spec_text: str, heading: str) -> list[tuple[str, list[int]]]:
    block = spec_text.split(heading, 1)[1].split("```", 2)[1]
    rows = []
    for line in block.strip().splitlines():
        key, shape = line.split()[:2]
        rows.append((key, [int(n) for n in shape.strip("[]").split(",")]))
    return rows


def test_default_22_networks_match_spec_appendix_and_counts(shared_dir):
    spec = (shared_dir / "spec" / "bert-vits2-2.2.md").read_text(encoding="utf-8")
    cfg = VoiceConfig.model_validate({"version": "2.2", "data": {"n_speakers": 896}, "model": {"gin_channels": 256}})
    assert cfg.architecture == "2.2"
    torch.manual_seed(0)
    g = build_generator(cfg)
    assert [(k, list(t.shape)) for k, t in g.state_dict().items()] == _appendix(spec, "### A.1")
    assert sum(p.numel() for p in g.parameters()) == 62_550_593
    params = {id(p) for p in g.parameters()}
    assert sum(t.numel() for t in g.state_dict(keep_vars=True).values() if id(t) not in params) == 133_121
    enc_p = g.enc_p
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(enc_p.in_feature_net), count(enc_p.emo_vq), count(enc_p.out_feature_net)) == (
        2_635_792, 1_050_112, 98_496)
    _, dur, _ = build_discriminators(cfg)
    assert [(k, list(t.shape)) for k, t in dur.state_dict().items()] == _appendix(spec, "### A.2")
    assert count(dur) == 605_185
    # A fresh quantiser starts as 2.2's 1.12.0 release: counts 0, kaiming-uniform codes.
    codebook = enc_p.emo_vq._codebook
    assert codebook.cluster_size.abs().sum() == 0 and codebook.embed.abs().max() <= (6 / 2048) ** 0.5


def test_config_version_alone_does_not_make_22():
    # The v2.3 release wrote "version": "2.2" into 2.3 configs, which have the slm block (2.2 spec §0).
    assert VoiceConfig.model_validate({"version": "2.2", "model": {"slm": {}}}).architecture == "2.3"
    assert VoiceConfig().architecture == "2.3"
    cfg22 = VoiceConfig.model_validate({"version": "2.2"})
    assert "slm" not in cfg22.to_dict()["model"]
    assert VoiceConfig.model_validate(cfg22.to_dict()).architecture == "2.2"


def test_version_mismatch_messages_name_22(d22, cfg):
    net23 = build_generator(cfg, version="2.3")
    with pytest.raises(KoeError, match=r"2\.2 generator with the CLAP emotion input.*2\.3 generator") as err:
        ck.load_weights(net23, d22 / "G_1000.pth")
    assert "G_1000.pth" in str(err.value) and '"version": "2.2"' in str(err.value)
    net22 = build_generator(VoiceConfig.load(d22.parent / "model-small" / "config.json"), version="2.2")
    with pytest.raises(KoeError, match=r"2\.3 generator.*but a Bert-VITS2 2\.2 generator"):
        ck.load_weights(net22, d22.parent / "model-small" / "G_1000.pth")
    with pytest.raises(KoeError, match=r"2\.2 duration discriminator"):
        ck.load_weights(build_discriminators(VoiceConfig.load(d22.parent / "model-small" / "config.json"))[1],
                        d22 / "DUR_1000.pth", kind="DUR")


def test_newer_quantiser_flag_layout_loads_and_saves_as_22(d22, cfg, model, tmp_path):
    state = dict(ck.read_checkpoint(d22 / "G_1000.pth")["model"])
    state["enc_p.emo_vq._codebook.initted"] = torch.tensor(True)  # vector-quantize-pytorch >= 1.27 layout
    net = build_generator(cfg)
    assert ck.load_weights(net, {"model": state}).loaded == 1090
    path = ck.save_checkpoint(tmp_path / "G_5.pth", net, epoch=1, step=5, learning_rate=2e-4)
    saved = torch.load(path, weights_only=True)["model"]["enc_p.emo_vq._codebook.initted"]
    assert saved.dtype == torch.float32 and tuple(saved.shape) == (1,) and saved.item() == 1.0


# --- golden numbers -----------------------------------------------------------------------------


@torch.no_grad()
def test_text_encoder_emotion_path_and_duration_predictor(model, v):
    g = model.emb_g(v["sid"]).unsqueeze(-1)
    berts = (v["bert"], v["ja_bert"], v["en_bert"])
    hidden, m_p, logs_p, x_mask, loss_commit = model.enc_p(*_text(v), *berts, g=g, emo=v["emo"])
    assert _diff(hidden, v["enc_p_hidden"]) < 1e-4
    assert _diff(m_p, v["enc_p_m"]) < 1e-4 and _diff(logs_p, v["enc_p_logs"]) < 1e-4
    assert loss_commit.shape == () and loss_commit.item() == 0.0 == v["enc_p_loss_commit"].item()
    e_h, _, codes, feature, quantized = emotion_embedding(model.enc_p, v["emo"])
    assert _diff(feature, v["enc_p_emo_feature"]) < 1e-4
    assert _diff(quantized, v["enc_p_emo_quantized"]) < 1e-4
    assert torch.equal(codes, v["enc_p_emo_indices"])
    assert _diff(e_h, v["enc_p_emo_emb"]) < 1e-4
    assert _diff(model.dp(hidden, x_mask, g=g), v["dp_logw"]) < 1e-4
    hidden2 = model.enc_p(*_text(v), *berts, g=g, emo=v["emo2"])[0]
    assert _diff(hidden2, v["enc_p_hidden_emo2"]) < 1e-4


@torch.no_grad()
def test_batch_of_two(model, v):
    g = model.emb_g(v["b2_sid"]).unsqueeze(-1)
    berts = tuple(v[k].repeat(2, 1, 1) for k in ("bert", "ja_bert", "en_bert"))
    hidden, m_p, logs_p, _, _ = model.enc_p(*_text(v, "b2_"), *berts, g=g, emo=v["b2_emo"])
    assert _diff(hidden, v["b2_enc_p_hidden"]) < 1e-4
    assert _diff(m_p, v["b2_enc_p_m"]) < 1e-4 and _diff(logs_p, v["b2_enc_p_logs"]) < 1e-4


@pytest.mark.parametrize("case", sorted(INFER_CASES))
@torch.no_grad()
def test_infer(model, v, case):
    x, x_lengths, tone, language = _text(v)
    o, attn, _, _ = model.infer(x, x_lengths, v["sid"], tone, language, v["bert"], v["ja_bert"], v["en_bert"],
                                noise_scale=0.0, noise_scale_w=0.0, emo=v["emo"], **INFER_CASES[case])
    assert _diff(o, v[f"infer_{case}_audio"]) < 1e-3
    if f"infer_{case}_attn" in v:
        assert torch.equal(attn, v[f"infer_{case}_attn"])


@torch.no_grad()
def test_infer_second_emotion_changes_length(model, v):
    x, x_lengths, tone, language = _text(v)
    o = model.infer(x, x_lengths, v["sid"], tone, language, v["bert"], v["ja_bert"], v["en_bert"],
                    noise_scale=0.0, noise_scale_w=0.0, sdp_ratio=0.0, emo=v["emo2"][0])[0]
    assert _diff(o, v["infer_sdp0_emo2_audio"]) < 1e-3
    with pytest.raises(KoeError, match="needs the emotion vector"):
        model.infer(x, x_lengths, v["sid"], tone, language, v["bert"], v["ja_bert"], v["en_bert"])
    with pytest.raises(KoeError, match=r"shape \[256\]"):
        model.infer(x, x_lengths, v["sid"], tone, language, v["bert"], v["ja_bert"], v["en_bert"],
                    emo=torch.zeros(256))


@torch.no_grad()
def test_flow_decoder_posterior(model, v):
    g = model.emb_g(v["sid"]).unsqueeze(-1)
    ones = torch.ones(1, 1, v["flow_in"].shape[2])
    assert _diff(model.flow(v["flow_in"], ones, g=g), v["flow_fwd"]) < 1e-4
    assert _diff(model.flow(v["flow_in"], ones, g=g, reverse=True), v["flow_rev"]) < 1e-4
    assert _diff(model.dec(v["dec_in"], g=g), v["dec_out"]) < 1e-4
    _, m_q, logs_q, _ = model.enc_q(v["enc_q_spec"], torch.tensor([v["enc_q_spec"].shape[2]]), g=g)
    assert _diff(m_q, v["enc_q_m"]) < 1e-4 and _diff(logs_q, v["enc_q_logs"]) < 1e-4


@torch.no_grad()
def test_duration_discriminator_golden(d22, cfg, model, v):
    _, dur, _ = build_discriminators(cfg)
    ck.load_weights(dur, d22 / "DUR_1000.pth", kind="DUR")
    dur.eval()
    g = model.emb_g(v["sid"]).unsqueeze(-1)
    hidden = v["enc_p_hidden"]
    x_mask = sequence_mask(v["x_lengths"], hidden.shape[2]).unsqueeze(1).float()
    prob_r, prob_g = dur(hidden, x_mask, v["dur_logw_"], v["dur_logw"], g)
    assert _diff(prob_r, v["dur_out_r"]) < 1e-4 and _diff(prob_g, v["dur_out_g"]) < 1e-4


@torch.no_grad()
def test_quantiser_alone_library_and_plain_ops(model, v):
    enc_p = model.enc_p
    feature = enc_p.in_feature_net(v["vq_emo_in"])
    assert _diff(feature, v["vq_in_feature"]) < 1e-4
    quantized, codes, loss = enc_p.emo_vq(feature.unsqueeze(1))
    assert torch.equal(codes, v["vq_indices"]) and float(loss.sum()) == 0.0
    assert _diff(quantized, v["vq_quantized"]) < 1e-4
    plain, plain_codes = quantize_eval(enc_p.emo_vq, v["vq_in_feature"].unsqueeze(1))
    assert torch.equal(plain_codes, v["vq_indices"]) and _diff(plain, v["vq_quantized"]) < 1e-4
    assert _diff(enc_p.out_feature_net(quantized), v["vq_out_feature"]) < 1e-4


# --- the Voice facade ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voice_dir(d22, tmp_path_factory):
    """The golden 2.2 voice with a config.json that (wrongly) says 2.3: the G file's keys decide."""
    folder = tmp_path_factory.mktemp("v22")
    shutil.copy(d22 / "G_1000.pth", folder / "G_1000.pth")
    raw = json.loads((d22 / "config.json").read_text())
    raw["version"] = "2.3"
    (folder / "config.json").write_text(json.dumps(raw))
    return folder


def test_voice_detects_22_from_keys_and_matches_golden_audio(voice_dir, v):
    voice = Voice.load(voice_dir / "G_1000.pth")
    assert voice.needs_emotion and voice.version == "2.2"
    ids, tones, langs = (v[k][0].tolist() for k in ("x", "tone", "language"))
    berts = [v[k][0] for k in ("bert", "ja_bert", "en_bert")]
    for emo in (v["emo"][0].numpy(), v["emo"], v["emo"][0].reshape(512, 1)):
        audio = voice.synthesize_phones(ids, tones, langs, *berts, speaker=int(v["sid"][0]), sdp_ratio=0.0,
                                        noise_scale=0.0, noise_scale_w=0.0, blanked=True, emo=emo)
        assert np.abs(audio - v["infer_sdp0_audio"][0, 0].numpy()).max() < 1e-3
    with pytest.raises(KoeError, match=r"2\.2 \(CLAP\) voice: it needs an emotion prompt") as err:
        voice.synthesize_phones(ids, tones, langs, *berts, blanked=True)
    assert "--emotion-text" in str(err.value) and "G_1000.pth" in str(err.value)
    # Missing BERT slots of a 2.2 voice are uniform noise in [0, 1), as 2.2 draws them.
    assert float(voice._filler(5).min()) >= 0.0


def test_release_file_of_a_22_voice_loads(voice_dir, tmp_path, v):
    out = ck.export_release(voice_dir / "G_1000.pth", tmp_path / "G_1000_fp16.pth", fp16=True)
    state = torch.load(out, weights_only=True)["model"]
    assert not any(k.startswith("enc_q.") for k in state)
    assert state["enc_p.emo_vq._codebook.embed"].dtype == torch.float16  # buffers cast too, as 2.2 does
    shutil.copy(voice_dir / "config.json", tmp_path / "config.json")
    voice = Voice.load(out)
    assert voice.needs_emotion
    ids, tones, langs = (v[k][0].tolist() for k in ("x", "tone", "language"))
    audio = voice.synthesize_phones(ids, tones, langs, speaker=0, blanked=True, seed=0, emo=v["emo"][0])
    assert np.isfinite(audio).all() and audio.size > 0


def test_a_23_voice_refuses_an_emotion_vector(d22, v):
    small = d22.parent / "model-small"
    voice = Voice.load(small / "G_1000.pth", config_path=small / "config.json")
    assert not voice.needs_emotion
    with pytest.raises(KoeError, match=r"2\.3 voice: it has no emotion input"):
        voice.synthesize_phones([0, 1], [0, 0], [0, 0], blanked=True, emo=v["emo"][0])


def test_text_synthesis_of_a_22_voice_takes_one_emotion_for_all_sentences(voice_dir, golden_dir, v, tmp_path):
    from vits.text import clean_text
    from vits.text.bert import BertFeatures
    from vits.text.testing import build_tiny_models

    voice = Voice.load(voice_dir / "G_1000.pth")
    bert = BertFeatures(build_tiny_models(tmp_path, golden_dir / "tokenizers", hidden=1024, layers=3,
                                          languages=("EN",)))
    with pytest.raises(KoeError, match="needs an emotion prompt"):
        voice.synthesize("Hello world.", "EN", bert=bert)
    pieces = list(voice.stream("Hello world. Good!", "EN", speaker="spk1", bert=bert, seed=4, emo=v["emo"][0]))
    assert [s for s, _ in pieces] == ["Hello world.", "Good!"]
    (seg,) = clean_text("Hello world.", "EN")
    again = voice.synthesize_phones(seg.phones, seg.tones, "EN", en_bert=bert.features(seg), speaker="spk1",
                                    seed=4, emo=v["emo"][0])
    assert np.array_equal(pieces[0][1], again)
    other = voice.synthesize_phones(seg.phones, seg.tones, "EN", en_bert=bert.features(seg), speaker="spk1",
                                    seed=4, emo=v["emo2"][0])
    assert other.shape != again.shape or not np.array_equal(other, again)  # the emotion changes the audio
