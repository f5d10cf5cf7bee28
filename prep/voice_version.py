"""Which Bert-VITS2 network a voice is made for: 2.3 (the default) or 2.2-CLAP (emotion prompts).

The choice is made when a voice is created (studio "Create voice", `pipeline.prepare --version`) and lives
in the voice's configs/config.json: a 2.2 config says `"version": "2.2"` and has no `model.slm` block
(`VoiceConfig.architecture`), with the 2.2 defaults that differ from 2.3 (2.2 spec §1: gin_channels 256,
batch_size 12, fp16_run false). The text stage keeps it; the features stage writes the CLAP files for 2.2
voices only. A 2.2 base model placed as models/G_0.pth makes a new voice 2.2 by itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.voice_folder import config_path, generator_files, models_dir

VERSIONS = ("2.3", "2.2")
VERSION_LABELS = {"2.3": "Bert-VITS2 2.3 (default)", "2.2": "Bert-VITS2 2.2-CLAP (emotion prompts)"}


def new_config(version: str = "2.3") -> VoiceConfig:
    """A fresh config.json of `version` ("2.3" or "2.2", 2.2 spec §1). Raises KoeError for another version."""
    if version not in VERSIONS:
        raise KoeError(f"unknown Bert-VITS2 version {version!r}", fix=f"use one of {', '.join(VERSIONS)}")
    cfg = VoiceConfig()
    if version == "2.2":
        cfg = VoiceConfig.model_validate({"version": "2.2", "train": {"batch_size": 12, "fp16_run": False},
                                          "data": {"n_speakers": 896}, "model": {"gin_channels": 256}})
    return cfg


def checkpoint_version(path: str | os.PathLike) -> str | None:
    """"2.2" or "2.3" for a G_*.pth file by its keys (2.2 spec §9.3; memory-mapped, so cheap), else None."""
    import torch

    from vits.checkpoints import generator_version

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch zip file (safetensors release, truncated): the caller falls back
        return None
    return generator_version(state)


def base_model_version(voice_dir: str | os.PathLike) -> str | None:
    """"2.2" or "2.3" for the base model the voice fine-tunes from (models/G_0.pth, read by its keys), or None."""
    g0 = models_dir(Path(voice_dir)) / "G_0.pth"
    return checkpoint_version(g0) if g0.is_file() else None


def voice_version(voice_dir: str | os.PathLike) -> str:
    """"2.2" or "2.3": the voice's config.json architecture; without a config, its base model's, else "2.3"."""
    path = config_path(Path(voice_dir))
    if path.is_file():
        return VoiceConfig.load(path).architecture
    return base_model_version(voice_dir) or "2.3"


def set_voice_version(voice_dir: str | os.PathLike, version: str) -> Path:
    """Make the voice's config.json a `version` config ("2.3"/"2.2"); returns its path.

    A voice without a config gets a fresh one; an existing config of the same version is left as it is;
    one of the other version is switched (speakers and data settings kept) as long as the voice has no
    trained checkpoint. Raises KoeError for an unknown version, or when trained checkpoints or a base
    model of the other version are in the way.
    """
    voice_dir = Path(voice_dir)
    fresh = new_config(version)
    base = base_model_version(voice_dir)
    if base is not None and base != version:
        raise KoeError(f"models/G_0.pth is a Bert-VITS2 {base} base model, the voice is to be {version}",
                       where=str(models_dir(voice_dir) / "G_0.pth"),
                       fix=f"choose version {base}, or replace the base model by a {version} one")
    path = config_path(voice_dir)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh.save(path)
        return path
    cfg = VoiceConfig.load(path)
    if cfg.architecture == version:
        return path
    trained = [p.name for step, p in generator_files(voice_dir) if step > 0]
    if trained:
        raise KoeError(f"the voice is Bert-VITS2 {cfg.architecture} and has trained checkpoints "
                       f"({', '.join(trained[:3])}); their network does not fit {version}", where=str(path),
                       fix=f"create a new voice for {version} (or move models/ away first)")
    raw = cfg.model_dump(mode="json")
    raw["version"] = fresh.version
    raw["train"]["batch_size"] = fresh.train.batch_size
    raw["model"]["gin_channels"] = fresh.model.gin_channels
    if version == "2.2":
        raw["model"].pop("slm", None)
        raw["train"]["fp16_run"] = False
    else:
        raw["model"]["slm"] = fresh.model.slm.model_dump(mode="json")
    VoiceConfig.model_validate(raw).save(path)
    return path
