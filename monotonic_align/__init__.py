"""Monotonic alignment search (MAS) used by VITS training to align frames to text tokens."""

from __future__ import annotations

import numpy as np
import torch

from monotonic_align.core import maximum_path_batch

__all__ = ["maximum_path"]


def maximum_path(neg_cent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Most likely monotonic hard alignment of frames to tokens.

    Each valid frame is assigned exactly one token, tokens are visited in order, and every token gets
    at least one frame when t_x <= t_y. Float32 DP on the CPU (numba), as the reference does.

    Args:
        neg_cent: [B, T_y, T_x] log-likelihood of frame y under token x.
        mask: [B, T_y, T_x] 0/1 validity (x_mask ⊗ y_mask).
    Returns:
        path [B, T_y, T_x] of 0/1 with neg_cent's device and dtype.
    """
    b, t_y, t_x = neg_cent.shape
    with torch.no_grad():
        # Lengths ride along with the scores so there is a single device -> host copy.
        # Counting in int64 keeps long lengths exact even for half-precision masks.
        valid = mask != 0
        lengths = torch.stack([valid[:, :, 0].sum(1), valid[:, 0, :].sum(1)], dim=1).to(torch.float32)
        packed = torch.cat([neg_cent.detach().to(torch.float32).reshape(b, -1), lengths], dim=1).cpu().numpy()
    values = np.ascontiguousarray(packed[:, : t_y * t_x]).reshape(b, t_y, t_x)
    t_ys = np.ascontiguousarray(packed[:, -2]).astype(np.int64)
    t_xs = np.ascontiguousarray(packed[:, -1]).astype(np.int64)
    paths = np.zeros((b, t_y, t_x), dtype=np.uint8)
    if b:
        maximum_path_batch(paths, values, t_ys, t_xs)
    return torch.from_numpy(paths).to(device=neg_cent.device).to(dtype=neg_cent.dtype)
