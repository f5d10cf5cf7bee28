"""CLAP emotion embeddings for Bert-VITS2 2.2 voices (2.2 spec §6.3, §8.1).

    clap = ClapEmbedder("models/emotional/clap-htsat-fused")
    emo = clap.text_feature("Happy")                  # [512, 1] float32, unit L2 norm
    emo = clap.audio_feature(wave, sampling_rate=44100)  # resampled to 48 kHz first

The model is `laion/clap-htsat-fused` through transformers' `ClapModel` with its feature extractor and
tokenizer, loaded from a local folder (`download_clap` fetches it; nothing downloads at import). Both
features are the projected, L2-normalised embedding, transposed to [512, 1] like Bert-VITS2's
`clap_wrapper`; that is also what a `<clip>.emo.npy` file holds. A 2.2 model takes them as `emo`
[B, 512] (squeeze the last axis).

Audio features are extracted clip by clip, as 2.2's `clap_gen.py` does (the feature extractor marks a
lone clip under 10 s as "longer" and fuses four copies of its mel; in a batch of short clips it would
mark one at random), and then run through the model as one batch. Audio at another rate is resampled to
48 kHz with soxr VHQ; 2.2's clap_gen.py used librosa 0.9's default (kaiser_best), so the embedding of a
44.1 kHz clip is close to, not bit-equal with, a 2.2 `.emo.npy`. Clips over 10 s use random crops, as in 2.2.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vits.errors import HUB, KoeError, hub_download_fix, one_line_reason

CLAP_REPO = "laion/clap-htsat-fused"
CLAP_RATE = 48000  # the feature extractor's rate (preprocessor_config.json)
EMBED_DIM = 512  # CLAP projection size = the 2.2 model's emotion input
DEFAULT_TEXT_PROMPT = "Happy"  # the 2.2 web UI's default prompt
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _missing(folder: Path, why: str) -> KoeError:
    return KoeError(f"CLAP model {why} (2.2 voices need {CLAP_REPO} for emotion prompts and features)",
                    where=str(folder),
                    fix=("download it with `python -m pipeline.download clap` (a mirror: add --endpoint "
                         "https://hf-mirror.com, or set HF_ENDPOINT / config.yml hub.endpoint), or put the files of "
                         f"https://huggingface.co/{CLAP_REPO} in that folder (config.json, preprocessor_config.json, "
                         "the tokenizer files and the weights); the folder is `clap:` in config.yml"))


def check_clap_dir(folder: str | os.PathLike) -> Path:
    """Check that `folder` holds a CLAP model (configs, tokenizer, weights) without loading it.

    Returns the folder. Raises KoeError naming the folder, what is missing and how to download it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise _missing(folder, "folder not found")
    for name in ("config.json", "preprocessor_config.json"):
        if not (folder / name).is_file():
            raise _missing(folder, f"folder has no {name}")
    if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.json").is_file():
        raise _missing(folder, "folder has no tokenizer (tokenizer.json or vocab.json + merges.txt)")
    if not any((folder / name).is_file() for name in _WEIGHTS):
        raise _missing(folder, "folder has no weights (model.safetensors or pytorch_model.bin)")
    return folder


def download_clap(folder: str | os.PathLike, endpoint: str | None = None, force: bool = False,
                  log=None) -> Path:
    """Fetch laion/clap-htsat-fused into `folder` (explicit call only; never at import or in tests).

    `endpoint` is a hub mirror (default $HF_ENDPOINT, else the official hub); a folder that already
    holds the model is left alone unless `force`. Returns the folder. Raises KoeError when the download
    fails (with the mirror hint) or the result is incomplete.
    """
    from huggingface_hub import snapshot_download

    folder = Path(folder)
    if not force:
        try:
            return check_clap_dir(folder)
        except KoeError:
            pass
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    if log:
        log(f"downloading {CLAP_REPO} to {folder} from {endpoint or 'https://huggingface.co'}")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(repo_id=CLAP_REPO, local_dir=str(folder), endpoint=endpoint,
                          allow_patterns=["*.json", "*.txt", "*.safetensors"])
        if not any((folder / name).is_file() for name in _WEIGHTS):  # older snapshots: the .bin only
            snapshot_download(repo_id=CLAP_REPO, local_dir=str(folder), endpoint=endpoint,
                              allow_patterns=["pytorch_model.bin"])
    except Exception as exc:  # network, auth and offline-mode errors all end here
        raise KoeError(f"could not download {CLAP_REPO} from {endpoint or HUB} ({one_line_reason(exc)})",
                       where=str(folder), fix=hub_download_fix(endpoint)) from None
    return check_clap_dir(folder)


def read_audio(source: str | os.PathLike | bytes, where: str | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 audio and its rate from a file path or the bytes of a file (wav, flac, ogg, mp3).

    Raises KoeError naming the file (or `where`) when it cannot be decoded.
    """
    import soundfile as sf

    name = where or ("uploaded audio" if isinstance(source, bytes) else str(source))
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise KoeError("audio file not found", where=name, fix="check the path of the reference clip")
    try:
        audio, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else str(source),
                              dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError ...
        raise KoeError(f"cannot read the audio ({type(exc).__name__}: {exc})", where=name,
                       fix="use a wav, flac, ogg or mp3 file") from None
    if audio.size == 0:
        raise KoeError("the audio file is empty", where=name, fix="use a clip of speech (a few seconds)")
    return audio.mean(axis=1).astype(np.float32), int(rate)


def to_clap_rate(wave: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Mono float32 audio at 48 kHz (soxr VHQ resampling when the rate differs)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:  # [C, L] -> mono
        wave = wave.mean(axis=0)
    if int(sampling_rate) == CLAP_RATE:
        return np.ascontiguousarray(wave)
    import soxr

    return soxr.resample(wave, int(sampling_rate), CLAP_RATE, quality="VHQ").astype(np.float32, copy=False)


class ClapEmbedder:
    """A frozen, eval-mode CLAP model that turns text prompts and audio into 2.2 emotion vectors.

    Args:
        model_dir: local folder of laion/clap-htsat-fused (or any ClapModel with a 512-d projection).
        device: torch device for the model.
    Raises:
        KoeError: when the folder or its files are missing, cannot be loaded, or the projection is not 512.
    """

    def __init__(self, model_dir: str | os.PathLike, device: str | torch.device = "cpu"):
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel  # heavy: only when used

        model_dir = check_clap_dir(model_dir)
        try:
            model = ClapModel.from_pretrained(str(model_dir))
            self.feature_extractor = ClapFeatureExtractor.from_pretrained(str(model_dir))
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        except (OSError, ValueError, KeyError) as exc:
            raise _missing(model_dir, f"could not be loaded ({type(exc).__name__}: {exc})") from None
        if int(model.config.projection_dim) != EMBED_DIM:
            raise KoeError(f"CLAP model projects to {model.config.projection_dim} dimensions, 2.2 voices need "
                           f"{EMBED_DIM}", where=str(model_dir), fix=f"use {CLAP_REPO}")
        if int(self.feature_extractor.sampling_rate) != CLAP_RATE:
            raise KoeError(f"CLAP feature extractor runs at {self.feature_extractor.sampling_rate} Hz, expected "
                           f"{CLAP_RATE}", where=str(model_dir / "preprocessor_config.json"),
                           fix=f"use the preprocessor_config.json of {CLAP_REPO}")
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model_dir = model_dir
        self.device = torch.device(device)
        self.model = model.to(self.device)

    @staticmethod
    def _pooled(output) -> torch.Tensor:
        # transformers 4.x returns the normalised tensor, 5.x an output object holding it (2.2 spec §6.3)
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    @torch.inference_mode()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, 512] float32 unit-norm CLAP text embeddings of the prompts (on the CPU).

        Raises KoeError for an empty prompt.
        """
        prompts = [str(p) for p in prompts]
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                raise KoeError(f"emotion prompt {i + 1} is empty", fix='type a word or phrase, e.g. "Happy" or "悲伤"')
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return self._pooled(self.model.get_text_features(**tokens)).float().cpu()

    def text_feature(self, prompt: str) -> torch.Tensor:
        """The CLAP text embedding of one prompt as Bert-VITS2's clap_wrapper returns it: [512, 1] float32."""
        return self.text_features([prompt])[0].reshape(EMBED_DIM, 1)

    @torch.inference_mode()
    def audio_features(self, waves: Sequence[np.ndarray], sampling_rate: int | Sequence[int] = CLAP_RATE,
                       names: Sequence[str] | None = None) -> torch.Tensor:
        """[N, 512] float32 unit-norm CLAP audio embeddings (on the CPU), one per waveform.

        `waves` are mono (or [C, L]) float arrays at `sampling_rate` (one rate, or one per wave); they are
        resampled to 48 kHz. Each clip's input features are made on its own (see the module docstring),
        the model runs on the whole batch. Raises KoeError naming the clip (`names`) for an empty wave.
        """
        rates = [sampling_rate] * len(waves) if isinstance(sampling_rate, (int, np.integer)) else list(sampling_rate)
        inputs, longer = [], []
        for i, (wave, rate) in enumerate(zip(waves, rates)):
            wave = to_clap_rate(wave, rate)
            if wave.size == 0:
                where = names[i] if names else f"clip {i + 1}"
                raise KoeError("the audio is empty", where=where, fix="use a clip of speech (a few seconds)")
            one = self.feature_extractor(wave, sampling_rate=CLAP_RATE, return_tensors="pt")
            inputs.append(one["input_features"])
            longer.append(one["is_longer"])
        if not inputs:
            return torch.zeros(0, EMBED_DIM)
        features = torch.cat(inputs).to(self.device)
        is_longer = torch.cat(longer).to(self.device)
        return self._pooled(self.model.get_audio_features(input_features=features, is_longer=is_longer)).float().cpu()

    def audio_feature(self, wave: np.ndarray, sampling_rate: int = CLAP_RATE) -> torch.Tensor:
        """The CLAP audio embedding of one clip as Bert-VITS2's clap_wrapper returns it: [512, 1] float32."""
        return self.audio_features([wave], sampling_rate)[0].reshape(EMBED_DIM, 1)

    def audio_file_feature(self, path: str | os.PathLike | bytes, where: str | None = None) -> torch.Tensor:
        """`audio_feature` of an audio file (a path or the file's bytes). Raises KoeError for unreadable audio."""
        wave, rate = read_audio(path, where)
        return self.audio_feature(wave, rate)


PROMPT_MODES = ("text", "audio")


def emotion_vector(embedder: ClapEmbedder, *, text: str | None = None,
                   audio: str | os.PathLike | bytes | None = None, mode: str | None = None,
                   where: str | None = None) -> torch.Tensor:
    """The [512] emotion vector a 2.2 voice takes, by the 2.2 app's rule (2.2 spec §6.2, §6.4).

    `mode` "audio": the CLAP audio embedding of the reference clip `audio` (a path or a file's bytes;
    `where` names it in errors); "text": the CLAP text embedding of the prompt `text` ("Happy" when
    empty); None: the clip when one is given, else the text prompt.
    Raises KoeError for an unknown mode, "audio" without a clip, or unreadable audio.
    """
    if mode not in (None, *PROMPT_MODES):
        raise KoeError(f"unknown emotion prompt mode {mode!r}", fix="use 'text' or 'audio'")
    if mode == "audio" and audio is None:
        raise KoeError("the audio prompt needs a reference clip", where=where,
                       fix="give a short clip (wav, flac, ogg or mp3) whose emotion the voice should take, or use "
                           "the text prompt")
    if audio is not None and mode != "text":
        return embedder.audio_file_feature(audio, where).reshape(EMBED_DIM)
    prompt = DEFAULT_TEXT_PROMPT if text is None or not str(text).strip() else str(text)
    return embedder.text_feature(prompt).reshape(EMBED_DIM)


def takes_emotion(voice) -> bool:
    """True for a loaded Bert-VITS2 2.2 (CLAP) voice, torch or ONNX, whose synthesis needs `emo`
    (`Voice.needs_emotion` / `OnnxVoice.needs_emotion`, decided by the checkpoint's keys or the graphs)."""
    return bool(getattr(voice, "needs_emotion", False))


def is_emo_file(path: str | os.PathLike) -> bool:
    """True if `path` holds what a 2.2 loader reads: a torch-saved float32 [512, 1] tensor (2.2 spec §8.1)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        t = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated or foreign file: regenerate it
        return False
    return (isinstance(t, torch.Tensor) and t.dtype == torch.float32 and tuple(t.shape) == (EMBED_DIM, 1)
            and bool(torch.isfinite(t).all()))
