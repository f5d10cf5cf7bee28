"""Small tensor helpers shared by the networks (spec §4.1)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding for an odd kernel with dilation."""
    return (kernel_size * dilation - dilation) // 2


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """Bool mask [B, T]: mask[b, t] = t < lengths[b]."""
    if max_length is None:
        max_length = int(lengths.max())
    positions = torch.arange(max_length, dtype=lengths.dtype, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def generate_path(duration: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hard alignment from integer durations.

    Args:
        duration: [B, 1, T_x] frames per token.
        mask: [B, 1, T_y, T_x].
    Returns:
        path [B, 1, T_y, T_x]: path[b,0,y,x] = 1 iff cumsum[x-1] <= y < cumsum[x].
    """
    t_y = mask.shape[2]
    cum = torch.cumsum(duration, dim=-1)  # [B,1,T_x]
    frames = torch.arange(t_y, device=duration.device, dtype=cum.dtype).view(1, 1, t_y, 1)
    upper = cum.unsqueeze(2)  # [B,1,1,T_x]
    lower = F.pad(cum, (1, 0))[..., :-1].unsqueeze(2)
    path = ((frames < upper) & (frames >= lower)).to(mask.dtype)
    return path * mask


def slice_segments(x: torch.Tensor, starts: torch.Tensor, size: int) -> torch.Tensor:
    """x [B, C, T] -> [B, C, size], item b taken from starts[b]."""
    index = starts.view(-1, 1, 1).long() + torch.arange(size, device=x.device).view(1, 1, -1)
    return torch.gather(x, 2, index.expand(x.shape[0], x.shape[1], size))


def rand_slice_segments(x: torch.Tensor, lengths: torch.Tensor, size: int):
    """Random [B, C, size] slices (one torch.rand([B]) draw, spec §4.1); returns (slices, starts)."""
    b = x.shape[0]
    start_max = torch.clamp(lengths - size + 1, min=0)
    starts = (torch.rand([b], device=x.device) * start_max).to(dtype=torch.long)
    return slice_segments(x, starts, size), starts


def init_weights(module: torch.nn.Module, mean: float = 0.0, std: float = 0.01) -> None:
    """N(mean, std) init for conv weights (HiFi-GAN convention)."""
    if "Conv" in module.__class__.__name__:
        module.weight.data.normal_(mean, std)


def fused_add_tanh_sigmoid_multiply(a: torch.Tensor, b: torch.Tensor, n_channels: int) -> torch.Tensor:
    """tanh(a+b)[:n] * sigmoid(a+b)[n:] (WaveNet gate)."""
    s = a + b
    return torch.tanh(s[:, :n_channels]) * torch.sigmoid(s[:, n_channels:])
