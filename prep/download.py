"""Model downloads (explicit only; nothing downloads at import or in tests): `python -m pipeline.download`.

Targets: `base` (the community Bert-VITS2 2.3 base model G/D/DUR/WD _0.pth), `bert` (the three BERTs),
`wavlm` (the WavLM discriminator), `whisper` (the configured Whisper model); groups `models` (bert + wavlm)
and `all`. Files land where config.yml (`settings.Settings`) says, so the stages find them without
further settings. The hub mirror comes from HF_ENDPOINT (the CLI sets it from --endpoint / hub.endpoint).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from vits.errors import KoeError

BASE_FILES = ("G_0.pth", "D_0.pth", "DUR_0.pth", "WD_0.pth")


def _quiet(_message: str) -> None:
    """The default `log`: the library prints nothing; the CLI passes print."""


def _snapshot(repo: str, target: Path, patterns: list[str] | None = None) -> Path:
    from huggingface_hub import snapshot_download

    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(snapshot_download(repo_id=repo, local_dir=str(target), allow_patterns=patterns))
    except Exception as exc:  # network, auth and offline-mode errors all end here
        raise KoeError(f"could not download {repo} ({type(exc).__name__}: {exc})", where=str(target),
                       fix="check the network; in China use --endpoint https://hf-mirror.com (or hub: endpoint "
                           "in config.yml)") from None


def download_base(settings, log: Callable[[str], None] = _quiet) -> None:
    """The community Bert-VITS2 2.3 base model (G/D/DUR/WD _0.pth + config.json) into base_model.folder, flattened.

    Raises KoeError when the repository lacks one of the four files.
    """
    folder = Path(settings.base_model_folder)
    staging = folder / ".download"
    log(f"downloading {settings.base_model_repo} to {folder}")
    _snapshot(settings.base_model_repo, staging, [f"*{name}" for name in BASE_FILES] + ["*config.json"])
    for name in BASE_FILES:
        found = sorted(staging.rglob(name))
        if found:
            shutil.move(str(found[0]), folder / name)
    configs = sorted(staging.rglob("config.json"))
    if configs:
        shutil.move(str(configs[0]), folder / "config.json")
    shutil.rmtree(staging, ignore_errors=True)
    missing = [name for name in BASE_FILES if not (folder / name).is_file()]
    if missing:
        raise KoeError(f"base model: {', '.join(missing)} not found in {settings.base_model_repo}",
                       where=str(folder), fix="put the files in this folder by hand")


def download_bert(settings, log: Callable[[str], None] = _quiet) -> None:
    """The three BERT models into the config.yml folders (skips folders that already hold a model)."""
    from vits.text.bert import download_bert_models

    download_bert_models(("ZH", "JP", "EN"), model_dirs=settings.bert,
                         endpoint=os.environ.get("HF_ENDPOINT") or None, log=log)


def download_wavlm(settings, log: Callable[[str], None] = _quiet) -> None:
    """microsoft/wavlm-base-plus into the config.yml wavlm folder."""
    from vits.wavlm import download_wavlm as fetch

    log(f"downloading WavLM to {settings.wavlm}")
    fetch(settings.wavlm, endpoint=os.environ.get("HF_ENDPOINT") or None)


def download_whisper(settings, log: Callable[[str], None] = _quiet) -> None:
    """The config.yml Whisper model (a name such as medium or large-v3) into the whisper folder.

    Raises KoeError when the configured model is a path or an unknown name.
    """
    import whisper

    name = settings.whisper_model
    if name not in whisper.available_models():
        raise KoeError(f"whisper model {name!r} is a path or unknown name; nothing to download",
                       fix="set whisper.model in config.yml to one of " + ", ".join(whisper.available_models()))
    root = Path(settings.whisper_root)
    root.mkdir(parents=True, exist_ok=True)
    log(f"downloading Whisper {name} to {root}")
    # openai-whisper has no public download-only call; its own loader uses these (checksum-verified).
    whisper._download(whisper._MODELS[name], str(root), False)


TARGETS: dict[str, Callable] = {"base": download_base, "bert": download_bert, "wavlm": download_wavlm,
                                "whisper": download_whisper}
GROUPS = {"models": ["bert", "wavlm"], "all": list(TARGETS)}
CHOICES = [*TARGETS, *GROUPS]


def expand(what: str) -> list[str]:
    """The targets a choice stands for (`models` -> bert, wavlm; `all` -> every target)."""
    return GROUPS.get(what, [what])
