"""Typed Bert-VITS2 2.3 `config.json` (spec §1) with defaults, so an old or partial file still loads.

Unknown keys are kept (and written back) so files from other tools round-trip unchanged.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vits.errors import KoeError
from vits.fileio import write_text_atomic
from vits.symbols import table_sizes
from vits.voice_folder import TRAIN_LIST, VAL_LIST


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class TrainConfig(_Section):
    log_interval: int = 200
    eval_interval: int = 1000
    seed: int = 42
    epochs: int = 1000
    learning_rate: float = 2e-4
    betas: list[float] = Field(default_factory=lambda: [0.8, 0.99])
    eps: float = 1e-9
    batch_size: int = 16
    bf16_run: bool = False
    lr_decay: float = 0.99995
    segment_size: int = 16384
    init_lr_ratio: float = 1
    warmup_epochs: int = 0
    c_mel: float = 45
    c_kl: float = 1.0
    c_commit: float = 100
    skip_optimizer: bool = True
    freeze_ZH_bert: bool = False
    freeze_JP_bert: bool = False
    freeze_EN_bert: bool = False
    freeze_emo: bool = False
    # Koe Studio additions (ignored by Bert-VITS2):
    freeze_decoder: bool = False
    keep_ckpts: int = 8
    max_steps: int | None = None
    # Score each saved checkpoint at eval (ASR CER + speaker similarity, prep/score.py); null: on for GPU, off on CPU
    score_at_eval: bool | None = None
    use_wavlm: bool = True  # the WavLM discriminator (needs the WavLM model; `pipeline.train --no-wavlm` overrides)


class DataConfig(_Section):
    training_files: str = TRAIN_LIST
    validation_files: str = VAL_LIST
    max_wav_value: float = 32768.0
    sampling_rate: int = 44100
    filter_length: int = 2048
    hop_length: int = 512
    win_length: int = 2048
    n_mel_channels: int = 128
    mel_fmin: float = 0.0
    mel_fmax: float | None = None
    add_blank: bool = True
    n_speakers: int = 850
    cleaned_text: bool = True
    spk2id: dict[str, int] = Field(default_factory=dict)
    min_text_len: int = 1
    max_text_len: int = 384


class SLMConfig(_Section):
    model: str = "./slm/wavlm-base-plus"
    sr: int = 16000
    hidden: int = 768
    nlayers: int = 13
    initial_channel: int = 64


class ModelConfig(_Section):
    use_spk_conditioned_encoder: bool = True
    use_noise_scaled_mas: bool = True
    use_mel_posterior_encoder: bool = False
    use_duration_discriminator: bool = True
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    p_dropout: float = 0.1
    resblock: str = "1"
    resblock_kernel_sizes: list[int] = Field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = Field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    upsample_rates: list[int] = Field(default_factory=lambda: [8, 8, 2, 2, 2])
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: list[int] = Field(default_factory=lambda: [16, 16, 8, 2, 2])
    n_layers_q: int = 3
    use_spectral_norm: bool = False
    gin_channels: int = 512
    slm: SLMConfig = Field(default_factory=SLMConfig)


# Model presets (the Train tab's "Model size"). "small" is for trying the workflow on a CPU, not for quality:
# narrower networks and half-length training segments; the data section (44.1 kHz, hop 512) and the WavLM
# discriminator's shape stay, so the same dataset and WavLM model work. A Bert-VITS2 2.3 base model does not
# fit it (train from scratch).
SMALL_MODEL = {"inter_channels": 96, "hidden_channels": 96, "filter_channels": 384, "n_layers": 4,
               "n_layers_q": 2, "gin_channels": 128, "upsample_initial_channel": 128,
               "resblock_kernel_sizes": [3, 7], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]]}
SMALL_SEGMENT_SIZE = 8192
MODEL_PRESETS = ("full", "small")


def _preset_values(name: str) -> tuple[dict, int]:
    if name == "full":
        full = ModelConfig()
        return {k: getattr(full, k) for k in SMALL_MODEL}, TrainConfig().segment_size
    if name == "small":
        return SMALL_MODEL, SMALL_SEGMENT_SIZE
    raise KoeError(f"unknown model preset {name!r}", fix=f"use one of {', '.join(MODEL_PRESETS)}")


def model_preset(cfg: VoiceConfig) -> str:
    """"full" (Bert-VITS2 2.3 shapes), "small", or "custom" (config.json edited to other values)."""
    for name in MODEL_PRESETS:
        values, segment = _preset_values(name)
        if cfg.train.segment_size == segment and all(getattr(cfg.model, k) == v for k, v in values.items()):
            return name
    return "custom"


def apply_model_preset(cfg: VoiceConfig, name: str) -> None:
    """Set the model shapes and segment size of preset `name` ("full" or "small") on `cfg`.

    Checkpoints trained with other shapes no longer fit. Raises KoeError for an unknown name.
    """
    values, segment = _preset_values(name)
    for key, value in values.items():
        setattr(cfg.model, key, copy.deepcopy(value))
    cfg.train.segment_size = segment


class VoiceConfig(_Section):
    """A whole Bert-VITS2 config.json: `train`, `data`, `model` and `version`.

    `architecture` says which network the file describes: "2.2" (CLAP emotion) for `"version": "2.2"`
    without a `model.slm` block, else "2.3". The version string alone is not enough: the v2.3 release
    shipped configs that still said "2.2" (2.2 spec §0), and those have the `slm` block 2.2 never had.
    A checkpoint's keys overrule both (`vits.checkpoints.generator_version`).
    """

    train: TrainConfig = Field(default_factory=TrainConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    version: str = "2.3"

    @property
    def architecture(self) -> str:
        """"2.2" or "2.3": the generator this config builds (see the class docstring)."""
        if str(self.version).strip().startswith("2.2") and "slm" not in self.model.model_fields_set:
            return "2.2"
        return "2.3"

    @property
    def num_languages(self) -> int:
        """3 for a plain 2.3 voice; 4 for a Korean-enabled one (`"model": {"num_languages": 4}`, docs/korean.md)."""
        return int((self.model.model_extra or {}).get("num_languages", 3))

    @property
    def korean(self) -> bool:
        return self.num_languages >= 4

    @property
    def n_vocab(self) -> int:
        return table_sizes(self.num_languages)[0]

    @property
    def spec_channels(self) -> int:
        return self.data.filter_length // 2 + 1

    @property
    def segment_frames(self) -> int:
        return self.train.segment_size // self.data.hop_length

    @classmethod
    def load(cls, path: str | os.PathLike) -> VoiceConfig:
        """Read a config.json. Raises KoeError naming the file when it is missing or malformed."""
        path = Path(path)
        if not path.is_file():
            raise KoeError("config file not found", where=str(path),
                           fix="run the text stage (python -m pipeline.text) to write configs/config.json")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise KoeError(f"not valid JSON ({exc.msg})", where=f"{path}:{exc.lineno}",
                           fix="fix the JSON syntax at that line") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise KoeError(f"bad value for {loc}: {first['msg']}", where=str(path),
                           fix=f"correct '{loc}' in the file") from None

    def to_dict(self) -> dict:
        """The JSON content; a 2.2 config is written without the `slm` block (2.2 has no WavLM)."""
        out = self.model_dump(mode="json")
        if self.architecture == "2.2":
            out["model"].pop("slm", None)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the config atomically (temp file + rename), UTF-8, human-readable."""
        write_text_atomic(Path(path), json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n")
