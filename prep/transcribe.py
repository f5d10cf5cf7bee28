"""Transcribe: openai-whisper over the clips in wavs/ -> esd.list + esd.meta.json (confidence and flags).

Clips are decoded in batches (one 30 s window each; clips are at most ~12 s). A clip whose result looks
unreliable is re-decoded at higher temperatures, as whisper's own transcribe does. Results with no
speech or a hallucination signature (repetition, high compression ratio, text too long for the audio,
subtitle credits) are flagged and left out of esd.list (kept in the meta file for review).
Re-running only transcribes clips that are in neither file.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from prep.audio import load_audio
from vits.errors import KoeError
from vits.fileio import read_json, write_json
from vits.lists import read_esd_list, wav_field, write_lines
from vits.voice_folder import ESD_LIST, ESD_META, WAVS, list_clips

WHISPER_TO_LANG = {"zh": "ZH", "ja": "JP", "en": "EN", "ko": "KO"}
EXCLUDING_FLAGS = frozenset({"empty", "no_speech", "repetition", "high_compression", "text_too_long",
                             "subtitle_credit", "unsupported_language", "clip_over_30s"})
# Phrases Whisper invents over silence/music (from subtitle credits in its training data).
_CREDITS = re.compile(r"字幕|订阅|訂閱|点赞|點贊|ご視聴|チャンネル登録|thanks? for watching|amara\.org|subscribe",
                      re.IGNORECASE)
_REPEAT = re.compile(r"(.{2,30}?)\1{3,}|(.)\2{7,}", re.DOTALL)
_MAX_CHARS_PER_SECOND = {"ZH": 12.0, "JP": 15.0, "EN": 30.0, "KO": 12.0}


@dataclass
class TranscribeOptions:
    """Whisper settings. `model` is a name (tiny ... large-v3) or a path to a .pt checkpoint."""

    model: str = "medium"
    language: str = "auto"  # zh | ja | en | ko | auto
    initial_prompt: str | None = None
    beam_size: int = 5
    clips_per_decode: int = 8  # clips Whisper decodes together (GPU memory), not the training batch size
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    simplify_chinese: bool = True
    keep_flagged: bool = False
    device: str = "auto"
    download_root: str | None = None
    compression_ratio_threshold: float = 2.4
    logprob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    max_tokens: int | None = None  # per clip; None = whisper's 224


@dataclass
class ClipTranscript:
    """One clip's transcription and confidence (the row of the studio's review table)."""

    wav: str
    speaker: str
    language: str
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    duration: float
    flags: list[str] = field(default_factory=list)
    excluded: bool = False


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_model_spec(model: str) -> None:
    """Raise KoeError unless `model` is an existing .pt file or a known Whisper name (loads nothing)."""
    import whisper

    if model.endswith(".pt") or os.sep in model or "/" in model:
        if not Path(model).is_file():
            raise KoeError("Whisper checkpoint not found", where=model,
                           fix="give an existing .pt file or a model name such as medium or large-v3")
    elif model not in whisper.available_models():
        raise KoeError(f"unknown Whisper model {model!r}",
                       fix="use one of " + ", ".join(whisper.available_models()) + " or a path to a .pt file")


def load_whisper(model: str, device: str = "auto", download_root: str | None = None):
    """Load a Whisper model by name (downloads into `download_root` on first use) or from a local .pt file.

    Raises KoeError for a missing file, an unknown name or a failed download.
    """
    import whisper

    device = resolve_device(device)
    check_model_spec(model)
    from prep.download import one_line_reason, whisper_fix

    named = model in whisper.available_models()
    root = Path(download_root or Path.home() / ".cache" / "whisper")
    try:
        local = root / f"{model}.pt"
        if named and local.is_file():
            # By path: openai-whisper would check a converted hub checkpoint against OpenAI's SHA256 and download.
            loaded = whisper.load_model(str(local), device=device)
            try:
                loaded.set_alignment_heads(whisper._ALIGNMENT_HEADS[model])
            except (ValueError, RuntimeError):  # a checkpoint of another size under this name: default heads
                pass
            return loaded
        return whisper.load_model(model, device=device, download_root=download_root)
    except (RuntimeError, OSError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        if named and not (root / f"{model}.pt").is_file():
            raise KoeError(f"Whisper {model} is not downloaded and the download failed ({one_line_reason(exc)})",
                           where=str(root), fix=whisper_fix(model, root)) from None
        raise KoeError(f"cannot load Whisper model ({one_line_reason(exc)})", where=model,
                       fix="the file is damaged or not a Whisper checkpoint: delete it and download it again "
                           "(python -m pipeline.download whisper) or pick another .pt file") from None


def to_simplified(text: str) -> str:
    """Traditional -> Simplified Chinese (OpenCC t2s; Whisper often answers in Traditional)."""
    global _T2S
    if _T2S is None:
        from opencc import OpenCC

        _T2S = OpenCC("t2s")
    return _T2S.convert(text)


_T2S = None


def clean_transcript(text: str) -> str:
    """One line of text that cannot break the list: no `|`, no newlines, single spaces."""
    return re.sub(r"\s+", " ", text.replace("|", " ")).strip()


def hallucination_flags(text: str, language: str, duration: float, avg_logprob: float, no_speech_prob: float,
                        compression_ratio: float, opts: TranscribeOptions) -> list[str]:
    """Flags for one result; those in EXCLUDING_FLAGS keep the clip out of esd.list."""
    flags = []
    if not text:
        flags.append("empty")
    if no_speech_prob > opts.no_speech_threshold and avg_logprob < opts.logprob_threshold:
        flags.append("no_speech")
    if compression_ratio > opts.compression_ratio_threshold:
        flags.append("high_compression")
    if _REPEAT.search(text):
        flags.append("repetition")
    if language not in WHISPER_TO_LANG.values():
        flags.append("unsupported_language")
    limit = _MAX_CHARS_PER_SECOND.get(language, 30.0)
    if duration > 0 and len(text.replace(" ", "")) > limit * duration + 10:
        flags.append("text_too_long")
    if _CREDITS.search(text):
        flags.append("subtitle_credit")
    if duration > 30.0:  # Whisper hears one 30 s window: the rest of the clip is not transcribed
        flags.append("clip_over_30s")
    if avg_logprob < opts.logprob_threshold and "no_speech" not in flags:
        flags.append("low_confidence")
    return flags


def decode_batch(model, audios: list[np.ndarray], opts: TranscribeOptions) -> list:
    """Decode 16 kHz clips with temperature fallback. Returns whisper DecodingResults in input order."""
    import torch
    import whisper

    device = next(model.parameters()).device
    fp16 = device.type == "cuda"
    mels = torch.stack([
        whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(a)), n_mels=model.dims.n_mels)
        for a in audios]).to(device)
    language = None if opts.language == "auto" else opts.language
    results: list = [None] * len(audios)
    pending = list(range(len(audios)))
    for i, t in enumerate(opts.temperatures):
        kwargs = {"beam_size": opts.beam_size if opts.beam_size > 1 else None} if t == 0 else {"best_of": 5}
        options = whisper.DecodingOptions(task="transcribe", language=language, temperature=t,
                                          prompt=opts.initial_prompt, without_timestamps=True, fp16=fp16,
                                          sample_len=opts.max_tokens, **kwargs)
        with torch.inference_mode():
            if options.beam_size or options.best_of:
                # whisper 20250625 mis-broadcasts audio features for beam/best-of over a batch: one at a time
                out = [whisper.decode(model, mels[j], options) for j in pending]
            else:
                out = whisper.decode(model, mels[pending], options)
        retry = []
        for idx, res in zip(pending, out):
            results[idx] = res
            silent = res.no_speech_prob > opts.no_speech_threshold and res.avg_logprob < opts.logprob_threshold
            unreliable = (res.compression_ratio > opts.compression_ratio_threshold
                          or res.avg_logprob < opts.logprob_threshold)
            if unreliable and not silent and i + 1 < len(opts.temperatures):
                retry.append(idx)
        pending = retry
        if not pending:
            break
    return results


def _meta_key_set(meta: dict) -> set[str]:
    return set(meta.get("clips", {}))


def transcribe_voice(voice_dir: str | os.PathLike, opts: TranscribeOptions | None = None, *, force: bool = False,
                     model=None, progress: Callable[[int, int, str], None] | None = None,
                     only: list[str] | None = None) -> dict:
    """Transcribe the clips of a voice that esd.list/esd.meta.json do not cover yet.

    Takes: voice folder; options; `force` re-transcribes every clip (esd.list is backed up first);
    an already loaded whisper `model` (else loaded from opts.model); progress(done, total, item);
    `only`: re-transcribe just these clips (wav paths as in esd.list), whatever was there before.
    With `opts.keep_flagged`, clips an earlier run left out are put back into esd.list without decoding
    them again. Returns: {"transcribed": n, "skipped": n, "kept": n, "excluded": [(wav, flags)],
    "failed": [(wav, reason)], "backup": path or None}. Raises KoeError when wavs/ is empty, a clip of
    `only` is not in wavs/, or the model cannot be loaded.
    """
    voice_dir = Path(voice_dir)
    opts = opts or TranscribeOptions()
    if opts.language not in ("auto", *WHISPER_TO_LANG):
        raise KoeError(f"unsupported language {opts.language!r}", fix="use zh, ja, en, ko or auto")
    if model is None:
        check_model_spec(opts.model)  # a wrong path fails now, not after a resume finds work
    clips = list_clips(voice_dir)
    if not clips:
        raise KoeError(f"no clips in {WAVS}/", where=str(voice_dir / WAVS),
                       fix="run the slice stage first (python -m pipeline.slice " + str(voice_dir) + ")")
    esd_path, meta_path = voice_dir / ESD_LIST, voice_dir / ESD_META
    entries, problems = read_esd_list(esd_path)
    raw_lines = esd_path.read_text(encoding="utf-8", errors="replace").splitlines() if esd_path.is_file() else []
    meta = read_json(meta_path, {})
    meta.setdefault("clips", {})
    clip_paths = {c for c, _ in clips}
    redo = set(clip_paths if force else only or ())
    if unknown := sorted(redo - clip_paths):
        raise KoeError(f"no such clip in {WAVS}/: {', '.join(unknown[:3])}", where=str(voice_dir),
                       fix="give the wav path as the review table shows it, e.g. wavs/spk/clip_0001.wav")
    keep_lines = [ln for ln in raw_lines if wav_field(ln) not in redo]
    for wav in redo:
        meta["clips"].pop(wav, None)
    listed = {e.wav for e in entries} - redo
    kept = _put_back_flagged(meta, listed, clip_paths, keep_lines) if opts.keep_flagged else 0
    todo = [(c, s) for c, s in clips if c not in listed and c not in _meta_key_set(meta)]
    summary = {"transcribed": 0, "skipped": len(clips) - len(todo), "kept": kept, "excluded": [], "failed": [],
               "backup": None, "problems": [str(p) for p in problems]}
    total = len(clips)
    if progress:
        progress(summary["skipped"], total, "")
    if not todo:
        if redo or kept or not esd_path.exists():
            summary["backup"] = _save(esd_path, keep_lines, meta_path, meta, backup=True)
        return summary
    if model is None:
        model = load_whisper(opts.model, opts.device, opts.download_root)
    meta["model"] = opts.model
    new_lines: list[str] = []
    backed_up = False
    done = summary["skipped"]
    for start in range(0, len(todo), max(1, opts.clips_per_decode)):
        batch = todo[start:start + max(1, opts.clips_per_decode)]
        audios, ok = [], []
        for wav, spk in batch:
            try:
                audio, _, _ = load_audio(voice_dir / wav, sample_rate=16000)
            except KoeError as exc:
                summary["failed"].append((wav, exc.problem))
                continue
            audios.append(audio)
            ok.append((wav, spk, len(audio) / 16000))
        results = decode_batch(model, audios, opts) if audios else []
        for (wav, spk, duration), res in zip(ok, results):
            code = res.language if opts.language == "auto" else opts.language
            lang = WHISPER_TO_LANG.get(code, code)
            text = clean_transcript(res.text)
            if lang == "ZH" and opts.simplify_chinese:
                text = to_simplified(text)
            flags = hallucination_flags(text, lang, duration, res.avg_logprob, res.no_speech_prob,
                                        res.compression_ratio, opts)
            excluded = bool(EXCLUDING_FLAGS.intersection(flags)) and not opts.keep_flagged
            item = ClipTranscript(wav, spk, lang, text, round(float(res.avg_logprob), 4),
                                  round(float(res.no_speech_prob), 4), round(float(res.compression_ratio), 4),
                                  float(res.temperature), round(duration, 3), flags, excluded)
            meta["clips"][wav] = asdict(item)
            if excluded:
                summary["excluded"].append((wav, flags))
            else:
                new_lines.append(f"{wav}|{spk}|{lang}|{text}")
            summary["transcribed"] += 1
        done += len(batch)
        saved = _save(esd_path, keep_lines + new_lines, meta_path, meta, backup=not backed_up)
        if saved:
            summary["backup"] = saved
        backed_up = True
        if progress:
            progress(done, total, batch[-1][0])
    return summary


def _put_back_flagged(meta: dict, listed: set[str], clip_paths: set[str], lines: list[str]) -> int:
    """Append the clips an earlier run left out (still in wavs/) to `lines`; mark them kept in `meta`."""
    kept = 0
    for wav, item in meta["clips"].items():
        if not isinstance(item, dict) or not item.get("excluded") or wav in listed or wav not in clip_paths:
            continue
        text = clean_transcript(str(item.get("text") or ""))
        if not text:
            continue  # nothing to keep: an empty result stays out until it is typed in the review table
        lines.append(f"{wav}|{item.get('speaker', '')}|{item.get('language', '')}|{text}")
        item["excluded"] = False
        kept += 1
    return kept


def _save(esd_path: Path, lines: list[str], meta_path: Path, meta: dict, backup: bool) -> str | None:
    saved = write_lines(esd_path, lines, backup=backup)
    write_json(meta_path, meta)
    return str(saved) if saved else None
