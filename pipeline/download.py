"""Model downloads the studio starts as jobs (explicit only; nothing downloads at import or in tests).

    python -m pipeline.download {base,bert,wavlm,whisper,models,all} [--endpoint https://hf-mirror.com] [--config config.yml]

The endpoint (a Hugging Face mirror) comes from --endpoint, else config.yml `hub.endpoint`, else HF_ENDPOINT.
Files land where config.yml says, so the stages find them without further settings.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from settings import load_settings
from vits.errors import KoeError
from vits.progress import format_progress

BASE_FILES = ("G_0.pth", "D_0.pth", "DUR_0.pth", "WD_0.pth")


def _snapshot(repo: str, target: Path, patterns: list[str] | None = None) -> Path:
    from huggingface_hub import snapshot_download

    target.mkdir(parents=True, exist_ok=True)
    return Path(snapshot_download(repo_id=repo, local_dir=str(target), allow_patterns=patterns))


def download_base(settings) -> None:
    """The community Bert-VITS2 2.3 base model (G/D/DUR/WD _0.pth) into base_model.folder, flattened."""
    folder = settings.base_model_folder
    staging = folder / ".download"
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
        raise SystemExit(f"base model: {', '.join(missing)} not found in {settings.base_model_repo}; "
                         f"put the files in {folder} by hand")


def download_bert(settings) -> None:
    """The three BERT models into the config.yml folders (skips folders that already hold a model)."""
    from vits.text.bert import download_bert_models

    download_bert_models(("ZH", "JP", "EN"), model_dirs=settings.bert,
                         endpoint=os.environ.get("HF_ENDPOINT") or None, log=lambda m: print(m, flush=True))


def download_wavlm(settings) -> None:
    from vits.wavlm import download_wavlm as fetch

    fetch(settings.wavlm, endpoint=os.environ.get("HF_ENDPOINT") or None)


def download_whisper(settings) -> None:
    import whisper

    name = settings.whisper_model
    if name not in whisper._MODELS:
        raise SystemExit(f"whisper model {name!r} is a path or unknown name; nothing to download")
    settings.whisper_root.mkdir(parents=True, exist_ok=True)
    whisper._download(whisper._MODELS[name], str(settings.whisper_root), False)


def main(argv=None) -> int:
    """Download the named models; returns 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["base", "bert", "wavlm", "whisper", "models", "all"])
    parser.add_argument("--endpoint", default=None, help="Hugging Face mirror, e.g. https://hf-mirror.com")
    parser.add_argument("--config", default=None, help="config.yml with the model folders")
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    endpoint = args.endpoint or settings.hub_endpoint
    if endpoint:
        # huggingface_hub reads the mirror from the environment when it is imported.
        os.environ["HF_ENDPOINT"] = endpoint
    os.environ.pop("HF_HUB_OFFLINE", None)
    steps = {"base": download_base, "bert": download_bert, "wavlm": download_wavlm, "whisper": download_whisper}
    groups = {"all": list(steps), "models": ["bert", "wavlm"]}
    names = groups.get(args.what, [args.what])
    for i, name in enumerate(names):
        print(format_progress("download", step=i, total=len(names), message=f"{name} from {endpoint or 'hub'}"),
              flush=True)
        try:
            steps[name](settings)
        except KoeError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
    print(format_progress("download", step=len(names), total=len(names), message="done"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
