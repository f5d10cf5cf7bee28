"""Basic layers shared by the generator and the discriminators."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LayerNorm(nn.Module):
    """Channel LayerNorm for [B, C, T] with Bert-VITS2's parameter names `gamma`/`beta` (spec §4.2)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, -1)
        x = F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


def weight_norm(module: nn.Module) -> nn.Module:
    """Legacy weight norm (keys `weight_g`/`weight_v`, dim 0), as Bert-VITS2 checkpoints store it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module, name="weight", dim=0)


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Fold weight_g/weight_v into a plain `weight` (for inference speed)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.remove_weight_norm(module, name="weight")


class WN(nn.Module):
    """Non-causal WaveNet stack with weight-normed convs and optional speaker conditioning (spec §4.7).

    Args:
        hidden_channels: residual width; kernel_size, dilation_rate: conv i uses dilation dilation_rate**i.
        n_layers: depth (the last layer is skip-only); gin_channels: speaker vector size (0 = none).
    """

    def __init__(self, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 gin_channels: int = 0, p_dropout: float = 0.0):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.drop = nn.Dropout(p_dropout)
        if gin_channels != 0:
            self.cond_layer = weight_norm(nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1))
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(weight_norm(nn.Conv1d(hidden_channels, 2 * hidden_channels, kernel_size,
                                                        dilation=dilation, padding=padding)))
            res_skip_channels = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(weight_norm(nn.Conv1d(hidden_channels, res_skip_channels, 1)))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, T], x_mask [B, 1, T], g [B, gin, 1] or None -> skip sum [B, C, T] (masked)."""
        hidden = self.hidden_channels
        output = torch.zeros_like(x)
        if g is not None:
            g = self.cond_layer(g)
        for i in range(self.n_layers):
            x_in = self.in_layers[i](x)
            if g is not None:
                x_in = x_in + g[:, 2 * hidden * i : 2 * hidden * (i + 1)]
            acts = torch.tanh(x_in[:, :hidden]) * torch.sigmoid(x_in[:, hidden:])
            res_skip = self.res_skip_layers[i](self.drop(acts))
            if i < self.n_layers - 1:
                x = (x + res_skip[:, :hidden]) * x_mask
                output = output + res_skip[:, hidden:]
            else:
                output = output + res_skip
        return output * x_mask
