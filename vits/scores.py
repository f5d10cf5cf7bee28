"""Checkpoint scores: the one reader/writer of ``Data/<voice>/logs/scores.json`` and the "which checkpoint is best" lookup.

    {"1000": {"cer": 0.31, "speaker_similarity": 0.72, "score": 0.41, ...}, "2000": {...}, "best": 2000}

`prep.score` computes the numbers (`python -m pipeline.score`, or the trainer at each eval); the trainer's
rotation keeps the best step's files, and the studio's Synthesize and Export tabs default to the best G file.
"""

from __future__ import annotations

import os
from pathlib import Path

from vits.fileio import read_json, write_json
from vits.voice_folder import SCORES, generator_files


def scores_path(voice_dir: str | os.PathLike) -> Path:
    """`<voice>/logs/scores.json` (whether or not it exists yet)."""
    return Path(voice_dir) / SCORES


def read_scores(voice_dir: str | os.PathLike) -> dict[int, dict]:
    """{step: {"cer", "speaker_similarity", "score", ...}} from scores.json; {} when absent or unreadable."""
    try:
        raw = read_json(scores_path(voice_dir), {})
    except (OSError, ValueError):
        return {}
    out = {}
    for key, value in raw.items() if isinstance(raw, dict) else ():
        if key.isdigit() and isinstance(value, dict) and isinstance(value.get("score"), (int, float)):
            out[int(key)] = value
    return out


def best_of(scores: dict[int, dict]) -> int | None:
    """The step with the highest score (the earlier step on a tie), or None."""
    if not scores:
        return None
    return max(scores, key=lambda step: (scores[step]["score"], -step))


def write_scores(voice_dir: str | os.PathLike, scores: dict[int, dict]) -> int | None:
    """Write scores.json atomically with its "best" step; returns that step."""
    best = best_of(scores)
    data = {str(step): scores[step] for step in sorted(scores)}
    data["best"] = best
    write_json(scores_path(voice_dir), data)
    return best


def best_step(voice_dir: str | os.PathLike) -> int | None:
    """The best-scored step of a voice, or None when nothing is scored."""
    return best_of(read_scores(voice_dir))


def best_generator(voice_dir: str | os.PathLike) -> tuple[Path, int, dict] | None:
    """(G file, step, its scores) of the best-scored step whose G file still exists, or None.

    Scored steps whose G file was deleted are passed over for the next best one.
    """
    scores = read_scores(voice_dir)
    files = {}
    for step, path in generator_files(voice_dir):
        files.setdefault(step, path)  # the training checkpoint of a step comes first
    present = {s: v for s, v in scores.items() if s in files}
    step = best_of(present)
    return (files[step], step, present[step]) if step is not None else None


def generator_choices(voice_dir: str | os.PathLike) -> tuple[list[tuple[str, Path]], Path | None]:
    """The voice's generator files as (label, path), newest first, and the one to select by default.

    The best-scored G file is labelled ``G_2000.pth — step 2000 (best score 0.412)`` and is the default; with
    nothing scored the default is the newest file (None when there is none). Raises nothing for a missing folder.
    """
    files = generator_files(voice_dir)
    best = best_generator(voice_dir)
    choices = []
    for step, path in files:
        label = f"{path.name} — step {step}"
        if best is not None and path == best[0]:
            label += f" (best score {best[2]['score']:.3f})"
        choices.append((label, path))
    default = best[0] if best is not None else (files[0][1] if files else None)
    return choices, default
