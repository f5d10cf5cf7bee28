"""The generator (SynthesizerTrn) against Bert-VITS2 2.3: key layout, parameter counts, golden numbers."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from vits.attentions import MultiHeadAttention
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.flows import ResidualCouplingBlock
from vits.models import SynthesizerTrn, build_generator, prepare_for_inference
from vits.transforms import rational_quadratic_spline

INFER_CASES = {
    "sdp0": {"sdp_ratio": 0.0},
    "sdp05": {"sdp_ratio": 0.5},
    "sdp1": {"sdp_ratio": 1.0},
    "sdp0_len13": {"sdp_ratio": 0.0, "length_scale": 1.3},
}


pytestmark = pytest.mark.torch_threads(1)  # tests/conftest.py sets and restores it per test


@pytest.fixture(scope="module")
def small_dir(golden_dir):
    return golden_dir / "model-small"


@pytest.fixture(scope="module")
def golden_model(small_dir):
    model = build_generator(VoiceConfig.load(small_dir / "config.json"))
    state = torch.load(small_dir / "G_1000.pth", map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def vectors(small_dir):
    return torch.load(small_dir / "vectors.pt", map_location="cpu", weights_only=True)


def _text_inputs(v):
    return v["x"], v["x_lengths"], v["sid"], v["tone"], v["language"], v["bert"], v["ja_bert"], v["en_bert"]


def _max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# --- layout -------------------------------------------------------------------------------------


def test_golden_checkpoint_keys_in_order(golden_model, small_dir):
    state = torch.load(small_dir / "G_1000.pth", map_location="cpu", weights_only=True)["model"]
    ours = golden_model.state_dict()
    assert list(ours) == list(state)
    assert all(ours[k].shape == state[k].shape for k in state)


def _appendix_listing(spec_text: str, heading: str) -> list[tuple[str, list[int]]]:
    section = spec_text.split(heading, 1)[1]
    block = section.split("```", 2)[1]
    rows = []
    for line in block.strip().splitlines():
        key, shape = line.split()
        rows.append((key, [int(n) for n in shape.strip("[]").split(",")]))
    return rows


@pytest.fixture(scope="module")
def default_model():
    return build_generator(VoiceConfig())


def test_default_config_matches_spec_appendix(repo_root, default_model):
    spec = repo_root / "docs" / "spec" / "bert-vits2-2.3.md"  # in the tree: never skipped
    expected = _appendix_listing(spec.read_text(encoding="utf-8"), "### A.1")
    assert len(expected) == 1125
    model = default_model
    got = [(k, list(t.shape)) for k, t in model.state_dict().items()]
    assert got == expected
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())
    assert not list(model.buffers())


def test_parameter_counts(default_model):
    model = default_model
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == 61_020_017
    assert count(model) - count(model.enc_q) == 50_525_681
    assert count(model.enc_p) == 7_005_888 and count(model.dec) == 14_662_144
    assert count(model.flow) == 26_562_432 and count(model.sdp) == 1_415_664 and count(model.dp) == 444_353
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": 7}, "model": {"gin_channels": 256}})
    assert count(build_generator(cfg)) == 56_488_817 + 256 * (7 + 8000)
    assert count(ResidualCouplingBlock(192, 192, 5, 1, 4, gin_channels=512)) == 10_260_096


# --- building blocks -------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 3, 12])
def test_relative_attention_matches_explicit_formula(t):
    """Spec §4.3 written as loops: logits and outputs get E[j-i+4] for |j-i| <= 4 only."""
    torch.manual_seed(t)
    attn = MultiHeadAttention(8, 8, n_heads=2, window_size=4).eval()
    x = torch.randn(1, 8, t)
    mask = torch.ones(1, 1, t, t)
    mask[..., t - 1] = 0 if t > 1 else 1  # block the last key to exercise the -1e4 fill
    out = attn(x, x, mask)
    with torch.no_grad():
        q = attn.conv_q(x).view(2, 4, t) / 2.0  # 1/sqrt(head dim 4)
        k, v = attn.conv_k(x).view(2, 4, t), attn.conv_v(x).view(2, 4, t)
        ek, ev = attn.emb_rel_k[0], attn.emb_rel_v[0]
        merged = torch.zeros(2, 4, t)
        for h in range(2):
            s = torch.zeros(t, t)
            for i in range(t):
                for j in range(t):
                    s[i, j] = q[h, :, i] @ k[h, :, j] + (q[h, :, i] @ ek[j - i + 4] if abs(j - i) <= 4 else 0)
            s = s.masked_fill(mask[0, 0] == 0, -1e4).softmax(-1)
            for i in range(t):
                for j in range(t):
                    merged[h, :, i] += s[i, j] * (v[h, :, j] + (ev[j - i + 4] if abs(j - i) <= 4 else 0))
        expected = attn.conv_o(merged.reshape(1, 8, t))
    assert _max_diff(out, expected) < 1e-5


def test_spline_inverts_and_passes_tails_through():
    torch.manual_seed(0)
    # float64: the inverse's quadratic solve loses digits in float32 on steep bins (same upstream).
    inputs = torch.tensor([-7.0, -5.0, -4.2, -1.0, 0.0, 0.3, 2.5, 4.99, 5.0, 6.0], dtype=torch.float64).view(1, 10)
    # One spline shared by all inputs, so monotonicity can be checked across them.
    widths, heights, derivs = (torch.randn(1, 1, n, dtype=torch.float64).expand(1, 10, n) for n in (10, 10, 9))
    inputs.requires_grad_(True)
    y, logdet = rational_quadratic_spline(inputs, widths, heights, derivs)
    back, logdet_inv = rational_quadratic_spline(y, widths, heights, derivs, inverse=True)
    assert _max_diff(back, inputs) < 1e-9
    assert _max_diff(logdet, -logdet_inv) < 1e-9
    assert y[0, 0] == -7.0 and y[0, -1] == 6.0 and logdet[0, 0] == 0 and logdet[0, -1] == 0
    assert abs(y[0, 1].item() + 5.0) < 1e-5 and abs(y[0, 8].item() - 5.0) < 1e-5  # ends are fixed
    (grad,) = torch.autograd.grad(y.sum(), inputs)
    assert torch.isfinite(grad).all() and grad[0, 0] == 1 and grad[0, -1] == 1
    # The spline is monotone and its slope is exp(logdet).
    assert torch.all(y[0, 1:] >= y[0, :-1])
    assert _max_diff(grad[0, 1:-1].log(), logdet[0, 1:-1].detach()) < 1e-9


# --- golden numbers -------------------------------------------------------------------------------


@torch.no_grad()
def test_golden_text_encoder_and_duration_predictor(golden_model, vectors):
    v = vectors
    g = golden_model.emb_g(v["sid"]).unsqueeze(-1)
    hidden, m_p, logs_p, x_mask = golden_model.enc_p(v["x"], v["x_lengths"], v["tone"], v["language"],
                                                     v["bert"], v["ja_bert"], v["en_bert"], g=g)
    assert _max_diff(hidden, v["enc_p_hidden"]) < 1e-4
    assert _max_diff(m_p, v["enc_p_m"]) < 1e-4
    assert _max_diff(logs_p, v["enc_p_logs"]) < 1e-4
    assert _max_diff(golden_model.dp(hidden, x_mask, g=g), v["dp_logw"]) < 1e-4


@torch.no_grad()
def test_golden_flow_decoder_posterior(golden_model, vectors):
    v = vectors
    g = golden_model.emb_g(v["sid"]).unsqueeze(-1)
    ones = torch.ones(1, 1, v["flow_in"].shape[2])
    assert _max_diff(golden_model.flow(v["flow_in"], ones, g=g), v["flow_fwd"]) < 1e-4
    assert _max_diff(golden_model.flow(v["flow_in"], ones, g=g, reverse=True), v["flow_rev"]) < 1e-4
    assert _max_diff(golden_model.dec(v["dec_in"], g=g), v["dec_out"]) < 1e-4
    lengths = torch.tensor([v["enc_q_spec"].shape[2]])
    _, m_q, logs_q, _ = golden_model.enc_q(v["enc_q_spec"], lengths, g=g)
    assert _max_diff(m_q, v["enc_q_m"]) < 1e-4
    assert _max_diff(logs_q, v["enc_q_logs"]) < 1e-4


@pytest.mark.parametrize("case", sorted(INFER_CASES))
def test_golden_infer(golden_model, vectors, case):
    with torch.inference_mode():
        o, attn, y_mask, _ = golden_model.infer(*_text_inputs(vectors), noise_scale=0.0, noise_scale_w=0.0,
                                                **INFER_CASES[case])
    assert _max_diff(o, vectors[f"infer_{case}_audio"]) < 1e-3
    if f"infer_{case}_attn" in vectors:
        assert torch.equal(attn, vectors[f"infer_{case}_attn"])
    assert y_mask.shape[2] * 512 == o.shape[2]


def test_infer_random_draw_order(golden_model, vectors):
    """SDP noise randn(B,2,T_x) is drawn first (even at sdp_ratio 0), then randn_like(m_p)."""
    with torch.no_grad():
        torch.manual_seed(123)
        _, _, _, (_, z_p, m_p, logs_p) = golden_model.infer(*_text_inputs(vectors), noise_scale=0.5,
                                                            sdp_ratio=0.0)
        torch.manual_seed(123)
        torch.randn(1, 2, vectors["x"].shape[1])
        eps = torch.randn_like(m_p)  # like the model: m_p's (transposed) strides decide the draw
    assert _max_diff(z_p, m_p + eps * torch.exp(logs_p) * 0.5) < 1e-6


def test_prepare_for_inference_keeps_output(golden_model, vectors):
    folded = prepare_for_inference(copy.deepcopy(golden_model).train())
    assert not folded.training
    assert not any(k.endswith(("weight_g", "weight_v")) for k in folded.state_dict())
    outputs = []
    for model in (golden_model, folded):
        torch.manual_seed(7)
        with torch.inference_mode():
            outputs.append(model.infer(*_text_inputs(vectors), noise_scale=0.667, noise_scale_w=0.8,
                                       sdp_ratio=0.5)[0])
    assert _max_diff(outputs[0], outputs[1]) < 1e-6


def test_bad_inputs_raise_koe_error(golden_model, vectors):
    x, x_lengths, sid, tone, language, bert, ja_bert, en_bert = _text_inputs(vectors)
    with pytest.raises(KoeError, match=r"bert must be a float tensor of shape \(1, 1024, 23\)"):
        golden_model.infer(x, x_lengths, sid, tone, language, bert[:, :, :5], ja_bert, en_bert)
    with pytest.raises(KoeError, match="x must be an integer tensor"):
        golden_model.infer(x.float(), x_lengths, sid, tone, language, bert, ja_bert, en_bert)
    with pytest.raises(KoeError, match=r"sid must be an integer tensor of shape \[B\] = \(1,\), got \(\) "):
        golden_model.infer(x, x_lengths, sid[0], tone, language, bert, ja_bert, en_bert)
    with pytest.raises(KoeError, match=r"sid holds ids in \[3, 3\], but only 0..2 exist"):
        golden_model.infer(x, x_lengths, sid + 1, tone, language, bert, ja_bert, en_bert)
    spec = torch.zeros(1, 513, 40)
    with pytest.raises(KoeError, match=r"y must be a float tensor of shape \(1, 1025, 40\)"):
        golden_model(x, x_lengths, spec, torch.tensor([40]), sid, tone, language, bert, ja_bert, en_bert)
    with pytest.raises(KoeError, match=r"tone must be an integer tensor of shape \[B, T\] = \(1, 23\) like x, got \(1, 22\)"):
        golden_model.infer(x, x_lengths, sid, tone[:, 1:], language, bert, ja_bert, en_bert)


# --- training forward ------------------------------------------------------------------------------


def _batch(n_speakers: int, spec_channels: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x_lengths, y_lengths = torch.tensor([13, 9]), torch.tensor([70, 50])
    t_x, t_y = 13, 70
    x = torch.randint(1, 112, (2, t_x), generator=gen)
    tone = torch.randint(0, 12, (2, t_x), generator=gen)
    language = torch.randint(0, 3, (2, t_x), generator=gen)
    for t in (x, tone, language):
        t[1, 9:] = 0
    berts = [torch.randn(2, 1024, t_x, generator=gen) for _ in range(3)]
    y = torch.rand(2, spec_channels, t_y, generator=gen)
    y[1, :, 50:] = 0
    sid = torch.tensor([0, n_speakers - 1])
    return x, x_lengths, y, y_lengths, sid, tone, language, *berts


@pytest.fixture(scope="module")
def small_config(small_dir):
    return VoiceConfig.load(small_dir / "config.json")


def test_training_forward_shapes_and_gradients(small_config):
    torch.manual_seed(0)
    model = build_generator(small_config).train()
    model.current_mas_noise_scale = 0.01
    batch = _batch(small_config.data.n_speakers, small_config.spec_channels)
    out = model(*batch)
    o, l_length, attn, ids_slice, x_mask, y_mask, (z, z_p, m_p, logs_p, m_q, logs_q), durs, g = out
    hidden_x, logw, logw_, logw_sdp = durs
    assert o.shape == (2, 1, 16384) and l_length.shape == (2,) and attn.shape == (2, 1, 70, 13)
    assert ids_slice.shape == (2,) and ids_slice.dtype == torch.int64
    assert x_mask.shape == (2, 1, 13) and y_mask.shape == (2, 1, 70) and g.shape == (2, 32, 1)
    for t in (z, z_p, m_p, logs_p, m_q, logs_q):
        assert t.shape == (2, 64, 70)
    assert hidden_x.shape == (2, 64, 13)
    assert logw.shape == logw_.shape == logw_sdp.shape == (2, 1, 13)
    # A hard monotonic alignment: one token per valid frame, at least one frame per valid token.
    frames = attn[:, 0].sum(2)
    assert torch.equal(frames[0], torch.ones(70)) and torch.equal(frames[1], (torch.arange(70) < 50).float())
    durations = attn[:, 0].sum(1)
    assert torch.all(durations[0] >= 1) and torch.all(durations[1, :9] >= 1) and torch.all(durations[1, 9:] == 0)
    assert int(ids_slice[1]) <= 50 - 32

    kl = torch.sum((logs_p - logs_q - 0.5 + 0.5 * (z_p - m_p) ** 2 * torch.exp(-2 * logs_p)) * y_mask)
    loss = o.abs().mean() + l_length.sum() + kl / y_mask.sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    for part in ("enc_p", "enc_q", "flow", "dec", "sdp", "dp", "emb_g"):
        assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith(part)), part


def test_mas_scores_are_gaussian_log_likelihoods(small_config, monkeypatch):
    import vits.models as models

    seen = {}
    real = models._maximum_path

    def spy(neg_cent, mask):
        seen["neg_cent"], seen["mask"] = neg_cent.clone(), mask.clone()
        return real(neg_cent, mask)

    monkeypatch.setattr(models, "_maximum_path", spy)
    torch.manual_seed(1)
    model = build_generator(small_config).eval()
    model.use_noise_scaled_mas = False
    batch = _batch(small_config.data.n_speakers, small_config.spec_channels, seed=1)
    with torch.no_grad():
        out = model(*batch)
        x, x_lengths, _, _, sid, tone, language, bert, ja_bert, en_bert = batch
        g = model.emb_g(sid).unsqueeze(-1)
        _, m_p, logs_p, _ = model.enc_p(x, x_lengths, tone, language, bert, ja_bert, en_bert, g=g)
    z_p = out[6][1]
    # Direct log N(z_p[:, :, y] | m_p[:, :, x], exp(logs_p)) summed over channels.
    diff = z_p.unsqueeze(3) - m_p.unsqueeze(2)  # [B, C, T_y, T_x]
    direct = (-0.5 * math.log(2 * math.pi) - logs_p.unsqueeze(2) - 0.5 * diff**2 * torch.exp(-2 * logs_p).unsqueeze(2))
    direct = direct.sum(1)
    assert torch.allclose(seen["neg_cent"], direct, rtol=1e-4, atol=1e-3)
    assert seen["mask"].shape == (2, 70, 13) and seen["mask"][1, 50:].sum() == 0


def test_bf16_autocast_keeps_alignment_and_splines_in_float32(small_config, monkeypatch):
    """bf16_run: the networks autocast, but MAS scores and the SDP spline flows stay float32 (spec pitfall)."""
    import vits.models as models

    seen = {}
    real = models._maximum_path

    def spy(neg_cent, mask):
        seen["dtype"] = neg_cent.dtype
        return real(neg_cent, mask)

    monkeypatch.setattr(models, "_maximum_path", spy)
    torch.manual_seed(2)
    model = build_generator(small_config).train()
    batch = _batch(small_config.data.n_speakers, small_config.spec_channels, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*batch)
        hidden_x, x_mask = out[7][0], out[4]
        sdp_out = model.sdp(hidden_x, x_mask, g=out[8], reverse=True)
    assert seen["dtype"] == torch.float32
    assert out[1].dtype == torch.float32 and sdp_out.dtype == torch.float32
    assert out[7][3].dtype == torch.float32  # logw_sdp
    assert torch.isfinite(out[1]).all()


def test_unsupported_configs_raise_koe_error():
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": 2}, "model": {"n_layers": 2}})
    with pytest.raises(KoeError, match="n_layers"):
        build_generator(cfg)
    with pytest.raises(KoeError, match="n_speakers"):
        SynthesizerTrn(112, 1025, 32, 64, 64, 128, 2, 3, 3, 0.1, "1", [3], [[1, 3, 5]], [8, 8, 2, 2, 2], 64,
                       [16, 16, 8, 2, 2], n_speakers=0, gin_channels=32)

