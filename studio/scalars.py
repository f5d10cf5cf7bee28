"""Reads training scalars (losses, learning rate) from TensorBoard event files, incrementally.

Each refresh reads only what was appended since the last one, so the Train tab can poll every few
seconds during a long run. A resumed run writes a new event file; a step seen again takes the newest value.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

# The curves the Train tab draws: a label and the tag endings that count as that curve.
LOSS_CURVES: dict[str, tuple[str, ...]] = {
    "G total": ("g/total", "g_total", "loss_g"),
    "D total": ("d/total", "d_total", "loss_d"),
    "mel": ("g/mel", "loss_mel"),
    "kl": ("g/kl", "loss_kl"),
    "dur": ("g/dur", "loss_dur"),
}


class ScalarReader:
    """Incremental reader of every ``events.out.tfevents.*`` file under `logdir` (sub-folders too).

    Args:
        logdir: the TensorBoard folder, e.g. ``Data/<voice>/logs/tensorboard``; it may not exist yet.
    """

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self._loaders: dict[Path, EventFileLoader] = {}
        self._data: dict[str, dict[int, float]] = {}
        # Several browser sessions poll the same reader; its file loaders are not re-entrant.
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Read new events from all files (new files included); returns the number of new points."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> int:
        if not self.logdir.is_dir():
            return 0
        for path in sorted(self.logdir.rglob("events.out.tfevents.*")):
            if path not in self._loaders and path.is_file():
                self._loaders[path] = EventFileLoader(str(path))
        added = 0
        # Older files first, so a resumed run's newer values win on repeated steps.
        for path, loader in sorted(self._loaders.items(), key=lambda kv: kv[0].stat().st_mtime
                                   if kv[0].exists() else 0):
            rel = path.parent.relative_to(self.logdir)
            prefix = "" if str(rel) == "." else f"{rel.as_posix()}/"
            try:
                events = list(loader.Load())
            except Exception:  # noqa: BLE001 - a truncated file being written is read again next time
                continue
            for event in events:
                if not event.HasField("summary"):
                    continue
                for value in event.summary.value:
                    number = _scalar(value)
                    if number is None:
                        continue
                    self._data.setdefault(prefix + value.tag, {})[int(event.step)] = number
                    added += 1
        return added

    def tags(self) -> list[str]:
        """Every scalar tag seen so far, sorted."""
        return sorted(self._data)

    def series(self, tag: str) -> tuple[list[int], list[float]]:
        """(steps, values) of `tag`, ordered by step; empty lists for an unknown tag."""
        points = sorted(self._data.get(tag, {}).items())
        return [s for s, _ in points], [v for _, v in points]

    def last_step(self) -> int | None:
        """The highest step any tag has reached, or None."""
        steps = [max(d) for d in self._data.values() if d]
        return max(steps) if steps else None

    def loss_tags(self) -> dict[str, str]:
        """Map from curve label (LOSS_CURVES) to the tag found for it, for the curves present."""
        found = {}
        for label, endings in LOSS_CURVES.items():
            # Endings in order of preference; the first that matches a tag names the curve.
            match = next((tag for ending in endings for tag in self.tags() if tag.lower().endswith(ending)), None)
            if match:
                found[label] = match
        return found

    def loss_rows(self) -> list[dict]:
        """Rows ``{"step", "value", "curve"}`` of the loss curves, for a line plot."""
        rows = []
        for label, tag in self.loss_tags().items():
            steps, values = self.series(tag)
            rows.extend({"step": s, "value": v, "curve": label} for s, v in zip(steps, values))
        return rows


def _scalar(value) -> float | None:
    """The number in a summary value (old simple_value or new-style scalar tensor), or None."""
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor"):
        try:
            array = tensor_util.make_ndarray(value.tensor)
        except Exception:  # noqa: BLE001 - not a numeric tensor (text, images): not a scalar
            return None
        if array.size == 1 and array.dtype.kind in "fiu":
            return float(array.reshape(()))
    return None
