"""Model downloads (explicit only; nothing downloads at import or in tests): `python -m pipeline.download`.

Targets: `base` (the community Bert-VITS2 2.3 base model G/D/DUR/WD _0.pth), `base22` (the community
Bert-VITS2 2.2-CLAP base model G/D/DUR _0.pth), `bert` (the three BERTs), `wavlm` (the WavLM discriminator),
`clap` (laion/clap-htsat-fused, the emotion model of 2.2 voices), `whisper` (the configured Whisper model),
`g2pw` (the optional Chinese polyphone model; from PaddleSpeech or ModelScope, not the hub), `separator`
(UVR-MDX-NET-Voc_FT.onnx for vocal/BGM separation);
groups `models` (bert + wavlm) and `all`. Files land where config.yml (`settings.Settings`) says, so the stages find them without
further settings. The hub mirror comes from HF_ENDPOINT (the CLI sets it from --endpoint / hub.endpoint).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from vits.errors import HUB, KoeError, hub_download_fix, one_line_reason  # noqa: F401 - one_line_reason: API

BASE_FILES = ("G_0.pth", "D_0.pth", "DUR_0.pth", "WD_0.pth")
BASE22_FILES = ("G_0.pth", "D_0.pth", "DUR_0.pth")  # 2.2 has no WavLM discriminator (2.2 spec §9.1)


def _quiet(_message: str) -> None:
    """The default `log`: the library prints nothing; the CLI passes print."""


def _snapshot(repo: str, target: Path, patterns: list[str] | None = None) -> Path:
    from huggingface_hub import snapshot_download

    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(snapshot_download(repo_id=repo, local_dir=str(target), allow_patterns=patterns))
    except Exception as exc:  # network, auth and offline-mode errors all end here
        endpoint = os.environ.get("HF_ENDPOINT") or HUB
        raise KoeError(f"could not download {repo} from {endpoint} ({one_line_reason(exc)})", where=str(target),
                       fix=download_fix(endpoint)) from None


def download_fix(endpoint: str | None) -> str:
    """What to do about a failed hub download (see `vits.errors.hub_download_fix`)."""
    return hub_download_fix(endpoint)


def download_base(settings, log: Callable[[str], None] = _quiet) -> None:
    """The community Bert-VITS2 2.3 base model (G/D/DUR/WD _0.pth + config.json) into base_model.folder, flattened.

    Raises KoeError when the repository lacks one of the four files.
    """
    _download_base_files(settings.base_model_repo, Path(settings.base_model_folder), BASE_FILES, log)


def download_base22(settings, log: Callable[[str], None] = _quiet) -> None:
    """The community Bert-VITS2 2.2-CLAP base model (G/D/DUR _0.pth) into base_model_22.folder, flattened.

    Raises KoeError when the repository lacks one of the three files.
    """
    _download_base_files(settings.base_model_22_repo, Path(settings.base_model_22_folder), BASE22_FILES, log)


def _download_base_files(repo: str, folder: Path, files: tuple[str, ...], log: Callable[[str], None]) -> None:
    staging = folder / ".download"
    log(f"downloading {repo} to {folder}")
    _snapshot(repo, staging, [f"*{name}" for name in files] + ["*config.json"])
    for name in files:
        found = sorted(staging.rglob(name))
        if found:
            shutil.move(str(found[0]), folder / name)
    configs = sorted(staging.rglob("config.json"))
    if configs:
        shutil.move(str(configs[0]), folder / "config.json")
    shutil.rmtree(staging, ignore_errors=True)
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise KoeError(f"base model: {', '.join(missing)} not found in {repo}",
                       where=str(folder), fix="put the files in this folder by hand")


def download_bert(settings, log: Callable[[str], None] = _quiet) -> None:
    """The BERT models into the config.yml folders (skips folders that already hold a model).

    ZH/JP/EN always; KO (klue/roberta-large) too when $KOE_KOREAN=1 or its config.yml folder exists.
    """
    from vits.text.bert import download_bert_models

    languages = ["ZH", "JP", "EN"]
    ko_folder = settings.bert.get("KO")
    if os.environ.get("KOE_KOREAN") == "1" or (ko_folder is not None and Path(ko_folder).is_dir()):
        languages.append("KO")
    download_bert_models(tuple(languages), model_dirs=settings.bert,
                         endpoint=os.environ.get("HF_ENDPOINT") or None, log=log)


def download_wavlm(settings, log: Callable[[str], None] = _quiet) -> None:
    """microsoft/wavlm-base-plus into the config.yml wavlm folder."""
    from vits.wavlm import download_wavlm as fetch

    log(f"downloading WavLM to {settings.wavlm}")
    fetch(settings.wavlm, endpoint=os.environ.get("HF_ENDPOINT") or None)


def download_clap(settings, log: Callable[[str], None] = _quiet) -> None:
    """laion/clap-htsat-fused into the config.yml clap folder (skipped when it already holds the model)."""
    from vits.clap import download_clap as fetch

    fetch(settings.clap, endpoint=os.environ.get("HF_ENDPOINT") or None, log=log)


WHISPER_SOURCES = ("openai", "hub")


def whisper_source(choice: str | None, endpoint: str | None) -> str:
    """Where Whisper comes from: `choice` when given, else `hub` when a mirror is set (`endpoint`, or
    $HF_ENDPOINT), else `openai` (OpenAI's server, which a hub mirror does not reach).

    Raises KoeError for an unknown choice."""
    if choice:
        if choice not in WHISPER_SOURCES:
            raise KoeError(f"unknown Whisper source {choice!r}", fix="use --source openai or --source hub")
        return choice
    return "hub" if endpoint or os.environ.get("HF_ENDPOINT") else "openai"


def download_whisper(settings, log: Callable[[str], None] = _quiet, source: str | None = None) -> None:
    """The config.yml Whisper model (a name such as medium or large-v3) into the whisper folder as
    `<name>.pt`: from OpenAI's server (`source="openai"`), or (`"hub"`) the transformers weights of
    openai/whisper-<name> through the hub or its mirror, converted (prep/whisper_convert.py). The default
    source follows `whisper_source`.

    Raises KoeError when the configured model is a path or an unknown name, or the download fails.
    """
    import whisper

    name = settings.whisper_model
    if name not in whisper.available_models():
        raise KoeError(f"whisper model {name!r} is a path or unknown name; nothing to download",
                       fix="give a model name (whisper.model in config.yml, or the studio's Whisper model "
                           "field): one of " + ", ".join(whisper.available_models()))
    source = whisper_source(source, settings.hub_endpoint)
    root = Path(settings.whisper_root)
    root.mkdir(parents=True, exist_ok=True)
    if source == "hub":
        _whisper_from_hub(name, root, log)
        return
    log(f"downloading Whisper {name} from OpenAI's server to {root}")
    url = whisper._MODELS[name]
    try:
        # openai-whisper has no public download-only call; its own loader uses these (checksum-verified).
        whisper._download(url, str(root), False)
    except Exception as exc:  # urllib, checksum and disk errors
        raise KoeError(f"could not download Whisper {name} ({one_line_reason(exc)})", where=url,
                       fix=whisper_fix(name, root, source)) from None


def _whisper_from_hub(name: str, root: Path, log: Callable[[str], None]) -> None:
    from prep.whisper_convert import HUB_FILES, convert, hub_repo

    repo, target = hub_repo(name), root / f"{name}.pt"
    if target.is_file():  # idempotent like the other targets; delete the file to fetch it again
        log(f"{target} is already there; delete it to download {repo} again")
        return
    staging = root / f".{name}.hub"  # kept after a failure: the hub resumes the download from it
    log(f"downloading {repo} from {os.environ.get('HF_ENDPOINT') or HUB} to convert it into {target}")
    try:
        _snapshot(repo, staging, HUB_FILES)
    except KoeError as exc:
        raise KoeError(exc.problem, where=exc.where, fix=f"{exc.fix}; or {whisper_fix(name, root, 'hub')}") from None
    convert(staging, target)
    shutil.rmtree(staging, ignore_errors=True)
    log(f"converted {repo} into {target}")


def whisper_fix(name: str, root: str | Path, source: str = "openai") -> str:
    """Where to put a Whisper checkpoint by hand, for the source that failed (`openai`: OpenAI's server,
    which a hub mirror does not serve; `hub`: openai/whisper-<name> through the hub or its mirror)."""
    target = Path(root) / (name + ".pt")
    if source == "hub":
        from prep.whisper_convert import hub_repo

        return (f"check that the hub (or the mirror) serves {hub_repo(name)}, or run python -m pipeline.download "
                f"whisper --source openai where openaipublic.azureedge.net is reachable, or put {name}.pt at "
                f"{target}, or set whisper.model in config.yml to a .pt file you have")
    return (f"run python -m pipeline.download whisper --source hub (the hub or its mirror), or download "
            f"{name}.pt on a machine that reaches openaipublic.azureedge.net and put it at {target}, or set "
            "whisper.model in config.yml to a .pt file you have")


def download_g2pw(settings, log: Callable[[str], None] = _quiet) -> None:
    """The g2pW Chinese polyphone model into text.g2pw_dir (prep/g2pw_download.py: not on the hub)."""
    from prep.g2pw_download import download_g2pw as fetch

    fetch(settings, log)


def download_separator(settings, log: Callable[[str], None] = _quiet) -> None:
    """UVR-MDX-NET-Voc_FT.onnx (vocal/BGM separation, prep/separate.py) into <models_dir>/separator/.

    Skipped when the file is already there; the download is checked by loading it (input shape included).
    Raises KoeError when the hub (or mirror) lacks the file or the file does not load."""
    from prep.separate import DEFAULT_MODEL, SEPARATOR_REPO, UVR_RELEASES, Separator, model_path

    target = model_path(settings.models_dir, DEFAULT_MODEL)
    if target.is_file():
        log(f"{target} is already there; delete it to download it again")
        return
    staging = target.parent / ".download"
    log(f"downloading {DEFAULT_MODEL} from {SEPARATOR_REPO} to {target.parent}")
    _snapshot(SEPARATOR_REPO, staging, [DEFAULT_MODEL])
    found = sorted(staging.rglob(DEFAULT_MODEL))
    if not found:
        raise KoeError(f"{DEFAULT_MODEL} not found in {SEPARATOR_REPO}", where=str(target.parent),
                       fix=f"download it from {UVR_RELEASES} and put it at {target}")
    try:
        Separator(found[0])
    except KoeError as exc:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-usable stays behind
        raise KoeError(f"the downloaded {DEFAULT_MODEL} is not usable ({exc.problem})", where=str(found[0]),
                       fix=f"run the command again (another --endpoint mirror if it repeats), or download it from "
                           f"{UVR_RELEASES} and put it at {target}") from None
    shutil.move(str(found[0]), target)
    shutil.rmtree(staging, ignore_errors=True)
    log(f"saved {target}")


TARGETS: dict[str, Callable] = {"base": download_base, "base22": download_base22, "bert": download_bert,
                                "wavlm": download_wavlm, "clap": download_clap, "whisper": download_whisper,
                                "g2pw": download_g2pw, "separator": download_separator}
GROUPS = {"models": ["bert", "wavlm"], "all": list(TARGETS)}
CHOICES = [*TARGETS, *GROUPS]


def expand(what: str) -> list[str]:
    """The targets a choice stands for (`models` -> bert, wavlm; `all` -> every target)."""
    return GROUPS.get(what, [what])
