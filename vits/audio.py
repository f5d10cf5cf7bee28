"""Torch-free audio helpers shared by the torch and the onnxruntime synthesizers."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from vits.errors import KoeError


def join_with_pauses(pieces: Iterable[np.ndarray], sampling_rate: int, pause: float) -> np.ndarray:
    """Concatenate mono float32 pieces with `pause` seconds of silence between them.

    Raises KoeError when there is no piece at all (the text had nothing to pronounce).
    """
    gap = np.zeros(int(round(max(pause, 0.0) * sampling_rate)), dtype=np.float32)
    parts: list[np.ndarray] = []
    for audio in pieces:
        if parts:
            parts.append(gap)
        parts.append(audio)
    if not parts:
        raise KoeError("the text has nothing to pronounce", fix="type words in the chosen language")
    return np.concatenate(parts).astype(np.float32, copy=False)
