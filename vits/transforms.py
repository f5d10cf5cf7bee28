"""Rational-quadratic spline with linear tails (Durkan et al. 2019), as used by the SDP's ConvFlow (spec §4.9)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def _bin_index(knots: torch.Tensor, inputs: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Index of the bin holding each input: (number of knots <= input) - 1, last knot nudged by eps."""
    knots = torch.cat([knots[..., :-1], knots[..., -1:] + eps], dim=-1)
    return (inputs.unsqueeze(-1) >= knots).sum(dim=-1, keepdim=True) - 1


def _knots(unnormalized: torch.Tensor, low: float, high: float, min_size: float):
    """Softmax bin sizes (at least min_size), their knots from low to high with exact ends, and sizes."""
    num_bins = unnormalized.shape[-1]
    sizes = min_size + (1 - min_size * num_bins) * F.softmax(unnormalized, dim=-1)
    cum = F.pad(torch.cumsum(sizes, dim=-1), (1, 0), value=0.0)
    cum = (high - low) * cum + low
    cum = torch.cat([torch.full_like(cum[..., :1], low), cum[..., 1:-1], torch.full_like(cum[..., :1], high)], -1)
    return cum, cum[..., 1:] - cum[..., :-1]


def rational_quadratic_spline(inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
                              inverse: bool = False, tail_bound: float = 5.0):
    """Monotone spline on [-tail_bound, tail_bound], identity outside.

    Args:
        inputs: [...] values to transform.
        unnormalized_widths, unnormalized_heights: [..., K] bin logits.
        unnormalized_derivatives: [..., K-1] inner-knot derivative logits (the two ends are fixed to slope 1).
        inverse: apply the inverse map.
    Returns:
        (outputs [...], logabsdet [...]) where logabsdet is log|d out / d in| (0 outside the interval).
    """
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    # Clamped copy so the (discarded) outside lanes stay finite and give zero, not NaN, gradients.
    x = inputs.clamp(-tail_bound, tail_bound)
    end_slope = math.log(math.exp(1 - MIN_DERIVATIVE) - 1)  # softplus(end_slope) + min = 1: linear tails
    ud = F.pad(unnormalized_derivatives, (1, 1), value=end_slope)
    cumwidths, widths = _knots(unnormalized_widths, -tail_bound, tail_bound, MIN_BIN_WIDTH)
    cumheights, heights = _knots(unnormalized_heights, -tail_bound, tail_bound, MIN_BIN_HEIGHT)
    derivatives = MIN_DERIVATIVE + F.softplus(ud)

    idx = _bin_index(cumheights if inverse else cumwidths, x)
    x_k = cumwidths.gather(-1, idx)[..., 0]
    w_k = widths.gather(-1, idx)[..., 0]
    y_k = cumheights.gather(-1, idx)[..., 0]
    delta = heights / widths
    s = delta.gather(-1, idx)[..., 0]
    d0 = derivatives.gather(-1, idx)[..., 0]
    d1 = derivatives[..., 1:].gather(-1, idx)[..., 0]
    h_k = heights.gather(-1, idx)[..., 0]
    slope_sum = d0 + d1 - 2 * s

    if inverse:
        dy = x - y_k
        a = dy * slope_sum + h_k * (s - d0)
        b = h_k * d0 - dy * slope_sum
        c = -s * dy
        disc = b.pow(2) - 4 * a * c
        theta = (2 * c) / (-b - torch.sqrt(disc))
        out = theta * w_k + x_k
    else:
        theta = (x - x_k) / w_k
    t1t = theta * (1 - theta)
    denominator = s + slope_sum * t1t
    if not inverse:
        out = y_k + h_k * (s * theta.pow(2) + d0 * t1t) / denominator
    deriv_num = s.pow(2) * (d1 * theta.pow(2) + 2 * s * t1t + d0 * (1 - theta).pow(2))
    logabsdet = torch.log(deriv_num) - 2 * torch.log(denominator)
    if inverse:
        logabsdet = -logabsdet
    out = torch.where(inside, out, inputs)
    logabsdet = torch.where(inside, logabsdet, torch.zeros_like(logabsdet))
    return out, logabsdet
