"""The three Bert-VITS2 2.3 discriminators (spec §3.3-3.5, §4.13-4.15).

State-dict names, order and shapes match `D_*.pth`, `DUR_*.pth` and `WD_*.pth` exactly, so reference
checkpoints load with `strict=True`.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from vits.commons import get_padding
from vits.errors import KoeError
from vits.modules import LayerNorm, weight_norm

LRELU_SLOPE = 0.1
PERIODS = (2, 3, 5, 7, 11)
# Tests only: divides the MPD's channel widths (and groups) so training tests do not train and save the
# 47M-parameter network (~560 MB D files with optimizer state). Unset = Bert-VITS2's network; nothing
# outside tests/ sets it, and D files built with it load in no Bert-VITS2 tool.
TEST_MPD_DIVISOR_ENV = "KOE_TESTS_ONLY_MPD_DIVISOR"
TEST_MPD_DIVISORS = (1, 2, 4, 8, 16)


def _norm(use_spectral_norm: bool):
    """Weight norm (legacy `weight_g`/`weight_v` keys) unless spectral norm is asked for."""
    return nn.utils.spectral_norm if use_spectral_norm else weight_norm


class DiscriminatorP(nn.Module):
    """HiFi-GAN period discriminator: the waveform folded into [T/p, p] and scanned with (5,1) convs."""

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3, use_spectral_norm: bool = False,
                 width_divisor: int = 1):
        super().__init__()
        self.period = period
        norm = _norm(use_spectral_norm)
        pad = (get_padding(kernel_size, 1), 0)
        channels = [1] + [c // width_divisor for c in (32, 128, 512, 1024)]
        convs = [norm(nn.Conv2d(c_in, c_out, (kernel_size, 1), (stride, 1), padding=pad))
                 for c_in, c_out in zip(channels[:-1], channels[1:])]
        top = channels[-1]
        convs.append(norm(nn.Conv2d(top, top, (kernel_size, 1), 1, padding=pad)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = norm(nn.Conv2d(top, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x [B,1,T] -> (logits [B, N], 6 feature maps)."""
        b, c, t = x.shape
        if t % self.period != 0:
            n_pad = self.period - (t % self.period)
            x = F.pad(x, (0, n_pad), "reflect")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)
        return _conv_stack(self.convs, self.conv_post, x)


def _conv_stack(convs: nn.ModuleList, conv_post: nn.Module, x: torch.Tensor):
    """Each conv + LReLU(0.1), then conv_post; returns (flattened logits, one map per conv + the post map)."""
    fmap = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        fmap.append(x)
    x = conv_post(x)
    fmap.append(x)
    return torch.flatten(x, 1, -1), fmap


class DiscriminatorS(nn.Module):
    """HiFi-GAN scale discriminator on the raw waveform (grouped strided 1-D convs)."""

    def __init__(self, use_spectral_norm: bool = False, width_divisor: int = 1):
        super().__init__()
        norm = _norm(use_spectral_norm)
        c = [n // width_divisor for n in (16, 64, 256, 1024)]
        g = [max(1, n // width_divisor) for n in (4, 16, 64, 256)]
        self.convs = nn.ModuleList([
            norm(nn.Conv1d(1, c[0], 15, 1, padding=7)),
            norm(nn.Conv1d(c[0], c[1], 41, 4, groups=g[0], padding=20)),
            norm(nn.Conv1d(c[1], c[2], 41, 4, groups=g[1], padding=20)),
            norm(nn.Conv1d(c[2], c[3], 41, 4, groups=g[2], padding=20)),
            norm(nn.Conv1d(c[3], c[3], 41, 4, groups=g[3], padding=20)),
            norm(nn.Conv1d(c[3], c[3], 5, 1, padding=2)),
        ])
        self.conv_post = norm(nn.Conv1d(c[3], 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x [B,1,T] -> (logits [B, N], 7 feature maps)."""
        return _conv_stack(self.convs, self.conv_post, x)


class MultiPeriodDiscriminator(nn.Module):
    """One scale discriminator plus period discriminators for periods 2, 3, 5, 7, 11 (`D_*.pth`)."""

    def __init__(self, use_spectral_norm: bool = False, width_divisor: int = 1):
        """`width_divisor` > 1 is for tests only (see TEST_MPD_DIVISOR_ENV); 1 is the spec's network."""
        super().__init__()
        if width_divisor not in TEST_MPD_DIVISORS:
            raise KoeError(f"MPD width divisor {width_divisor} is not one of {TEST_MPD_DIVISORS}",
                           where=TEST_MPD_DIVISOR_ENV, fix=f"unset {TEST_MPD_DIVISOR_ENV} (tests only)")
        discs = [DiscriminatorS(use_spectral_norm, width_divisor)]
        discs += [DiscriminatorP(p, use_spectral_norm=use_spectral_norm, width_divisor=width_divisor)
                  for p in PERIODS]
        self.discriminators = nn.ModuleList(discs)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        """Score real and generated waveforms.

        Args:
            y, y_hat: [B, 1, T] real and generated audio.
        Returns:
            (real_logits, fake_logits, real_fmaps, fake_fmaps): lists with one entry per sub-discriminator;
            each fmaps entry is that sub-discriminator's list of feature maps.
        """
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for disc in self.discriminators:
            y_d_r, fmap_r = disc(y)
            y_d_g, fmap_g = disc(y_hat)
            y_d_rs.append(y_d_r)
            y_d_gs.append(y_d_g)
            fmap_rs.append(fmap_r)
            fmap_gs.append(fmap_g)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs


class DurationDiscriminator(nn.Module):
    """2.3 duration discriminator: conv stack + BiLSTM scoring (text hidden, log-duration) pairs (`DUR_*.pth`)."""

    def __init__(self, in_channels: int, filter_channels: int, kernel_size: int, p_dropout: float,
                 gin_channels: int = 0):
        super().__init__()
        self.in_channels = in_channels
        self.filter_channels = filter_channels
        self.kernel_size = kernel_size
        self.p_dropout = p_dropout
        self.gin_channels = gin_channels

        self.drop = nn.Dropout(p_dropout)
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_1 = LayerNorm(filter_channels)
        self.conv_2 = nn.Conv1d(filter_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_2 = LayerNorm(filter_channels)
        self.dur_proj = nn.Conv1d(1, filter_channels, 1)
        self.LSTM = nn.LSTM(2 * filter_channels, filter_channels, batch_first=True, bidirectional=True)
        if gin_channels != 0:
            self.cond = nn.Conv1d(gin_channels, in_channels, 1)
        self.output_layer = nn.Sequential(nn.Linear(2 * filter_channels, 1), nn.Sigmoid())

    def forward_probability(self, x: torch.Tensor, dur: torch.Tensor) -> torch.Tensor:
        """x [B,F,T] features, dur [B,1,T] log-durations -> probability 'real' [B,T,1]."""
        dur = self.dur_proj(dur)
        x = torch.cat([x, dur], dim=1).transpose(1, 2)
        # No packing on purpose: padded frames feed the backward direction as in the reference.
        x, _ = self.LSTM(x)
        return self.output_layer(x)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, dur_r: torch.Tensor, dur_hat: torch.Tensor,
                g: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Score real and predicted log-durations.

        Args:
            x: [B, in_channels, T_x] text-encoder hidden states (detached here).
            x_mask: [B, 1, T_x] float mask.
            dur_r, dur_hat: [B, 1, T_x] real (from MAS) and predicted log-durations.
            g: [B, gin_channels, 1] speaker embedding (detached here), or None.
        Returns:
            [prob_r, prob_hat], each [B, T_x, 1] in (0, 1).
        """
        x = torch.detach(x)
        if g is not None:
            x = x + self.cond(torch.detach(g))
        x = self.drop(self.norm_1(torch.relu(self.conv_1(x * x_mask))))
        x = self.drop(self.norm_2(torch.relu(self.conv_2(x * x_mask))))
        return [self.forward_probability(x, dur) for dur in (dur_r, dur_hat)]


class DurationDiscriminator22(nn.Module):
    """2.2 duration discriminator: convolutions only, no LSTM (2.2 spec §3.4, §4.6; `DUR_*.pth` of 2.2).

    Same constructor and call as `DurationDiscriminator`; each output depends on a 9-position window.
    """

    def __init__(self, in_channels: int, filter_channels: int, kernel_size: int, p_dropout: float,
                 gin_channels: int = 0):
        super().__init__()
        self.in_channels = in_channels
        self.filter_channels = filter_channels
        self.gin_channels = gin_channels
        pad = kernel_size // 2
        self.drop = nn.Dropout(p_dropout)
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size, padding=pad)
        self.norm_1 = LayerNorm(filter_channels)
        self.conv_2 = nn.Conv1d(filter_channels, filter_channels, kernel_size, padding=pad)
        self.norm_2 = LayerNorm(filter_channels)
        self.dur_proj = nn.Conv1d(1, filter_channels, 1)
        self.pre_out_conv_1 = nn.Conv1d(2 * filter_channels, filter_channels, kernel_size, padding=pad)
        self.pre_out_norm_1 = LayerNorm(filter_channels)
        self.pre_out_conv_2 = nn.Conv1d(filter_channels, filter_channels, kernel_size, padding=pad)
        self.pre_out_norm_2 = LayerNorm(filter_channels)
        if gin_channels != 0:
            self.cond = nn.Conv1d(gin_channels, in_channels, 1)
        self.output_layer = nn.Sequential(nn.Linear(filter_channels, 1), nn.Sigmoid())

    def forward_probability(self, x: torch.Tensor, x_mask: torch.Tensor, dur: torch.Tensor) -> torch.Tensor:
        """x [B,F,T] features, dur [B,1,T] log-durations (not masked, as 2.2) -> probability [B,T,1]."""
        x = torch.cat([x, self.dur_proj(dur)], dim=1)
        x = self.drop(self.pre_out_norm_1(torch.relu(self.pre_out_conv_1(x * x_mask))))
        x = self.drop(self.pre_out_norm_2(torch.relu(self.pre_out_conv_2(x * x_mask))))
        return self.output_layer((x * x_mask).transpose(1, 2))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, dur_r: torch.Tensor, dur_hat: torch.Tensor,
                g: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Score two log-duration tensors [B,1,T_x] for hidden states x [B,C,T_x] (detached here).

        Returns [prob for dur_r, prob for dur_hat], each [B, T_x, 1]. (2.2's training loop passes the
        predicted durations first and the MAS ones second; see `vits.train.step`.)
        """
        x = torch.detach(x)
        if g is not None:
            x = x + self.cond(torch.detach(g))
        x = self.drop(self.norm_1(torch.relu(self.conv_1(x * x_mask))))
        x = self.drop(self.norm_2(torch.relu(self.conv_2(x * x_mask))))
        return [self.forward_probability(x, x_mask, dur) for dur in (dur_r, dur_hat)]


class WavLMDiscriminator(nn.Module):
    """Discriminator on stacked WavLM hidden states [B, slm_hidden*slm_layers, F] (`WD_*.pth`)."""

    def __init__(self, slm_hidden: int = 768, slm_layers: int = 13, initial_channel: int = 64,
                 use_spectral_norm: bool = False):
        super().__init__()
        norm = _norm(use_spectral_norm)
        c = initial_channel
        self.pre = norm(nn.Conv1d(slm_hidden * slm_layers, c, 1, 1, padding=0))
        self.convs = nn.ModuleList([
            norm(nn.Conv1d(c, c * 2, kernel_size=5, padding=2)),
            norm(nn.Conv1d(c * 2, c * 4, kernel_size=5, padding=2)),
            norm(nn.Conv1d(c * 4, c * 4, 5, 1, padding=2)),
        ])
        self.conv_post = norm(nn.Conv1d(c * 4, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, slm_hidden*slm_layers, F] -> logits [B, F]."""
        x = self.pre(x)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
        return torch.flatten(self.conv_post(x), 1, -1)


def build_discriminators(cfg) -> tuple[MultiPeriodDiscriminator, DurationDiscriminator | None,
                                       WavLMDiscriminator]:
    """Build (mpd, duration discriminator or None, WavLM discriminator) as Bert-VITS2's train_ms.py does.

    Args:
        cfg: a vits.config.VoiceConfig.
    Returns:
        The three networks; the duration discriminator is None when
        `model.use_duration_discriminator` is false.
    """
    m = cfg.model
    divisor = os.environ.get(TEST_MPD_DIVISOR_ENV, "1")
    if not divisor.isdigit():
        raise KoeError(f"{TEST_MPD_DIVISOR_ENV}={divisor!r} is not a number", where=TEST_MPD_DIVISOR_ENV,
                       fix=f"unset {TEST_MPD_DIVISOR_ENV}: it is for the test suite only")
    mpd = MultiPeriodDiscriminator(m.use_spectral_norm, int(divisor))
    dur = None
    if m.use_duration_discriminator:
        gin = m.gin_channels if cfg.data.n_speakers != 0 else 0
        # A 2.2 voice (config architecture "2.2") has the convolutional variant.
        kind = DurationDiscriminator22 if cfg.architecture == "2.2" else DurationDiscriminator
        dur = kind(m.hidden_channels, m.hidden_channels, 3, 0.1, gin_channels=gin)
    wd = WavLMDiscriminator(m.slm.hidden, m.slm.nlayers, m.slm.initial_channel)
    return mpd, dur, wd
