"""The fast CPU synthesis path gives Bert-VITS2's audio: Voice (folded weights, fused decoder) vs the plain
computation (eval + no_grad, weight norm per call, 1-D convs), same weights, same seed (bench/synthesize.py
times them; no timing here)."""

from __future__ import annotations

import pytest
import torch

from tests.test_data import tiny_config
from vits.fast_infer import FusedDecoder, fused_decoder
from vits.models import build_generator, prepare_for_inference
from vits.symbols import intersperse
from vits.synthesis import ChannelsLastDecoder, Voice


def _config(resblock: str = "1"):
    cfg = tiny_config()
    cfg.model.resblock = resblock
    cfg.model.resblock_kernel_sizes = [3, 7]  # two parallel resblocks per stage: the shared first activation
    cfg.model.resblock_dilation_sizes = [[1, 3, 5], [1, 3, 5]] if resblock == "1" else [[1, 3], [1, 3]]
    return cfg


@pytest.mark.parametrize("sdp_ratio", [0.5, 0.0])
def test_default_cpu_voice_gives_the_plain_audio(sdp_ratio):
    cfg = _config()
    torch.manual_seed(0)
    plain = build_generator(cfg).eval()
    torch.manual_seed(0)
    voice = Voice(build_generator(cfg), cfg, "cpu")
    if torch.backends.mkldnn.is_available():
        assert isinstance(voice.decoder, FusedDecoder)
    gen = torch.Generator().manual_seed(1)
    ids = intersperse(torch.randint(1, 100, (12,), generator=gen).tolist())
    t = len(ids)
    tones, langs = torch.randint(0, 6, (t,), generator=gen).tolist(), [0] * t
    berts = [torch.randn(1024, t, generator=gen) for _ in range(3)]
    knobs = dict(sdp_ratio=sdp_ratio, noise_scale=0.6, noise_scale_w=0.9, length_scale=1.3)
    with torch.no_grad():
        torch.manual_seed(5)
        ref = plain.infer(torch.tensor([ids]), torch.tensor([t]), torch.tensor([1]), torch.tensor([tones]),
                          torch.tensor([langs]), *(b[None] for b in berts), **knobs)[0].reshape(-1).numpy()
    got = voice.synthesize_phones(ids, tones, langs, *berts, speaker=1, blanked=True, seed=5, **knobs)
    assert got.shape == ref.shape and ref.size > 0
    assert abs(got - ref).max() <= 1e-3
    assert abs(ref).max() > 1e-3  # not two silences


@pytest.mark.parametrize("resblock", ["1", "2"])
def test_fused_decoder_equals_the_generator(resblock):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN: Voice uses ChannelsLastDecoder (covered above)")
    cfg = _config(resblock)
    torch.manual_seed(3)
    generator = prepare_for_inference(build_generator(cfg)).dec
    fused = fused_decoder(generator)
    assert isinstance(fused, FusedDecoder)
    z = torch.randn(2, cfg.model.inter_channels, 23)
    g = torch.randn(2, cfg.model.gin_channels, 1)
    with torch.inference_mode():
        ref = generator(z, g=g)
        assert abs(fused(z, g) - ref).max() <= 1e-5
        assert abs(fused(z, g) - ChannelsLastDecoder(generator)(z, g)).max() <= 1e-5
        assert abs(fused(z, g) - fused(z, g)).max() == 0  # in-place steps never touch its inputs or weights


def test_fused_decoder_refuses_unfolded_weight_norm():
    with pytest.raises(ValueError, match="fold weight norm"):
        FusedDecoder(build_generator(_config()).dec)
