"""Numba kernel of monotonic alignment search (spec §5.2 step 4)."""

from __future__ import annotations

import numba
import numpy as np

_NEG = np.float32(-1e9)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def maximum_path_each(path, value, t_y, t_x):
    """Best monotonic path for one item, in place.

    Args:
        path: [T_y, T_x] uint8 zeros; receives 1 on the chosen cells.
        value: [T_y, T_x] float32 log-likelihoods; overwritten with the DP table.
        t_y, t_x: valid frames and tokens of this item.
    """
    if t_y <= 0 or t_x <= 0:
        return
    for y in range(t_y):
        for x in range(max(0, t_x + y - t_y), min(t_x, y + 1)):
            v_cur = _NEG if x == y else value[y - 1, x]
            if x == 0:
                v_prev = np.float32(0.0) if y == 0 else _NEG
            else:
                v_prev = value[y - 1, x - 1]
            value[y, x] += max(v_prev, v_cur)
    index = t_x - 1
    for y in range(t_y - 1, -1, -1):
        path[y, index] = 1
        # y == 0 is the last row: the step decision there cannot change the path.
        if index != 0 and y > 0 and (index == y or value[y - 1, index] < value[y - 1, index - 1]):
            index -= 1


# Serial on purpose: a batch takes milliseconds, and numba's OpenMP threads would make later
# fork()s (DataLoader workers) unsafe.
@numba.njit(cache=True, nogil=True, boundscheck=False)
def maximum_path_batch(paths, values, t_ys, t_xs):
    """`maximum_path_each` over a batch ([B, T_y, T_x] arrays, [B] lengths)."""
    for b in range(paths.shape[0]):
        maximum_path_each(paths[b], values[b], t_ys[b], t_xs[b])
