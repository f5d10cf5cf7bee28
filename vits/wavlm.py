"""WavLM feature path of Bert-VITS2 2.3 (spec §5.6) and its losses (spec §5.3).

Audio at 44.1 kHz is resampled to 16 kHz with a windowed-sinc resampler equal to torchaudio's
`Resample` defaults (torchaudio is not a dependency), fed to a frozen HF `WavLMModel`, and the
hidden states are stacked into [B, hidden * states, F] for the WavLM discriminator.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch.nn import functional as F

from vits.errors import HUB, KoeError, hub_download_fix, one_line_reason

WAVLM_REPO = "microsoft/wavlm-base-plus"


class Resampler(torch.nn.Module):
    """Band-limited resampling with a Hann-windowed sinc (torchaudio `Resample` defaults).

    The rates are reduced by their gcd (44100/16000 -> 441/160); each of the `new` output phases has
    its own FIR kernel, applied as one strided conv1d. Cutoff = rolloff · min(orig, new) / 2, kernel
    half-width = lowpass_filter_width zero crossings of that sinc.
    """

    def __init__(self, orig: int = 44100, new: int = 16000, lowpass_filter_width: int = 6,
                 rolloff: float = 0.99):
        super().__init__()
        if orig <= 0 or new <= 0:
            raise ValueError(f"sample rates must be positive, got {orig} -> {new}")
        gcd = math.gcd(int(orig), int(new))
        self.orig = int(orig) // gcd
        self.new = int(new) // gcd
        kernel, self.width = self._kernel(self.orig, self.new, lowpass_filter_width, rolloff)
        self.register_buffer("kernel", kernel, persistent=False)

    @staticmethod
    def _kernel(orig: int, new: int, zeros: int, rolloff: float) -> tuple[torch.Tensor, int]:
        """Kernel [new, 1, 2·width + orig] (float32, built in float64) and the padding width."""
        base = min(orig, new) * rolloff
        width = math.ceil(zeros * orig / base)
        d = torch.float64
        taps = torch.arange(-width, width + orig, dtype=d) / orig  # input offsets, in units of `orig`
        # Output phase positions; rounded to float32 first, as torchaudio's default kernel is.
        phases = (-torch.arange(new, dtype=torch.float32)[:, None] / new).to(d)
        # Distance from each output instant to each input sample, in sinc zero crossings.
        t = ((phases + taps[None, :]) * base).clamp(-zeros, zeros)
        window = torch.cos(t * math.pi / zeros / 2) ** 2
        t = t * math.pi
        sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, 1.0, t))
        kernel = sinc * window * (base / orig)
        return kernel.to(torch.float32).unsqueeze(1), width

    def output_length(self, length: int) -> int:
        """Number of output samples for `length` input samples: ceil(length · new / orig)."""
        return math.ceil(self.new * length / self.orig)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [..., L] -> [..., ceil(L·new/orig)] (same dtype and device)."""
        if self.orig == self.new:
            return wav
        shape = wav.shape
        x = wav.reshape(-1, 1, shape[-1])
        x = F.pad(x, (self.width, self.width + self.orig))
        y = F.conv1d(x, self.kernel.to(dtype=wav.dtype, device=wav.device), stride=self.orig)
        y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, : self.output_length(shape[-1])]
        return y.reshape(*shape[:-1], y.shape[-1])


def _missing_model_error(model_dir: Path, why: str) -> KoeError:
    return KoeError(
        f"WavLM model {why} (training needs {WAVLM_REPO} for the WavLM discriminator)",
        where=str(model_dir),
        fix=("download it with `python -m pipeline.download wavlm` (a mirror: add --endpoint "
             "https://hf-mirror.com, or set HF_ENDPOINT / config.yml hub.endpoint), or put the files of "
             f"https://huggingface.co/{WAVLM_REPO} (config.json and the weights) in that folder; "
             "without WavLM, train with --no-wavlm"),
    )


def check_wavlm_dir(model_dir: str | os.PathLike) -> Path:
    """Check that `model_dir` holds a WavLM model (config.json + weights) without loading it.

    Returns:
        the folder as a Path.
    Raises:
        KoeError: naming the folder, what is missing and how to download microsoft/wavlm-base-plus.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise _missing_model_error(model_dir, "folder not found")
    if not (model_dir / "config.json").is_file():
        raise _missing_model_error(model_dir, "folder has no config.json")
    if not any(model_dir.glob("*.safetensors")) and not (model_dir / "pytorch_model.bin").is_file():
        raise _missing_model_error(model_dir, "folder has no weights (*.safetensors or pytorch_model.bin)")
    return model_dir


class WavLMFeatures:
    """A frozen, eval-mode HF WavLMModel that turns 44.1 kHz audio into stacked hidden states.

    Args:
        model_dir: local folder with config.json and weights of microsoft/wavlm-base-plus.
        device: torch device for the model.
        sampling_rate: rate of the audio passed to `hidden` (resampled to 16 kHz).
    Raises:
        KoeError: when the folder or its files are missing or cannot be loaded.
    """

    def __init__(self, model_dir: str | os.PathLike, device: str | torch.device = "cpu",
                 sampling_rate: int = 44100, slm_sampling_rate: int = 16000):
        from transformers import WavLMModel  # heavy import, only when WavLM is actually used

        model_dir = check_wavlm_dir(model_dir)
        try:
            model = WavLMModel.from_pretrained(str(model_dir))
        except (OSError, ValueError) as exc:
            raise _missing_model_error(model_dir, f"could not be loaded ({exc})") from None
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.resampler = Resampler(sampling_rate, slm_sampling_rate).to(self.device)
        self.hidden_size = int(model.config.hidden_size)
        self.num_states = int(model.config.num_hidden_layers) + 1

    @property
    def channels(self) -> int:
        """Channels of `hidden`'s output: hidden_size · num_states (768 · 13 = 9984 for base-plus)."""
        return self.hidden_size * self.num_states

    def hidden(self, wav: torch.Tensor) -> torch.Tensor:
        """Stacked WavLM hidden states of a waveform.

        Gradients flow to `wav` (the model itself is frozen); wrap in torch.no_grad() for real audio.

        Args:
            wav: [B, L] or [B, 1, L] audio in [-1, 1] at `sampling_rate`.
        Returns:
            [B, hidden_size · num_states, F]; channel index = state · hidden_size + feature.
        """
        if wav.dim() == 3:
            wav = wav.squeeze(1)
        # The frozen model must stay in eval mode even if a caller toggled it (no spec-augment/dropout).
        self.model.eval()
        wav16 = self.resampler(wav)
        states = self.model(input_values=wav16, output_hidden_states=True).hidden_states
        return torch.stack(states, dim=1).transpose(-1, -2).flatten(start_dim=1, end_dim=2)


def wavlm_feature_loss(h_real: torch.Tensor, h_fake: torch.Tensor, num_states: int) -> torch.Tensor:
    """loss_lm: Σ over hidden states of mean|H_real - H_fake| (real detached).

    Args:
        h_real, h_fake: [B, hidden · num_states, F] from `WavLMFeatures.hidden`.
    Returns:
        scalar tensor.
    """
    b, c, f = h_fake.shape
    diff = torch.abs(h_real.detach().float() - h_fake.float()).view(b, num_states, c // num_states, f)
    return diff.mean(dim=(0, 2, 3)).sum()


class WavLMLoss:
    """The three WavLM terms of the training step (spec §5.3), sharing one WavLM pass per signal.

    Typical step::

        h_real = wl.hidden_real(y)          # no grad
        h_fake = wl.hidden_fake(y_hat)      # grad flows into y_hat
        loss_wd = wl.discriminator(wd, h_real, h_fake)          # WD step (inputs detached)
        loss_lm, loss_lm_gen = wl.generator(wd, h_real, h_fake)  # G step
    """

    def __init__(self, features: WavLMFeatures):
        self.features = features

    def hidden_real(self, wav: torch.Tensor) -> torch.Tensor:
        """Hidden states of real audio [B,(1,)L] under no_grad."""
        with torch.no_grad():
            return self.features.hidden(wav.detach())

    def hidden_fake(self, wav_hat: torch.Tensor) -> torch.Tensor:
        """Hidden states of generated audio, differentiable w.r.t. wav_hat."""
        return self.features.hidden(wav_hat)

    def discriminator(self, wd, h_real: torch.Tensor, h_fake: torch.Tensor) -> torch.Tensor:
        """WD loss mean((1 - WD(H_real))²) + mean(WD(H_fake)²), with both embeddings detached."""
        d_real = wd(h_real.detach()).float()
        d_fake = wd(h_fake.detach()).float()
        return torch.mean((1 - d_real) ** 2) + torch.mean(d_fake ** 2)

    def generator(self, wd, h_real: torch.Tensor, h_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss_lm, loss_lm_gen): feature L1 over states and mean((1 - WD(H_fake))²)."""
        loss_lm = wavlm_feature_loss(h_real, h_fake, self.features.num_states)
        loss_lm_gen = torch.mean((1 - wd(h_fake).float()) ** 2)
        return loss_lm, loss_lm_gen


def download_wavlm(dest: str | os.PathLike, endpoint: str | None = None) -> Path:
    """Download microsoft/wavlm-base-plus into `dest` (explicit use only; never called by the library).

    Args:
        dest: target folder (e.g. settings.wavlm, models/slm/wavlm-base-plus).
        endpoint: hub mirror such as https://hf-mirror.com; default $HF_ENDPOINT or the official hub.
    Returns:
        the folder.
    Raises:
        KoeError: when the download fails.
    """
    from huggingface_hub import snapshot_download

    dest = Path(dest)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    try:
        snapshot_download(repo_id=WAVLM_REPO, local_dir=str(dest), endpoint=endpoint,
                          allow_patterns=["*.json", "*.safetensors", "pytorch_model.bin"])
    except Exception as exc:  # network, auth and disk errors all surface as one actionable message
        raise KoeError(f"could not download {WAVLM_REPO} from {endpoint or HUB} ({one_line_reason(exc)})",
                       where=str(dest), fix=hub_download_fix(endpoint)) from None
    return dest
