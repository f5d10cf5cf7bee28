"""Studio settings from `config.yml` (data root, model folders, hub mirror, device)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vits.errors import KoeError

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO_ROOT / "config.yml"


@dataclass
class Settings:
    """Resolved settings; every path is absolute."""

    root: Path
    data_root: Path
    device: str = "auto"
    hub_endpoint: str = ""
    models_dir: Path = field(default_factory=Path)
    bert: dict[str, Path] = field(default_factory=dict)
    wavlm: Path = field(default_factory=Path)
    clap: Path = field(default_factory=Path)  # laion/clap-htsat-fused: emotion prompts/features of 2.2 voices
    whisper_model: str = "medium"
    whisper_root: Path = field(default_factory=Path)
    base_model_repo: str = ""
    base_model_folder: Path = field(default_factory=Path)
    base_model_22_repo: str = ""
    base_model_22_folder: Path = field(default_factory=Path)
    host: str = "127.0.0.1"
    port: int = 7860
    zh_polyphones: str = "rules"  # text.zh_polyphones: "rules" (dictionary + rules) or "g2pw" (model first)
    g2pw_dir: Path = field(default_factory=Path)  # the G2PWModel folder (python -m pipeline.download g2pw)
    g2pw_url: str = ""  # text.g2pw_url: another copy of G2PWModel_1.1.zip ("" = PaddleSpeech or ModelScope)

    def use_text_frontend(self) -> None:
        """Apply the text settings to this process's frontend (the g2pW polyphone model when chosen).
        Raises KoeError when g2pW is chosen but its folder is incomplete."""
        from vits.text.zh import g2pw

        g2pw.configure(self.zh_polyphones, self.g2pw_dir, self.bert.get("ZH", Path()))

    def voice_dir(self, voice: str) -> Path:
        """The folder of voice `voice`, refusing names that would escape the data root."""
        if not voice or voice in {".", ".."} or any(c in voice for c in "/\\\0") or voice.startswith("."):
            raise KoeError(f"invalid voice name {voice!r}",
                           fix="use letters, digits, '-', '_' (no slashes, not starting with '.')")
        return self.data_root / voice

    def base_model_folder_for(self, version: str) -> Path:
        """config.yml's base model folder for a voice of `version`: base_model_22 for "2.2" (2.2-CLAP),
        else base_model (2.3). A 2.3 base cannot seed a 2.2 network, nor the other way round."""
        return self.base_model_22_folder if version == "2.2" else self.base_model_folder

    def use_hub_endpoint(self, override: str | None = None) -> str:
        """Point huggingface_hub at the mirror: `override` (--endpoint), else config.yml hub.endpoint, else
        $HF_ENDPOINT. Call before huggingface_hub is imported (it reads the variable then). Returns the
        endpoint ("" = the official hub)."""
        endpoint = override or self.hub_endpoint
        if endpoint:
            os.environ["HF_ENDPOINT"] = endpoint
        return endpoint

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read config.yml (default: the repo's, or $KOE_CONFIG). Missing keys take defaults."""
    path = Path(path or os.environ.get("KOE_CONFIG") or DEFAULT_CONFIG)
    raw: dict = {}
    if path.is_file():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise KoeError(f"config.yml is not valid YAML ({exc})", where=where, fix="fix the YAML syntax") from None
    base = path.parent.resolve()

    def p(value, default):
        value = Path(value or default).expanduser()
        return value if value.is_absolute() else (base / value).resolve()

    bert = raw.get("bert") or {}
    hub = raw.get("hub") or {}
    whisper = raw.get("whisper") or {}
    base_model = raw.get("base_model") or {}
    base_model_22 = raw.get("base_model_22") or {}
    server = raw.get("server") or {}
    text = raw.get("text") or {}
    return Settings(
        root=base,
        data_root=p(os.environ.get("KOE_DATA_ROOT") or raw.get("data_root"), "Data"),
        device=str(raw.get("device", "auto")),
        hub_endpoint=str(hub.get("endpoint") or os.environ.get("HF_ENDPOINT", "")),
        models_dir=p(raw.get("models_dir"), "models"),
        bert={lang: p(bert.get(lang), f"models/bert/{name}") for lang, name in (
            ("ZH", "chinese-roberta-wwm-ext-large"), ("JP", "deberta-v2-large-japanese-char-wwm"),
            ("EN", "deberta-v3-large"), ("KO", "klue-roberta-large"))},
        wavlm=p(raw.get("wavlm"), "models/slm/wavlm-base-plus"),
        clap=p(raw.get("clap"), "models/emotional/clap-htsat-fused"),
        whisper_model=str(whisper.get("model", "medium")),
        whisper_root=p(whisper.get("download_root"), "models/whisper"),
        base_model_repo=str(base_model.get("repo", "Stardust_minus/Bert-VITS2")),
        base_model_folder=p(base_model.get("folder"), "models/base/bert-vits2-2.3"),
        base_model_22_repo=str(base_model_22.get("repo", "OedoSoldier/Bert-VITS2-2.2-CLAP")),
        base_model_22_folder=p(base_model_22.get("folder"), "models/base/bert-vits2-2.2-clap"),
        host=str(server.get("host", "127.0.0.1")),
        port=int(server.get("port", 7860)),
        zh_polyphones=str(text.get("zh_polyphones", "rules")),
        g2pw_dir=p(text.get("g2pw_dir"), "models/g2pw/G2PWModel"),
        g2pw_url=str(text.get("g2pw_url") or ""),
    )
