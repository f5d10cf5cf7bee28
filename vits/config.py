"""Typed Bert-VITS2 2.3 `config.json` (spec §1) with defaults, so an old or partial file still loads.

Unknown keys are kept (and written back) so files from other tools round-trip unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vits.errors import KoeError
from vits.fileio import write_text_atomic
from vits.symbols import SYMBOLS
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


class VoiceConfig(_Section):
    """A whole Bert-VITS2 2.3 config.json: `train`, `data`, `model` and `version`."""

    train: TrainConfig = Field(default_factory=TrainConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    version: str = "2.3"

    @property
    def n_vocab(self) -> int:
        return len(SYMBOLS)

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
        return self.model_dump(mode="json")

    def save(self, path: str | os.PathLike) -> None:
        """Write the config atomically (temp file + rename), UTF-8, human-readable."""
        write_text_atomic(Path(path), json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n")
