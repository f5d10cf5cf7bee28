"""Bert-VITS2-compatible checkpoint files (spec §9): `from vits.checkpoints import X` for all of them.

- `format`: read and write the file format (+ our ``koe_*`` resume fields), identify the network, step/epoch.
- `files`: the newest complete checkpoint set of a models/ folder, the newest verified one (resume), rotation,
  leftover temp files of interrupted saves.
- `integrity`: CRC-32 of every record, the globals a pickle refers to, NaN/inf values.
- `loading`: load weights into a network, strict or partial, with a report in plain words.
- `release`: release generators (no enc_q, optionally float16 / safetensors), parameter counts.

Restoring the optimizer / LR schedule / GradScaler for a resume is part of the trainer's start point
(`vits.train.start`), the one place that decides it.
"""

from vits.checkpoints.files import (
    IntactSet,
    clean_leftover_saves,
    latest_checkpoints,
    newest_intact_set,
    rotate_checkpoints,
)
from vits.checkpoints.format import (
    KIND_DESCRIPTIONS,
    CheckpointWarning,
    DamagedCheckpoint,
    checkpoint_epoch_step,
    checkpoint_step,
    convert_trusted_checkpoint,
    identify_checkpoint,
    model_state,
    read_checkpoint,
    save_checkpoint,
)
from vits.checkpoints.loading import LoadReport, generator_version, load_weights
from vits.checkpoints.release import export_release, parameter_count
from vits.voice_folder import KINDS, list_checkpoints

__all__ = [
    "KINDS", "KIND_DESCRIPTIONS", "CheckpointWarning", "DamagedCheckpoint", "IntactSet", "clean_leftover_saves", "newest_intact_set",
    "LoadReport", "checkpoint_epoch_step", "checkpoint_step",
    "convert_trusted_checkpoint", "export_release", "generator_version", "identify_checkpoint", "latest_checkpoints",
    "list_checkpoints", "load_weights", "model_state", "parameter_count", "read_checkpoint",
    "rotate_checkpoints", "save_checkpoint",
]
