"""What a training run starts from, decided before any network is built: the one rule the trainer
(`vits.train.start.find_start`) and the studio's Train tab both call, so the page cannot disagree with the run.

1. resume: the newest complete checkpoint set above step 0 in ``Data/<voice>/models/``;
2. fine-tune: else the base model given (a folder or a G file), else ``models/*_0.pth``; a folder's generator
   is its newest G_<step>.pth, else its newest release file (G_<step>_fp16.pth, G_<step>.safetensors), and
   D/DUR/WD come from the same step when present (else those networks start fresh);
3. from scratch: else.

Which base model a run gets when none is given is `default_base` (config.yml ``base_model.folder``, used only
while the voice has no G file of its own).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vits import checkpoints as ckpts
from vits.errors import KoeError
from vits.voice_folder import generator_files, generator_step, list_checkpoints

RESUME, BASE, SCRATCH = "resume", "base", "scratch"


@dataclass
class StartPlan:
    """`kind` (RESUME, BASE or SCRATCH), the checkpoint step it starts from and the files it loads.

    `files` maps "G", "D", "DUR", "WD" to a path (None when that network has no file); `folder` holds them.
    """

    kind: str
    step: int = 0
    files: dict[str, Path | None] = field(default_factory=dict)
    folder: Path | None = None

    def describe(self) -> str:
        """One line for the user: "resume at step N (epoch E) …", "fine-tune from base model …", "from scratch …".

        Reads the epoch from the G file of a resume (memory-mapped: cheap even for a large file).
        """
        if self.kind == RESUME:
            position = checkpoint_position(self.files["G"])
            return (f"resume at step {position['step']} (epoch {position['epoch']}) from "
                    f"{self.files['G'].name}")
        if self.kind == BASE:
            fresh = [kind for kind in ckpts.KINDS[1:] if self.files.get(kind) is None]
            return (f"fine-tune from base model {self.folder} ({self.files['G'].name})"
                    + (f"; {', '.join(fresh)} start fresh" if fresh else ""))
        return "from scratch (no checkpoint of this voice, no base model)"


def base_generator(folder: Path) -> tuple[int, Path] | None:
    """(step, G file) a base model folder fine-tunes from: its newest complete G_<step>.pth, else its newest
    release file (G_<step>_fp16.pth, G_<step>.safetensors); None when it holds no generator file."""
    found = ckpts.latest_checkpoints(folder)
    if found is not None:
        return found[0], found[1]["G"]
    release = generator_files(folder) if Path(folder).is_dir() else []
    return release[0] if release else None


def default_base(models_dir: Path, configured: Path | None) -> Path | None:
    """The base model a run uses when none is given: `configured` (config.yml base_model.folder) when it
    holds a generator file (`base_generator`) and the voice has no G file of its own (its models/G_0.pth
    counts), else None."""
    if configured is None or list_checkpoints(models_dir)["G"]:
        return None
    return Path(configured) if base_generator(Path(configured)) is not None else None


def base_files(models_dir: Path, base: Path | None) -> tuple[Path, dict[str, Path | None]] | None:
    """Base model files: `base` (folder or G file), else models/*_0.pth. None when there are none.

    The G file of a folder is `base_generator`'s; D, DUR and WD are that step's ``<KIND>_<step>.pth`` (None
    when absent: that network starts fresh). Raises KoeError when `base` is a folder without a G file.
    """
    if base is None:
        found = ckpts.latest_checkpoints(models_dir)
        if found is None:
            return None
        return models_dir, found[1]
    base = Path(base)
    if base.is_file():
        g_path, folder = base, base.parent
        step = generator_step(base)
        step = ckpts.checkpoint_step(base) if step is None else step
    else:
        found = base_generator(base)
        if found is None:
            raise KoeError("no base generator in this folder (no G_<step>.pth, G_<step>_fp16.pth or "
                           "G_<step>.safetensors)", where=str(base),
                           fix="put the base model files (G_0.pth, D_0.pth, DUR_0.pth, WD_0.pth) or a release "
                               "G file there")
        (step, g_path), folder = found, base
    others = list_checkpoints(folder)
    return folder, {k: others[k].get(step) for k in ckpts.KINDS} | {"G": g_path}


def plan_start(models_dir: Path, base: Path | None) -> StartPlan:
    """Where a run on `models_dir` starts, given the base model asked for (None: none given).

    Returns a StartPlan. Raises KoeError when `base` is a folder without a G file (and no resume).
    """
    models_dir = Path(models_dir)
    found = ckpts.latest_checkpoints(models_dir)
    if found is not None and found[0] > 0:
        return StartPlan(RESUME, found[0], found[1], models_dir)
    files = base_files(models_dir, base)
    if files is None:
        return StartPlan(SCRATCH)
    return StartPlan(BASE, 0, files[1], files[0])


def checkpoint_position(g_path: Path) -> dict:
    """{"epoch", "step", "batch_size", "world_size"} of a G checkpoint (the last two None when not recorded).

    Memory-maps torch zip files, so only the small fields are read. Raises KoeError for an unreadable file.
    """
    g_path = Path(g_path)
    try:
        if not zipfile.is_zipfile(g_path):
            raise ValueError("legacy format")
        ckpt = torch.load(g_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - read_checkpoint below reads it fully and says what is wrong
        ckpt = ckpts.read_checkpoint(g_path)
    if not isinstance(ckpt, dict):
        ckpt = ckpts.read_checkpoint(g_path)
    epoch, step = ckpts.checkpoint_epoch_step(ckpt, g_path)
    extra = ckpt.get("koe_extra") or {}
    return {"epoch": epoch, "step": step, "batch_size": extra.get("batch_size"),
            "world_size": extra.get("world_size")}
