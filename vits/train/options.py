"""What a training run is asked for, what it returns, and the error for bad list files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vits.errors import KoeError


@dataclass
class TrainOptions:
    """What the user asked for; None means "from config.json / config.yml" (e.g. batch_size: `TrainConfig`'s)."""

    voice_dir: Path
    max_steps: int | None = None
    batch_size: int | None = None
    base: Path | None = None
    wavlm: Path | None = None
    use_wavlm: bool | None = None  # None: config.json's train.use_wavlm
    device: str | None = None
    num_workers: int | None = None
    # Checkpoint scoring at each eval (train.score_at_eval): called with (G file, step), returns that step's
    # {"cer", "speaker_similarity", "score", "best"}; `prep.score.TrainingScorer` (set by pipeline.train).
    scorer: Callable[[Path, int], dict] | None = None


@dataclass
class TrainResult:
    step: int
    epoch: int
    reason: str  # "max_steps", "epochs", "signal", "already_done"
    checkpoint: Path | None
    batch_size: int | None = None  # the batch size it ended with (halved by each out-of-memory retry)


class DataProblems(KoeError):
    """The list files have problems; `problems` holds one `file:line: problem → fix` string each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the training lists:\n" + "\n".join(problems),
                         fix="fix the lines above (or re-run the text stage) and start training again")

    def __str__(self) -> str:
        return f"{len(self.problems)} problem(s) in the training lists:\n" + "\n".join(self.problems)
