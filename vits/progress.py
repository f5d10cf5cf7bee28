"""The machine-readable progress line every stage prints, and its parser (the studio reads it).

Format: one line on stdout, the prefix ``KOE_PROGRESS `` followed by a JSON object, e.g.::

    KOE_PROGRESS {"stage": "train", "step": 120, "total": 1000, "epoch": 3, "it_s": 2.5, "eta_s": 352.0,
                  "losses": {"g/total": 41.2, "d/total": 2.9}}

Known keys (all optional except ``stage``):
  stage   name of the stage ("train", "slice", "transcribe", "resample", "text", "features", ...)
  step    units done so far (global step for training, files for the others)
  total   units expected in all (null when unknown)
  epoch   training epoch
  it_s    units per second, smoothed
  eta_s   seconds left, estimated (null when unknown)
  losses  {name: float} for training
  message short human-readable status
  item    the file/clip being worked on
Lines without the prefix are ordinary log lines.
"""

from __future__ import annotations

import json
import math
import time

PREFIX = "KOE_PROGRESS "


def format_progress(stage: str, **fields) -> str:
    """Return one progress line (no trailing newline) for `stage` with the given fields."""
    clean = {"stage": stage}
    for key, value in fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif isinstance(value, dict):
            value = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in value.items()}
        clean[key] = value
    return PREFIX + json.dumps(clean, ensure_ascii=False, separators=(",", ":"))


def parse_progress(line: str) -> dict | None:
    """Return the fields of a progress line, or None if `line` is an ordinary log line."""
    line = line.strip()
    if not line.startswith(PREFIX.strip()):
        return None
    try:
        data = json.loads(line[len(PREFIX.strip()):].strip())
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and "stage" in data else None


class ProgressMeter:
    """Tracks units done and produces progress lines with a smoothed rate and an ETA.

    Args:
        stage: stage name written into every line.
        total: units expected in all, or None.
        start: units already done before this run (resumed work), not counted in the rate.
    """

    def __init__(self, stage: str, total: int | None = None, start: int = 0, clock=time.monotonic):
        self.stage = stage
        self.total = total
        self.done = start
        self._clock = clock
        self._t0 = clock()
        self._start = start
        self._rate: float | None = None
        self._last_t = self._t0
        self._last_done = start

    def update(self, done: int, **fields) -> str:
        """Record that `done` units are finished and return the progress line for it."""
        now = self._clock()
        dt = now - self._last_t
        if dt > 0 and done > self._last_done:
            inst = (done - self._last_done) / dt
            self._rate = inst if self._rate is None else 0.7 * self._rate + 0.3 * inst
        self._last_t, self._last_done, self.done = now, done, done
        eta = None
        if self.total is not None and self._rate:
            eta = round(max(self.total - done, 0) / self._rate, 1)
        return format_progress(
            self.stage, step=done, total=self.total,
            it_s=round(self._rate, 4) if self._rate else None, eta_s=eta, **fields,
        )
