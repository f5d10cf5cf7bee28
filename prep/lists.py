"""Text stage: esd.list -> filelists/train.list + val.list (7-field cleaned lines, spec §7.4) + config.json.

Every line goes through the text frontend (`vits.text.clean_text`). Lines that are malformed, name a
missing clip, repeat a clip, or hold nothing the frontend can read are dropped and listed with their
line number and reason (in filelists/text_state.json, which the health report reads). The split is
per speaker: every speaker with at least 5 clips gets at least one validation clip.
"""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.fileio import read_json, write_json
from vits.lists import read_esd_list, wav_field, write_lines
from vits.text.zh import g2pw
from vits.voice_folder import (
    CONFIG,
    ESD_LIST,
    TEXT_STATE,
    TRAIN_LIST,
    USERDICT,
    VAL_LIST,
    WAVS,
    resolve_wav,
)

MIN_VAL_CLIPS_SPEAKER = 5  # speakers with at least this many clips get a validation clip


@dataclass
class TextOptions:
    """Split and config knobs."""

    val_per_speaker: int = 2
    max_val_total: int = 12
    seed: int = 1234
    batch_size: int | None = None  # training batch size to write; None keeps the config's (TrainConfig default)
    userdict: str | None = None  # default: <voice>/userdict.txt when present


@dataclass
class DroppedLine:
    """A line left out of the lists: where it was, which clip, and why."""

    line_no: int
    wav: str
    kind: str  # malformed | missing | duplicate | unreadable | frontend_error
    reason: str


@dataclass
class TextResult:
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    spk2id: dict[str, int] = field(default_factory=dict)
    dropped: list[DroppedLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: bool = False


def suggest_batch_size(gpu_memory_bytes: int | None) -> int | None:
    """A per-GPU batch size that fits the default 2.3 model (with WavLM discriminator) in this much memory.

    Rough figures from Bert-VITS2 practice: ~8 GB -> 4, 12 GB -> 6, 16 GB -> 8, 24 GB -> 12, 40+ GB -> 16+.
    Returns None without a GPU.
    """
    if not gpu_memory_bytes:
        return None
    gb = gpu_memory_bytes / 2**30
    for limit, size in ((6, 1), (8, 2), (11, 4), (15, 6), (20, 8), (30, 12), (45, 16), (70, 24)):
        if gb < limit:
            return size
    return 32


def gpu_memory() -> int | None:
    """Total memory of the first CUDA device in bytes, or None."""
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory)
    except Exception:  # noqa: BLE001 - a broken CUDA install must not stop list building
        return None
    return None


def merge_segments(segments):
    """Join same-language Cleaned segments into one (one boundary `_` at each end, word2ph re-joined)."""
    if len(segments) == 1:
        return segments[0]
    from dataclasses import replace

    first = segments[0]
    joiner = " " if first.language == "EN" else ""
    word_phones = None
    if all(s.word_phones is not None for s in segments):
        word_phones = [w for s in segments for w in s.word_phones]
    return replace(
        first,
        norm_text=joiner.join(s.norm_text for s in segments),
        phones=["_"] + [p for s in segments for p in s.phones[1:-1]] + ["_"],
        tones=[0] + [t for s in segments for t in s.tones[1:-1]] + [0],
        word2ph=[1] + [w for s in segments for w in s.word2ph[1:-1]] + [1],
        word_phones=word_phones,
        unknown=[u for s in segments for u in s.unknown],
    )


def clean_line(text: str, language: str, user_dict=None):
    """Run the frontend on one line. Returns (Cleaned, warnings list). Raises KoeError with the reason."""
    from vits.text import clean_text

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segments = clean_text(text, language, user_dict=user_dict)
    notes = [str(w.message) for w in caught]
    if not segments or not any(s.readable() for s in segments):
        raise KoeError("nothing the text frontend can read (only symbols/emoji?)" +
                       (f": {notes[0]}" if notes else ""), fix="fix or delete the line")
    # A training line has one language (as in Bert-VITS2, whose ZH g2p drops Latin words): keep the
    # line's language and say what was left out.
    other = [s for s in segments if s.language != language]
    segments = [s for s in segments if s.language == language and s.readable()]
    if not segments:
        raise KoeError(f"no {language} text in the line (it reads as "
                       f"{'+'.join(sorted({s.language for s in other}))})",
                       fix="set the line's language field to the language spoken")
    if other:
        notes.append("left out (other language): " + " ".join(s.norm_text for s in other))
    cleaned = merge_segments(segments)
    if sum(cleaned.word2ph) != len(cleaned.phones) or len(cleaned.tones) != len(cleaned.phones):
        raise KoeError("frontend produced inconsistent phones/tones/word2ph", fix="report this line as a bug")
    return cleaned, notes + [f"read as UNK/guessed: {u}" for u in cleaned.unknown]


def _fingerprint(voice_dir: Path, esd: Path, opts: TextOptions, userdict: Path | None) -> str:
    h = hashlib.sha256(esd.read_bytes() if esd.is_file() else b"")
    h.update(repr(sorted(vars(opts).items())).encode())
    h.update(g2pw.describe().encode())  # switching text.zh_polyphones changes the phones
    if userdict and userdict.is_file():
        h.update(userdict.read_bytes())
    root = voice_dir / WAVS
    if root.is_dir():
        h.update("\n".join(sorted(p.relative_to(voice_dir).as_posix() for p in root.rglob("*.wav"))).encode())
    return h.hexdigest()


def split_per_speaker(items: dict[str, list[str]], opts: TextOptions) -> tuple[list[str], list[str]]:
    """Shuffle each speaker's lines (seeded) and move some to validation.

    Speakers with >= 5 clips give min(val_per_speaker, n // 5) (at least 1); the total is capped at
    max_val_total unless that would leave an eligible speaker without one.
    """
    rng = random.Random(opts.seed)
    train, val, spare = [], [], []
    for speaker in items:
        lines = list(items[speaker])
        rng.shuffle(lines)
        n_val = 0 if len(lines) < MIN_VAL_CLIPS_SPEAKER else max(1, min(opts.val_per_speaker, len(lines) // 5))
        if n_val:
            val.append(lines[0])
        spare += lines[1:n_val]
        train += lines[n_val:]
    room = max(0, opts.max_val_total - len(val))
    val += spare[:room]
    train += spare[room:]
    return train, val


def build_filelists(voice_dir: str | os.PathLike, opts: TextOptions | None = None, *, force: bool = False,
                    progress: Callable[[int, int, str], None] | None = None) -> TextResult:
    """esd.list -> filelists/train.list, filelists/val.list and configs/config.json.

    Takes: voice folder; TextOptions; `force` rebuilds even when nothing changed.
    Returns: TextResult (lines, spk2id, dropped lines with reasons). Raises KoeError when esd.list is
    missing or no line survives.
    """
    voice_dir = Path(voice_dir)
    opts = opts or TextOptions()
    esd = voice_dir / ESD_LIST
    if not esd.is_file():
        raise KoeError("esd.list not found", where=str(esd),
                       fix="run the transcribe stage, or write wav|speaker|LANG|text lines yourself")
    userdict_path = Path(opts.userdict) if opts.userdict else voice_dir / USERDICT
    state_path = voice_dir / TEXT_STATE
    fingerprint = _fingerprint(voice_dir, esd, opts, userdict_path)
    state = read_json(state_path, {})
    outputs = [voice_dir / TRAIN_LIST, voice_dir / VAL_LIST, voice_dir / CONFIG]
    if not force and state.get("fingerprint") == fingerprint and all(p.is_file() for p in outputs):
        result = TextResult(skipped=True, spk2id=state.get("spk2id", {}))
        result.dropped = [DroppedLine(**d) for d in state.get("dropped", [])]
        return result

    try:
        import vits.text  # noqa: F401
    except ImportError as exc:
        raise KoeError(f"the text frontend (vits.text) is not available ({exc})",
                       fix="install the project completely (scripts/start.sh)") from None
    user_dict = None
    if userdict_path.is_file():
        from vits.text import UserDict

        user_dict = UserDict.load(userdict_path)

    entries, problems = read_esd_list(esd)
    result = TextResult()
    result.dropped += [DroppedLine(p.line_no, wav_field(p.text), "malformed", p.reason) for p in problems]
    seen: dict[str, int] = {}
    per_speaker: dict[str, list[str]] = {}
    has_korean = False
    notes: dict[str, list[str]] = {}
    total = len(entries)
    for i, e in enumerate(entries, 1):
        found = resolve_wav(voice_dir, e.wav)
        if found is None:
            result.dropped.append(DroppedLine(e.line_no, e.wav, "missing", "audio file not found"))
        elif found[0] in seen:
            result.dropped.append(DroppedLine(e.line_no, e.wav, "duplicate",
                                              f"same clip as line {seen[found[0]]}"))
        else:
            seen[found[0]] = e.line_no
            try:
                cleaned, line_notes = clean_line(e.text, e.language, user_dict)
            except KoeError as exc:
                result.dropped.append(DroppedLine(e.line_no, e.wav, "unreadable", exc.problem))
            except Exception as exc:  # noqa: BLE001 - one odd line must not stop the dataset; it is reported
                result.dropped.append(DroppedLine(e.line_no, e.wav, "frontend_error",
                                                  f"{type(exc).__name__}: {exc}"))
            else:
                per_speaker.setdefault(e.speaker, []).append(cleaned.to_line(found[0], e.speaker))
                has_korean = has_korean or cleaned.language == "KO"
                if line_notes:
                    notes[found[0]] = line_notes
        if progress:
            progress(i, total, e.wav)
    if not per_speaker:
        raise KoeError("no usable line in esd.list (" + "; ".join(
            f"line {d.line_no}: {d.reason}" for d in result.dropped[:5]) + ")", where=str(esd),
            fix="fix the lines listed above")

    result.dropped.sort(key=lambda d: d.line_no)
    train, val = split_per_speaker(per_speaker, opts)
    if not val:
        # Training needs a validation list for its audio samples; reuse one training clip (no speaker has 5).
        val = [train[0]]
        result.notes.append("no speaker has 5 clips: the validation list reuses one training clip")
    result.train, result.val = train, val
    # The lists are rebuilt from esd.list (the file users edit), so no backup of the old ones.
    write_lines(outputs[0], train, backup=False)
    write_lines(outputs[1], val, backup=False)

    cfg = VoiceConfig.load(outputs[2]) if outputs[2].is_file() else VoiceConfig()
    old_ids = list(cfg.data.spk2id) if cfg.data.spk2id else []
    # Keep the speaker order of an existing config so ids stay stable across re-runs.
    order = [s for s in old_ids if s in per_speaker] + [s for s in per_speaker if s not in old_ids]
    result.spk2id = {s: i for i, s in enumerate(order)}
    cfg.data.spk2id = result.spk2id
    cfg.data.n_speakers = len(result.spk2id)
    cfg.data.training_files = TRAIN_LIST
    cfg.data.validation_files = VAL_LIST
    if cfg.architecture != "2.2":  # a 2.2-CLAP voice (prep/voice_version.py) stays 2.2
        cfg.version = "2.3"
    if has_korean and not cfg.korean:
        if cfg.architecture == "2.2":
            raise KoeError("Korean lines in a 2.2 (CLAP) voice: Korean needs the 2.3 network", where=str(esd),
                           fix="remove the KO lines or make the voice a 2.3 one")
        cfg.model.num_languages = 4  # the Korean-enabled network (docs/korean.md); never switched back off
        result.notes.append("Korean lines: the voice uses the Korean-enabled network (model.num_languages = 4)")
    if opts.batch_size:
        cfg.train.batch_size = int(opts.batch_size)
    suggested = suggest_batch_size(gpu_memory())
    if suggested:
        cfg.train.suggested_batch_size = suggested  # extra key; Bert-VITS2 ignores it
    cfg.save(outputs[2])
    write_json(state_path, {
        "fingerprint": fingerprint, "spk2id": result.spk2id, "train": len(train), "val": len(val),
        "dropped": [vars(d) for d in result.dropped], "notes": notes, "messages": result.notes,
        "suggested_batch_size": suggested, "batch_size": cfg.train.batch_size,
    })
    return result
