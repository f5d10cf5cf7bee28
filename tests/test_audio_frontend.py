"""Spectrogram, mel, 44.1->16 kHz resampling and the WavLM feature path (spec §5.3, §5.6, §8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vits.discriminators import WavLMDiscriminator
from vits.errors import KoeError
from vits.mel import mel_filterbank, mel_spectrogram, spec_to_mel, spectrogram
from vits.wavlm import Resampler, WavLMFeatures, WavLMLoss, check_wavlm_dir, wavlm_feature_loss

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def golden(golden_dir):
    return torch.load(golden_dir / "model-small" / "vectors.pt", weights_only=True)


# ---------------------------------------------------------------- spectrogram and mel


def test_chirp_matches_golden_spectrogram_and_mel(golden):
    wav = golden["audio_chirp"]
    spec = spectrogram(wav, 2048, 512, 2048)
    assert spec.shape == golden["spec_chirp"].shape == (1, 1025, 86)
    assert (spec - golden["spec_chirp"]).abs().max() < 1e-4
    mel = mel_spectrogram(wav, 2048, 128, 44100, 512, 2048, 0.0, None)
    assert mel.shape == golden["mel_chirp"].shape == (1, 128, 86)
    assert (mel - golden["mel_chirp"]).abs().max() < 1e-4
    assert (spec_to_mel(golden["spec_chirp"], 2048, 128, 44100, 0.0, None) - golden["mel_chirp"]).abs().max() < 1e-4


def test_filterbank_facts_from_spec():
    fb = mel_filterbank(44100, 2048, 128, 0.0, None)
    assert fb.shape == (128, 1025) and fb.dtype == torch.float32
    assert fb.sum().item() == pytest.approx(5.94156, abs=1e-4)
    assert torch.nonzero(fb[0]).flatten().tolist() == [1, 2]
    nz = torch.nonzero(fb[127]).flatten()
    assert (nz.min().item(), nz.max().item()) == (961, 1024)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(44100, 2048, 128, 0.0, None), (22050, 1024, 80, 0.0, 8000.0),
                                                       (16000, 512, 40, 20.0, 7600.0)])
def test_filterbank_equals_librosa_slaney(sr, n_fft, n_mels, fmin, fmax):
    import librosa

    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels, fmin, fmax).numpy(), ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("length,frames", [(16384, 32), (44100, 86), (51207, 100)])
def test_frame_counts(length, frames):
    assert spectrogram(torch.zeros(1, length)).shape == (1, 1025, frames)


def test_batched_equals_single_and_accepts_channel_axis():
    torch.manual_seed(0)
    wav = torch.randn(3, 8192) * 0.2
    batched = mel_spectrogram(wav)
    for b in range(3):
        assert torch.allclose(batched[b], mel_spectrogram(wav[b : b + 1])[0], atol=1e-5)
    assert torch.equal(spectrogram(wav.unsqueeze(1)), spectrogram(wav))
    assert spectrogram(wav[0]).shape == (1025, 16)


def test_magnitude_formula_against_numpy():
    torch.manual_seed(1)
    wav = torch.randn(1, 4096, dtype=torch.float64)
    spec = spectrogram(wav, 512, 128, 512)
    x = np.pad(wav[0].numpy(), (192, 192), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)  # periodic Hann
    frames = np.stack([x[i * 128: i * 128 + 512] * window for i in range((len(x) - 512) // 128 + 1)], axis=1)
    ref = np.sqrt(np.abs(np.fft.rfft(frames, axis=0)) ** 2 + 1e-6)
    np.testing.assert_allclose(spec[0].numpy(), ref, rtol=1e-9, atol=1e-9)


def test_log_clamps_silence():
    mel = mel_spectrogram(torch.zeros(1, 4096))
    # sqrt(1e-6) = 1e-3 per bin survives; an all-zero spectrogram hits the 1e-5 floor.
    assert mel.min().item() > math.log(1e-5)
    assert torch.allclose(spec_to_mel(torch.zeros(1, 1025, 3)), torch.full((1, 128, 3), math.log(1e-5)))


def test_filterbank_is_cached_per_dtype():
    a = mel_filterbank(44100, 2048, 128, 0.0, None)
    assert mel_filterbank(44100, 2048, 128, 0.0, None) is a
    b = mel_filterbank(44100, 2048, 128, 0.0, None, dtype=torch.float64)
    assert b.dtype == torch.float64 and b is not a
    assert torch.allclose(b.float(), a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu(golden):
    wav = golden["audio_chirp"]
    assert (mel_spectrogram(wav.cuda()).cpu() - golden["mel_chirp"]).abs().max() < 1e-3


# ---------------------------------------------------------------- resampler


def _reference_resample(x: np.ndarray, orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """Direct (non-polyphase) windowed-sinc evaluation of every output sample."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    base = min(orig, new) * rolloff
    n_out = math.ceil(len(x) * new / orig)
    i = np.arange(len(x))[None, :]
    t = (i - np.arange(n_out)[:, None] * orig / new) * base / orig
    t = np.clip(t, -zeros, zeros)
    h = np.sinc(t) * np.cos(t * np.pi / zeros / 2) ** 2 * base / orig
    return h @ x


def test_resampler_equals_direct_windowed_sinc():
    rng = np.random.default_rng(2)
    x = rng.normal(size=2205)
    out = Resampler(44100, 16000)(torch.from_numpy(x).float()[None])[0].double().numpy()
    ref = _reference_resample(x, 44100, 16000)
    assert out.shape == ref.shape == (800,)
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_resampled_sine_matches_analytic_16k_sine():
    t = torch.arange(44100, dtype=torch.float64) / 44100
    wav = torch.sin(2 * math.pi * 1000 * t).float()
    out = Resampler()(wav[None])[0].double()
    assert out.shape == (16000,)
    ref = torch.sin(2 * math.pi * 1000 * torch.arange(16000, dtype=torch.float64) / 16000)
    assert (out - ref)[100:-100].abs().max() < 1e-3


@pytest.mark.parametrize("length", [1, 441, 1000, 16384])
def test_resampler_length_and_batch(length):
    r = Resampler()
    assert r.output_length(length) == math.ceil(length * 160 / 441)
    torch.manual_seed(length)
    wav = torch.randn(3, length)
    out = r(wav)
    assert out.shape == (3, math.ceil(length * 160 / 441))
    assert torch.allclose(out[1], r(wav[1:2])[0], atol=1e-6)
    assert r(wav.unsqueeze(1)).shape == (3, 1, out.shape[-1])


def test_resampler_blocks_content_above_8khz():
    t = torch.arange(44100, dtype=torch.float64) / 44100
    out = Resampler()(torch.sin(2 * math.pi * 12000 * t).float()[None])[0]
    assert out[200:-200].abs().max() < 0.01


# ---------------------------------------------------------------- WavLM path


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory):
    from transformers import WavLMConfig, WavLMModel

    torch.manual_seed(3)
    config = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    folder = tmp_path_factory.mktemp("wavlm")
    WavLMModel(config).save_pretrained(str(folder))
    return WavLMFeatures(folder, "cpu")


def test_wavlm_hidden_layout_matches_stacked_hidden_states(tiny_wavlm):
    assert (tiny_wavlm.hidden_size, tiny_wavlm.num_states, tiny_wavlm.channels) == (32, 3, 96)
    torch.manual_seed(4)
    wav = torch.randn(2, 1, 16384) * 0.1
    h = tiny_wavlm.hidden(wav)
    assert h.shape == (2, 96, 18)  # 16384 samples -> 5945 at 16 kHz -> 18 frames
    with torch.no_grad():
        states = tiny_wavlm.model(input_values=Resampler()(wav[:, 0]), output_hidden_states=True).hidden_states
    # channel = state * hidden + feature
    assert torch.allclose(h[1, 2 * 32 + 5], states[2][1, :, 5], atol=1e-5)
    assert torch.allclose(h[0, 7], states[0][0, :, 7], atol=1e-5)
    assert not tiny_wavlm.model.training
    assert not any(p.requires_grad for p in tiny_wavlm.model.parameters())


def test_wavlm_losses(tiny_wavlm):
    torch.manual_seed(5)
    wd = WavLMDiscriminator(tiny_wavlm.hidden_size, tiny_wavlm.num_states, 8)
    wl = WavLMLoss(tiny_wavlm)
    y = torch.randn(2, 1, 8192) * 0.1
    y_hat = (torch.randn(2, 1, 8192) * 0.1).requires_grad_()
    h_real, h_fake = wl.hidden_real(y), wl.hidden_fake(y_hat)
    assert not h_real.requires_grad and h_fake.requires_grad

    loss_wd = wl.discriminator(wd, h_real, h_fake)
    expected = ((1 - wd(h_real)) ** 2).mean() + (wd(h_fake.detach()) ** 2).mean()
    assert torch.allclose(loss_wd, expected)
    loss_wd.backward()
    assert y_hat.grad is None and wd.pre.weight_v.grad is not None

    loss_lm, loss_lm_gen = wl.generator(wd, h_real, h_fake)
    states_r = h_real.view(2, 3, 32, -1)
    states_f = h_fake.view(2, 3, 32, -1)
    assert torch.allclose(loss_lm, sum((states_r[:, k] - states_f[:, k]).abs().mean() for k in range(3)))
    assert torch.allclose(loss_lm, wavlm_feature_loss(h_real, h_fake, 3))
    assert torch.allclose(loss_lm_gen, ((1 - wd(h_fake)) ** 2).mean())
    (loss_lm + loss_lm_gen).backward()
    assert y_hat.grad is not None and y_hat.grad.abs().sum() > 0


def test_missing_wavlm_folder_says_where_and_how(tmp_path):
    with pytest.raises(KoeError) as err:
        WavLMFeatures(tmp_path / "slm" / "wavlm-base-plus")
    text = str(err.value)
    assert str(tmp_path / "slm" / "wavlm-base-plus") in text
    assert "microsoft/wavlm-base-plus" in text and "python -m pipeline.download wavlm" in text and "HF_ENDPOINT" in text
    (tmp_path / "empty").mkdir()
    with pytest.raises(KoeError, match="config.json"):
        WavLMFeatures(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(KoeError, match="no weights"):
        check_wavlm_dir(tmp_path / "empty")
