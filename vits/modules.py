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
