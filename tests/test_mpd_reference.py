"""The multi-period discriminator against a layer-by-layer reference loop written from spec §3.3/§4.13.

The reference reads nothing from our modules but the state dict (`D_*.pth` keys): it rebuilds each weight
from `weight_g`/`weight_v` itself, applies the spec's kernel/stride/padding/groups table with plain
`F.conv1d`/`F.conv2d` in float64, and compares every feature map and both logits of every sub-discriminator.
The full-width network is Bert-VITS2's; the 16x narrower one is what the training tests train
(`KOE_TESTS_ONLY_MPD_DIVISOR`, tests/conftest.py).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from vits.config import VoiceConfig
from vits.discriminators import TEST_MPD_DIVISOR_ENV, MultiPeriodDiscriminator, build_discriminators
from vits.errors import KoeError
from vits.train.setup import PairedMPD

# spec §3.3: DiscriminatorS rows (out, kernel, stride, groups, padding); conv_post 1->k3 s1 p1.
SCALE_LAYERS = [(16, 15, 1, 1, 7), (64, 41, 4, 4, 20), (256, 41, 4, 16, 20), (1024, 41, 4, 64, 20),
                (1024, 41, 4, 256, 20), (1024, 5, 1, 1, 2)]
# spec §3.3: DiscriminatorP rows (out, stride along time); kernel (5,1), padding (2,0); conv_post (3,1) pad (1,0).
PERIOD_LAYERS = [(32, 3), (128, 3), (512, 3), (1024, 3), (1024, 1)]
PERIODS = [2, 3, 5, 7, 11]
SLOPE = 0.1


def _weight(state: dict, prefix: str) -> torch.Tensor:
    """w = g · v / ‖v‖, the norm over every axis but the output channel (weight norm, dim 0)."""
    v, g = state[prefix + "weight_v"].double(), state[prefix + "weight_g"].double()
    norm = v.pow(2).sum(dim=tuple(range(1, v.dim())), keepdim=True).sqrt()
    return g * v / norm


def reference_mpd(state: dict, y: torch.Tensor, divisor: int = 1):
    """[(logits, feature maps)] for discriminators 0..5, computed from the state dict alone."""
    out = []
    x = y.double()
    fmaps = []
    for j, (c_out, k, s, groups, pad) in enumerate(SCALE_LAYERS):
        p = f"discriminators.0.convs.{j}."
        w = _weight(state, p)
        assert w.shape[2] == k, p
        x = F.conv1d(x, w, state[p + "bias"].double(), stride=s, padding=pad, groups=max(1, groups // divisor))
        assert x.shape[1] == c_out // divisor
        x = F.leaky_relu(x, SLOPE)
        fmaps.append(x)
    p = "discriminators.0.conv_post."
    x = F.conv1d(x, _weight(state, p), state[p + "bias"].double(), padding=1)
    fmaps.append(x)
    out.append((x.flatten(1), fmaps))
    for i, period in enumerate(PERIODS, start=1):
        x = y.double()
        t = x.shape[-1]
        if t % period:
            x = F.pad(x, (0, period - t % period), mode="reflect")
        x = x.view(x.shape[0], 1, -1, period)
        fmaps = []
        for j, (c_out, s) in enumerate(PERIOD_LAYERS):
            p = f"discriminators.{i}.convs.{j}."
            x = F.conv2d(x, _weight(state, p), state[p + "bias"].double(), stride=(s, 1), padding=(2, 0))
            assert x.shape[1] == c_out // divisor
            x = F.leaky_relu(x, SLOPE)
            fmaps.append(x)
        p = f"discriminators.{i}.conv_post."
        x = F.conv2d(x, _weight(state, p), state[p + "bias"].double(), padding=(1, 0))
        fmaps.append(x)
        out.append((x.flatten(1), fmaps))
    return out


def _randomized(divisor: int) -> MultiPeriodDiscriminator:
    """An MPD whose weight_g no longer equals ‖weight_v‖ (fresh weight norm hides a wrong norm axis)."""
    torch.manual_seed(3)
    mpd = MultiPeriodDiscriminator(width_divisor=divisor).eval()
    with torch.no_grad():
        for name, p in mpd.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
            elif name.endswith("bias"):
                p.add_(0.01 * torch.randn_like(p))
    return mpd


def _assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape, what
    scale = ref.abs().max().item()
    err = (ours.double() - ref).abs().max().item()
    assert err <= 1e-5 * max(scale, 1e-3), f"{what}: max error {err:.3g} on values up to {scale:.3g}"


@pytest.mark.parametrize("divisor", [1, 16])
def test_every_feature_map_matches_the_reference_loop(divisor):
    mpd = _randomized(divisor)
    torch.manual_seed(4)
    y = 0.1 * torch.randn(2, 1, 1201)  # 1201 samples: every period reflect-pads
    with torch.no_grad():
        ours = [disc(y) for disc in mpd.discriminators]
    reference = reference_mpd(mpd.state_dict(), y, divisor)
    for i, ((logits, fmaps), (ref_logits, ref_fmaps)) in enumerate(zip(ours, reference, strict=True)):
        assert len(fmaps) == len(ref_fmaps) == (7 if i == 0 else 6)
        _assert_close(logits, ref_logits, f"discriminator {i} logits")
        for j, (a, b) in enumerate(zip(fmaps, ref_fmaps)):
            _assert_close(a, b, f"discriminator {i} feature map {j}")


def test_training_scores_real_and_fake_like_the_mpd():
    """PairedMPD (what a training step calls: real and fake in one batch) = MultiPeriodDiscriminator.forward."""
    mpd = _randomized(16)
    torch.manual_seed(5)
    y, y_hat = 0.1 * torch.randn(2, 1, 1201), 0.1 * torch.randn(2, 1, 1201)
    with torch.no_grad():
        want = mpd(y, y_hat)
        got = PairedMPD(mpd)(y, y_hat)
    for name, a, b in zip(("real", "fake"), got[:2], want[:2]):
        assert all(torch.allclose(x, z, rtol=1e-5, atol=1e-6) for x, z in zip(a, b, strict=True)), name
    for name, a, b in zip(("real maps", "fake maps"), got[2:], want[2:]):
        assert all(torch.allclose(x, z, rtol=1e-5, atol=1e-6) for xs, zs in zip(a, b, strict=True)
                   for x, z in zip(xs, zs, strict=True)), name
    assert not torch.equal(got[0][0], got[1][0])  # real and fake were not mixed up into one score


def test_the_narrow_network_is_for_tests_only(monkeypatch):
    cfg = VoiceConfig()
    monkeypatch.delenv(TEST_MPD_DIVISOR_ENV, raising=False)
    full = build_discriminators(cfg)[0]
    assert sum(p.numel() for p in full.parameters()) == 46_747_132  # spec §2: Bert-VITS2's D
    monkeypatch.setenv(TEST_MPD_DIVISOR_ENV, "16")
    narrow = build_discriminators(cfg)[0]
    assert list(narrow.state_dict()) == list(full.state_dict())  # same keys, smaller tensors
    assert sum(p.numel() for p in narrow.parameters()) < 250_000
    for bad in ("3", "x"):
        monkeypatch.setenv(TEST_MPD_DIVISOR_ENV, bad)
        with pytest.raises(KoeError, match=TEST_MPD_DIVISOR_ENV):
            build_discriminators(cfg)


def test_nothing_outside_the_tests_sets_the_narrow_width(repo_root):
    """Only vits/discriminators.py (which reads it) and tests/ name the variable: users always get the spec's D."""
    places = [repo_root / f for f in ("app.py", "settings.py")]
    for folder in ("vits", "prep", "pipeline", "server", "studio", "scripts", "notebooks"):
        places += [p for p in (repo_root / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".sh", ".ipynb")]
    named = [str(p.relative_to(repo_root)) for p in places
             if TEST_MPD_DIVISOR_ENV in p.read_text(encoding="utf-8", errors="replace")]
    assert named == ["vits/discriminators.py"]
