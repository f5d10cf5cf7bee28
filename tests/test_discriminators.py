"""Discriminators (keys, shapes, golden numbers) and training losses (spec §3.3-3.5, §4.13-4.15, §5.3)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from vits.commons import sequence_mask
from vits.config import VoiceConfig
from vits.discriminators import (
    DiscriminatorP,
    DurationDiscriminator,
    MultiPeriodDiscriminator,
    WavLMDiscriminator,
    build_discriminators,
)
from vits.losses import (
    discriminator_loss,
    duration_discriminator_loss,
    duration_generator_loss,
    feature_loss,
    generator_loss,
    kl_loss,
)

torch.set_num_threads(2)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


SPEC = Path(__file__).resolve().parent.parent / "docs" / "spec" / "bert-vits2-2.3.md"


def _appendix(heading: str) -> list[tuple[str, list[int]]]:
    """(key, shape) rows of an Appendix A listing in the spec (docs/spec, in the tree)."""
    text = SPEC.read_text(encoding="utf-8")
    start = text.find(heading)
    assert start >= 0, f"{heading} not in {SPEC}"
    block = text[start:].split("```")[1]
    rows = []
    for line in block.strip().splitlines():
        m = re.fullmatch(r"(\S+) \[([\d,]+)\]", line.strip())
        assert m, line
        rows.append((m.group(1), [int(v) for v in m.group(2).split(",")]))
    return rows


def _listing(module: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in module.state_dict().items()]


@pytest.fixture(scope="module")
def mpd():
    torch.manual_seed(0)
    return MultiPeriodDiscriminator().eval()


@pytest.fixture(scope="module")
def golden(golden_dir):
    return torch.load(golden_dir / "model-small" / "vectors.pt", weights_only=True)


def _model_state(golden_dir, name):
    return torch.load(golden_dir / "model-small" / name, weights_only=True)["model"]


# ---------------------------------------------------------------- structure


def test_mpd_matches_appendix_a2(mpd):
    assert _listing(mpd) == _appendix("### A.2 MultiPeriodDiscriminator")
    assert len(mpd.state_dict()) == 111
    assert _count(mpd) == 46_747_132
    assert _count(mpd.discriminators[0]) == 5_641_362
    assert all(_count(d) == 8_221_154 for d in mpd.discriminators[1:])


def test_duration_and_wavlm_discriminators_match_appendix():
    dur = DurationDiscriminator(192, 192, 3, 0.1, gin_channels=512)
    assert _listing(dur) == _appendix("### A.3 DurationDiscriminator")
    assert _count(dur) == 1_209_409
    wd = WavLMDiscriminator()
    assert _listing(wd) == _appendix("### A.4 WavLMDiscriminator")
    assert _count(wd) == 1_173_634


@pytest.mark.parametrize("gin", [32, 256, 512])
def test_duration_discriminator_param_formula(gin):
    assert _count(DurationDiscriminator(192, 192, 3, 0.1, gin_channels=gin)) == 1_111_105 + 192 * gin


def test_duration_discriminator_without_speakers_has_no_cond():
    dur = DurationDiscriminator(192, 192, 3, 0.1, gin_channels=0)
    assert not any(k.startswith("cond.") for k in dur.state_dict())
    assert _count(dur) == 1_111_105 - 192  # the formula's constant includes cond's bias


def test_mpd_output_widths_and_feature_maps(mpd):
    y = torch.randn(1, 1, 16384) * 0.1
    with torch.no_grad():
        outs = [disc(y) for disc in mpd.discriminators]
    assert [tuple(o.shape) for o, _ in outs] == [(1, 64), (1, 204), (1, 204), (1, 205), (1, 203), (1, 209)]
    assert [len(f) for _, f in outs] == [7, 6, 6, 6, 6, 6]
    assert [tuple(f.shape) for f in outs[0][1]] == [
        (1, 16, 16384), (1, 64, 4096), (1, 256, 1024), (1, 1024, 256), (1, 1024, 64), (1, 1024, 64), (1, 1, 64)]
    assert [tuple(f.shape) for f in outs[1][1]] == [
        (1, 32, 2731, 2), (1, 128, 911, 2), (1, 512, 304, 2), (1, 1024, 102, 2), (1, 1024, 102, 2), (1, 1, 102, 2)]


def test_mpd_scores_real_and_generated_separately(mpd):
    torch.manual_seed(6)
    y, y_hat = torch.randn(2, 1, 1500) * 0.1, torch.randn(2, 1, 1500) * 0.1
    with torch.no_grad():
        real, fake, fmap_r, fmap_g = mpd(y, y_hat)
        solo_r, solo_fmap = mpd.discriminators[4](y)  # period 7
    assert len(real) == len(fake) == len(fmap_r) == len(fmap_g) == 6
    assert torch.equal(real[4], solo_r) and all(torch.equal(a, b) for a, b in zip(fmap_r[4], solo_fmap))
    assert not torch.equal(real[0], fake[0])


def test_period_discriminator_reflect_pads_then_folds():
    torch.manual_seed(1)
    disc = DiscriminatorP(3).eval()
    x = torch.randn(2, 1, 100)  # 100 % 3 = 1 -> 2 samples of reflect padding
    padded = F.pad(x, (0, 2), mode="reflect")
    assert torch.equal(padded[..., 100:], x[..., [98, 97]])
    with torch.no_grad():
        out, fmap = disc(x)
        first = F.leaky_relu(disc.convs[0](padded.view(2, 1, 34, 3)), 0.1)
    assert torch.allclose(fmap[0], first)
    assert out.shape == (2, fmap[-1].shape[2] * 3)


def test_build_discriminators_loads_reference_checkpoints(golden_dir):
    cfg = VoiceConfig.load(golden_dir / "model-small" / "config.json")
    mpd, dur, wd = build_discriminators(cfg)
    assert isinstance(mpd, MultiPeriodDiscriminator)
    dur.load_state_dict(_model_state(golden_dir, "DUR_1000.pth"), strict=True)
    wd.load_state_dict(_model_state(golden_dir, "WD_1000.pth"), strict=True)
    assert dur.cond.weight.shape == (64, 32, 1) and dur.conv_1.weight.shape == (64, 64, 3)


def test_build_discriminators_without_duration_discriminator():
    cfg = VoiceConfig()
    cfg.model.use_duration_discriminator = False
    assert build_discriminators(cfg)[1] is None


# ---------------------------------------------------------------- golden numbers


def test_duration_discriminator_golden(golden_dir, golden):
    cfg = VoiceConfig.load(golden_dir / "model-small" / "config.json")
    hidden, gin = cfg.model.hidden_channels, cfg.model.gin_channels
    dur = DurationDiscriminator(hidden, hidden, 3, 0.1, gin_channels=gin)
    dur.load_state_dict(_model_state(golden_dir, "DUR_1000.pth"), strict=True)
    dur.eval()
    emb_g = _model_state(golden_dir, "G_1000.pth")["emb_g.weight"]
    g = F.embedding(golden["sid"], emb_g).unsqueeze(-1)  # [1, gin, 1], as G's emb_g(sid)
    hidden = golden["enc_p_hidden"]
    assert hidden.shape[1] == cfg.model.hidden_channels
    x_mask = sequence_mask(golden["x_lengths"], hidden.shape[2]).unsqueeze(1).to(hidden.dtype)
    with torch.no_grad():
        prob_r, prob_g = dur(hidden, x_mask, golden["dur_logw_"], golden["dur_logw"], g)
    assert prob_r.shape == golden["dur_out_r"].shape == (1, 23, 1)
    assert (prob_r - golden["dur_out_r"]).abs().max() < 1e-4
    assert (prob_g - golden["dur_out_g"]).abs().max() < 1e-4


def test_duration_discriminator_detaches_hidden_and_speaker():
    torch.manual_seed(2)
    dur = DurationDiscriminator(8, 8, 3, 0.0, gin_channels=4)
    hidden = torch.randn(2, 8, 5, requires_grad=True)
    g = torch.randn(2, 4, 1, requires_grad=True)
    logw = torch.randn(2, 1, 5, requires_grad=True)
    mask = torch.ones(2, 1, 5)
    _, prob_g = dur(hidden, mask, torch.randn(2, 1, 5), logw, g)
    prob_g.sum().backward()
    assert hidden.grad is None and g.grad is None
    assert logw.grad is not None and logw.grad.abs().sum() > 0


def test_wavlm_discriminator_golden(golden_dir, golden):
    wd = WavLMDiscriminator(768, 13, 64)
    wd.load_state_dict(_model_state(golden_dir, "WD_1000.pth"), strict=True)
    with torch.no_grad():
        out = wd(golden["wd_in"])
    assert out.shape == golden["wd_out"].shape == (1, 50)
    assert (out - golden["wd_out"]).abs().max() < 1e-4


# ---------------------------------------------------------------- losses


def test_feature_loss_is_twice_summed_l1_with_real_detached():
    torch.manual_seed(3)
    fr = [[torch.randn(2, 3, requires_grad=True), torch.randn(4)], [torch.randn(5, 1)]]
    fg = [[torch.randn(2, 3, requires_grad=True), torch.randn(4)], [torch.randn(5, 1)]]
    expected = 2 * sum((r - g).abs().mean() for dr, dg in zip(fr, fg) for r, g in zip(dr, dg))
    loss = feature_loss(fr, fg)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert fr[0][0].grad is None and fg[0][0].grad is not None


def test_discriminator_and_generator_lsgan_losses():
    real = [torch.tensor([[0.5, 1.0]]), torch.tensor([[2.0, 0.0, 1.0]])]
    fake = [torch.tensor([[0.5, -1.0]]), torch.tensor([[1.0, 0.0, 3.0]])]
    loss, r_losses, g_losses = discriminator_loss(real, fake)
    # ((0.25+0)/2 + (1+1+0)/3) + ((0.25+1)/2 + (1+0+9)/3)
    assert r_losses[0].item() == pytest.approx(0.125) and r_losses[1].item() == pytest.approx(2 / 3)
    assert g_losses[0].item() == pytest.approx(0.625) and g_losses[1].item() == pytest.approx(10 / 3)
    assert loss.item() == pytest.approx(0.125 + 2 / 3 + 0.625 + 10 / 3)
    gen, per = generator_loss(fake)
    # (1-0.5)^2, (1+1)^2 -> 2.125 ; (0, 1, 4) -> 5/3
    assert [p.item() for p in per] == pytest.approx([2.125, 5 / 3])
    assert gen.item() == pytest.approx(2.125 + 5 / 3)


def test_duration_losses_iterate_over_batch_items():
    torch.manual_seed(4)
    p_r, p_g = torch.rand(3, 7, 1) * 2, torch.rand(3, 7, 1) * 2
    loss, r, g = duration_discriminator_loss(p_r, p_g)
    expected = sum(((1 - p_r[b]) ** 2).mean() + (p_g[b] ** 2).mean() for b in range(3))
    assert torch.allclose(loss, expected) and len(r) == len(g) == 3
    # Same as the reference's generic helper fed the tensors directly.
    assert torch.allclose(discriminator_loss(p_r, p_g)[0], expected)
    gen, per = duration_generator_loss(p_g)
    assert torch.allclose(gen, sum(((1 - p_g[b]) ** 2).mean() for b in range(3))) and len(per) == 3
    # Differs from a plain mean over the batch (a re-implementation mistake this pins).
    assert not torch.allclose(gen, ((1 - p_g) ** 2).mean())


def test_kl_loss_formula_with_mask():
    torch.manual_seed(5)
    z_p, logs_q, m_p, logs_p = (torch.randn(2, 4, 6) for _ in range(4))
    mask = torch.ones(2, 1, 6)
    mask[1, :, 4:] = 0
    loss = kl_loss(z_p, logs_q, m_p, logs_p, mask)
    total, frames = 0.0, 0.0
    for b in range(2):
        for t in range(6):
            if mask[b, 0, t] == 0:
                continue
            frames += 1
            for c in range(4):
                lp, lq = logs_p[b, c, t].item(), logs_q[b, c, t].item()
                total += lp - lq - 0.5 + 0.5 * (z_p[b, c, t].item() - m_p[b, c, t].item()) ** 2 * torch.exp(
                    torch.tensor(-2.0 * lp)).item()
    assert loss.item() == pytest.approx(total / frames, rel=1e-5)
