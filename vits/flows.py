"""Normalising flows: the SDP's spline flows and the prior flow between z and z_p (spec §4.9).

Every flow takes (x, x_mask, g=None, reverse=False); forward returns (y, logdet [B]), reverse returns x.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from vits.attentions import Encoder
from vits.modules import WN, LayerNorm
from vits.transforms import rational_quadratic_spline


class Flip(nn.Module):
    """Reverse the channel order (no parameters, logdet 0)."""

    def forward(self, x, x_mask=None, g=None, reverse: bool = False):
        x = torch.flip(x, [1])
        if reverse:
            return x
        return x, torch.zeros(x.size(0), dtype=x.dtype, device=x.device)


class Log(nn.Module):
    """y = log(max(x, 1e-5)) on the mask; logdet = Σ -y."""

    def forward(self, x, x_mask, g=None, reverse: bool = False):
        if reverse:
            return torch.exp(x) * x_mask
        y = torch.log(torch.clamp_min(x, 1e-5)) * x_mask
        return y, torch.sum(-y, [1, 2])


class ElementwiseAffine(nn.Module):
    """y = m + exp(logs)·x per channel; parameters `m`, `logs` [C, 1]."""

    def __init__(self, channels: int):
        super().__init__()
        self.m = nn.Parameter(torch.zeros(channels, 1))
        self.logs = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x, x_mask, g=None, reverse: bool = False):
        if reverse:
            return (x - self.m) * torch.exp(-self.logs) * x_mask
        y = (self.m + torch.exp(self.logs) * x) * x_mask
        return y, torch.sum(self.logs * x_mask, [1, 2])


class DDSConv(nn.Module):
    """Dilated depth-separable conv stack with LayerNorm + GELU (dilation kernel_size**i)."""

    def __init__(self, channels: int, kernel_size: int, n_layers: int, p_dropout: float = 0.0):
        super().__init__()
        self.n_layers = n_layers
        self.drop = nn.Dropout(p_dropout)
        self.convs_sep = nn.ModuleList()
        self.convs_1x1 = nn.ModuleList()
        self.norms_1 = nn.ModuleList()
        self.norms_2 = nn.ModuleList()
        for i in range(n_layers):
            dilation = kernel_size**i
            padding = (kernel_size * dilation - dilation) // 2
            self.convs_sep.append(nn.Conv1d(channels, channels, kernel_size, groups=channels,
                                            dilation=dilation, padding=padding))
            self.convs_1x1.append(nn.Conv1d(channels, channels, 1))
            self.norms_1.append(LayerNorm(channels))
            self.norms_2.append(LayerNorm(channels))

    def forward(self, x, x_mask, g=None):
        """x [B, C, T] (+ g broadcast if given) -> [B, C, T] masked."""
        if g is not None:
            x = x + g
        for i in range(self.n_layers):
            y = self.convs_sep[i](x * x_mask)
            y = F.gelu(self.norms_1[i](y))
            y = self.convs_1x1[i](y)
            y = F.gelu(self.norms_2[i](y))
            x = x + self.drop(y)
        return x * x_mask


class ConvFlow(nn.Module):
    """Coupling layer whose second half goes through a rational-quadratic spline (SDP flows)."""

    def __init__(self, in_channels: int, filter_channels: int, kernel_size: int, n_layers: int,
                 num_bins: int = 10, tail_bound: float = 5.0):
        super().__init__()
        self.filter_channels = filter_channels
        self.num_bins = num_bins
        self.tail_bound = tail_bound
        self.half_channels = in_channels // 2
        self.pre = nn.Conv1d(self.half_channels, filter_channels, 1)
        self.convs = DDSConv(filter_channels, kernel_size, n_layers, p_dropout=0.0)
        self.proj = nn.Conv1d(filter_channels, self.half_channels * (num_bins * 3 - 1), 1)
        self.proj.weight.data.zero_()
        self.proj.bias.data.zero_()

    def forward(self, x, x_mask, g=None, reverse: bool = False):
        x0, x1 = torch.split(x, [self.half_channels] * 2, 1)
        h = self.convs(self.pre(x0), x_mask, g=g)
        h = self.proj(h) * x_mask
        b, c, t = x0.shape
        h = h.reshape(b, c, -1, t).permute(0, 1, 3, 2)  # [B, c, T, 3K-1]
        scale = math.sqrt(self.filter_channels)
        k = self.num_bins
        x1, logabsdet = rational_quadratic_spline(x1, h[..., :k] / scale, h[..., k : 2 * k] / scale,
                                                  h[..., 2 * k :], inverse=reverse, tail_bound=self.tail_bound)
        x = torch.cat([x0, x1], 1) * x_mask
        if reverse:
            return x
        return x, torch.sum(logabsdet * x_mask, [1, 2])


class TransformerCouplingLayer(nn.Module):
    """Mean-only affine coupling whose shift comes from a relative-position transformer (spec §4.9)."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, n_layers: int, n_heads: int,
                 p_dropout: float = 0.0, filter_channels: int = 0, mean_only: bool = False,
                 gin_channels: int = 0):
        super().__init__()
        if channels % 2 != 0:
            raise ValueError("channels should be divisible by 2")
        self.half_channels = channels // 2
        self.mean_only = mean_only
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = Encoder(hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout,
                           gin_channels=gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half_channels * (2 - mean_only), 1)
        self.post.weight.data.zero_()
        self.post.bias.data.zero_()

    def forward(self, x, x_mask, g=None, reverse: bool = False):
        return _affine_coupling(self, x, x_mask, g, reverse)


class ResidualCouplingLayer(nn.Module):
    """Affine coupling whose statistics come from a WaveNet stack (the non-default VITS flow)."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 p_dropout: float = 0.0, gin_channels: int = 0, mean_only: bool = False):
        super().__init__()
        if channels % 2 != 0:
            raise ValueError("channels should be divisible by 2")
        self.half_channels = channels // 2
        self.mean_only = mean_only
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, p_dropout=p_dropout,
                      gin_channels=gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half_channels * (2 - mean_only), 1)
        self.post.weight.data.zero_()
        self.post.bias.data.zero_()

    def forward(self, x, x_mask, g=None, reverse: bool = False):
        return _affine_coupling(self, x, x_mask, g, reverse)


def _affine_coupling(layer, x, x_mask, g, reverse):
    """Shared coupling step: x1 <- m + x1·exp(logs) (forward) or (x1 - m)·exp(-logs) (reverse)."""
    x0, x1 = torch.split(x, [layer.half_channels] * 2, 1)
    h = layer.enc(layer.pre(x0) * x_mask, x_mask, g=g)
    stats = layer.post(h) * x_mask
    if layer.mean_only:
        # logs ≡ 0: exp(±0) is exactly 1, so skip it.
        if reverse:
            return torch.cat([x0, (x1 - stats) * x_mask], 1)
        return torch.cat([x0, stats + x1 * x_mask], 1), torch.zeros(x.size(0), dtype=x.dtype, device=x.device)
    m, logs = torch.split(stats, [layer.half_channels] * 2, 1)
    if reverse:
        return torch.cat([x0, (x1 - m) * torch.exp(-logs) * x_mask], 1)
    return torch.cat([x0, m + x1 * torch.exp(logs) * x_mask], 1), torch.sum(logs, [1, 2])


class TransformerCouplingBlock(nn.Module):
    """[TCL, Flip] × n_flows between the posterior latent z and the prior latent z_p (flow.flows.*)."""

    def __init__(self, channels: int, hidden_channels: int, filter_channels: int, n_heads: int, n_layers: int,
                 kernel_size: int, p_dropout: float, n_flows: int = 4, gin_channels: int = 0,
                 share_parameter: bool = False):
        super().__init__()
        if share_parameter:
            raise ValueError("flow_share_parameter=True is not supported (Bert-VITS2 2.3 does not use it)")
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(TransformerCouplingLayer(channels, hidden_channels, kernel_size, n_layers, n_heads,
                                                       p_dropout, filter_channels, mean_only=True,
                                                       gin_channels=gin_channels))
            self.flows.append(Flip())

    def forward(self, x, x_mask, g=None, reverse: bool = False):
        """z -> z_p (forward, returns x only) or z_p -> z (reverse)."""
        return _run_flows(self.flows, x, x_mask, g, reverse)


class ResidualCouplingBlock(nn.Module):
    """[ResidualCouplingLayer, Flip] × n_flows (use_transformer_flow=False)."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 n_flows: int = 4, gin_channels: int = 0):
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(ResidualCouplingLayer(channels, hidden_channels, kernel_size, dilation_rate,
                                                    n_layers, gin_channels=gin_channels, mean_only=True))
            self.flows.append(Flip())

    def forward(self, x, x_mask, g=None, reverse: bool = False):
        """z -> z_p (forward, returns x only) or z_p -> z (reverse)."""
        return _run_flows(self.flows, x, x_mask, g, reverse)


def _run_flows(flows, x, x_mask, g, reverse):
    if not reverse:
        for flow in flows:
            x, _ = flow(x, x_mask, g=g)
    else:
        for flow in reversed(flows):
            x = flow(x, x_mask, g=g, reverse=True)
    return x
