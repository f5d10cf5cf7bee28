"""Slice: voice-activity detection (silero-vad, weights shipped in the PyPI package) into 2-12 s clips.

Plan per file: VAD speech regions -> split regions longer than the maximum at their quietest point
-> merge neighbours across short pauses while the clip fits -> drop pieces shorter than the minimum
(reported) -> add margins. Clips are written as 44.1 kHz mono 16-bit WAV to wavs/<speaker>/.
Each file is read twice in blocks (detection at 16 kHz, then cutting at 44.1 kHz), so memory does not
grow with a recording's length.
`slices.json` records, per raw file, its size/mtime and clips, so re-runs skip finished files. A raw file
with a cleaned copy in clean/ (python -m pipeline.clean) is sliced from that copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prep.audio import (
    TARGET_RATE,
    count_clipped,
    frame_rms_db,
    is_audio_file,
    iter_audio,
    probe_audio,
    write_wav16,
)
from vits.errors import KoeError
from vits.fileio import read_json, write_json
from vits.lists import bert_path, spec_path
from vits.voice_folder import RAW, SLICES, WAVS, clean_path, clip_stem, file_stamp, speaker_for

VAD_RATE = 16000
VAD_WINDOW = 512  # samples at 16 kHz per silero-vad decision (32 ms)
# Longest clip the bucket sampler keeps (spec §10.2: file bytes // 1024 <= 1000, 44-byte WAV header).
SAMPLER_MAX_SECONDS = (1000 * 1024 - 44) // 2 / TARGET_RATE  # 11.61 s, with a sample of slack for rounding
_LEVEL_FRAME, _LEVEL_HOP = 400, 160  # 25 ms frames every 10 ms at 16 kHz, for finding quiet points


@dataclass
class SliceOptions:
    """Slicing knobs (seconds unless said otherwise)."""

    min_seconds: float = 2.0
    max_seconds: float = 12.0
    margin: float = 0.2  # silence kept before/after speech
    split_pause: float = 0.3  # a pause at least this long ends a clip once it is min_seconds long
    max_inner_pause: float = 1.5  # never bridge a longer silence inside one clip
    threshold: float = 0.5  # silero speech probability
    min_speech: float = 0.25  # VAD regions shorter than this are noise
    cap_to_sampler: bool = True  # keep clips short enough for the bucket sampler (11.6 s)

    def effective_max(self) -> float:
        return min(self.max_seconds, SAMPLER_MAX_SECONDS) if self.cap_to_sampler else self.max_seconds

    def check(self) -> None:
        if self.min_seconds <= 0 or self.effective_max() < 2 * self.min_seconds + 2 * self.margin:
            raise KoeError(f"clip limits {self.min_seconds}-{self.max_seconds} s (margin {self.margin} s) "
                           "leave no room to split long speech",
                           fix="use a maximum at least twice the minimum plus both margins")


@dataclass
class FileSlices:
    """Result of slicing one raw file: clips written (relative to the voice folder) and what was left out."""

    source: str
    clips: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    clipped_samples: int = 0
    error: str | None = None


_VAD = None


def load_vad():
    """The silero-vad model shipped in the PyPI package (no torch.hub, no network). Cached per process.

    The ONNX copy runs on onnxruntime (about 2x faster per 32 ms window than the TorchScript copy, same
    probabilities); the TorchScript copy is the fallback when onnxruntime is missing.
    """
    global _VAD
    if _VAD is None:
        try:
            from silero_vad import load_silero_vad
        except ImportError:
            raise KoeError("silero-vad is not installed", fix="pip install silero-vad") from None
        try:
            import onnxruntime  # noqa: F401

            _VAD = load_silero_vad(onnx=True)
        except ImportError:
            _VAD = load_silero_vad()
    return _VAD


def speech_probabilities(audio16k: np.ndarray, model=None) -> np.ndarray:
    """silero-vad speech probability for every 512-sample (32 ms) window of 16 kHz audio."""
    model = model or load_vad()
    n = -(-len(audio16k) // VAD_WINDOW)
    padded = np.zeros(n * VAD_WINDOW, dtype=np.float32)
    padded[: len(audio16k)] = audio16k
    model.reset_states()
    return _vad_windows(model, padded)


def _vad_windows(model, samples: np.ndarray) -> np.ndarray:
    """Probabilities of whole 512-sample windows, continuing the model's state (windows must go in order)."""
    import torch

    n = len(samples) // VAD_WINDOW
    chunks = torch.from_numpy(np.ascontiguousarray(samples[: n * VAD_WINDOW])).view(n, VAD_WINDOW)
    out = np.empty(n, dtype=np.float32)
    with torch.inference_mode():
        for i in range(n):
            out[i] = model(chunks[i:i + 1], VAD_RATE).item()
    return out


class SpeechScan:
    """VAD probabilities and 10 ms levels of a 16 kHz stream fed block by block (memory: one block).

    Gives the same numbers as `speech_probabilities` and `frame_rms_db(audio, 400, 160)` over the whole
    signal; what it keeps grows by 4 bytes per 32 ms and 8 bytes per 10 ms (about 3 MB per hour).
    """

    def __init__(self, model=None):
        self.model = model or load_vad()
        self.model.reset_states()
        self.length = 0
        self._vad = np.zeros(0, dtype=np.float32)
        self._lvl = np.zeros(0, dtype=np.float32)
        self._probs: list[np.ndarray] = []
        self._levels: list[np.ndarray] = []

    def feed(self, audio16k: np.ndarray) -> None:
        audio16k = np.asarray(audio16k, dtype=np.float32)
        self.length += len(audio16k)
        self._vad = np.concatenate([self._vad, audio16k])
        whole = len(self._vad) // VAD_WINDOW * VAD_WINDOW
        if whole:
            self._probs.append(_vad_windows(self.model, self._vad[:whole]))
            self._vad = self._vad[whole:].copy()
        self._lvl = np.concatenate([self._lvl, audio16k])
        if len(self._lvl) >= _LEVEL_FRAME:
            n = 1 + (len(self._lvl) - _LEVEL_FRAME) // _LEVEL_HOP
            frames = np.lib.stride_tricks.sliding_window_view(self._lvl, _LEVEL_FRAME)[::_LEVEL_HOP][:n]
            rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
            self._levels.append(20 * np.log10(np.maximum(rms, 1e-6)))
            self._lvl = self._lvl[n * _LEVEL_HOP:].copy()

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(window probabilities, 10 ms levels in dBFS); the last partial window is zero-padded."""
        if len(self._vad):
            padded = np.zeros(VAD_WINDOW, dtype=np.float32)
            padded[: len(self._vad)] = self._vad
            self._probs.append(_vad_windows(self.model, padded))
            self._vad = self._vad[:0]
        probs = np.concatenate(self._probs) if self._probs else np.zeros(0, dtype=np.float32)
        levels = np.concatenate(self._levels) if self.length >= _LEVEL_FRAME else np.zeros(1)
        return probs, levels


def speech_regions(probs: np.ndarray, opts: SliceOptions) -> list[tuple[float, float]]:
    """Hysteresis over window probabilities -> [(start_s, end_s)] of speech (enter >= thr, leave < thr-0.15)."""
    step = VAD_WINDOW / VAD_RATE
    low = max(opts.threshold - 0.15, 0.01)
    regions, start = [], None
    for i, p in enumerate(probs):
        if start is None and p >= opts.threshold:
            start = i
        elif start is not None and p < low:
            regions.append((start * step, i * step))
            start = None
    if start is not None:
        regions.append((start * step, len(probs) * step))
    return [(s, e) for s, e in regions if e - s >= opts.min_speech]


def _quietest(levels: np.ndarray, hop_s: float, lo: float, hi: float) -> float:
    """Time (s) of the quietest 10 ms frame between lo and hi."""
    a, b = int(lo / hop_s), max(int(hi / hop_s), int(lo / hop_s) + 1)
    seg = levels[a:b]
    if len(seg) == 0:
        return (lo + hi) / 2
    return (a + int(np.argmin(seg)) + 0.5) * hop_s


def split_long(regions, levels: np.ndarray, hop_s: float, opts: SliceOptions) -> list[tuple[float, float]]:
    """Cut every region longer than the usable maximum at its quietest points (left to right)."""
    limit = opts.effective_max() - 2 * opts.margin
    out = []
    for s, e in regions:
        while e - s > limit:
            hi = min(s + limit, e - opts.min_seconds)
            lo = min(s + opts.min_seconds, hi)
            cut = _quietest(levels, hop_s, lo, hi)
            out.append((s, cut))
            s = cut
        out.append((s, e))
    return out


def group_regions(regions, opts: SliceOptions) -> list[tuple[float, float]]:
    """Merge neighbouring speech across short pauses into clips no longer than the usable maximum."""
    limit = opts.effective_max() - 2 * opts.margin
    clips: list[list[float]] = []
    for s, e in regions:
        if clips:
            cs, ce = clips[-1]
            gap = s - ce
            fits = e - cs <= limit and gap <= opts.max_inner_pause
            if fits and (ce - cs < opts.min_seconds or gap < opts.split_pause):
                clips[-1][1] = e
                continue
        clips.append([s, e])
    # A short piece after a pause (a last phrase) joins whichever neighbour it fits with, nearest first.
    i = 0
    while i < len(clips):
        s, e = clips[i]
        if e - s >= opts.min_seconds or len(clips) == 1:
            i += 1
            continue
        options = []
        if i > 0 and e - clips[i - 1][0] <= limit and s - clips[i - 1][1] <= opts.max_inner_pause:
            options.append((s - clips[i - 1][1], i - 1))
        if i + 1 < len(clips) and clips[i + 1][1] - s <= limit and clips[i + 1][0] - e <= opts.max_inner_pause:
            options.append((clips[i + 1][0] - e, i + 1))
        if not options:
            i += 1
            continue
        _, j = min(options)
        lo, hi = min(i, j), max(i, j)
        clips[lo] = [clips[lo][0], clips[hi][1]]
        del clips[hi]
        i = lo
    return [(s, e) for s, e in clips]


def add_margins(clips, duration: float, opts: SliceOptions) -> list[tuple[float, float]]:
    """Pad each clip by the margin, never past the file or into the neighbour, never above the maximum."""
    out = []
    for i, (s, e) in enumerate(clips):
        left = clips[i - 1][1] if i else 0.0
        right = clips[i + 1][0] if i + 1 < len(clips) else duration
        ns = max(s - opts.margin, (left + s) / 2 if i else 0.0)
        ne = min(e + opts.margin, (e + right) / 2 if i + 1 < len(clips) else duration)
        over = (ne - ns) - opts.effective_max()
        if over > 0:
            ns += over / 2
            ne -= over / 2
        out.append((max(ns, 0.0), min(ne, duration)))
    return out


def plan_clips(audio16k: np.ndarray, probs: np.ndarray, opts: SliceOptions):
    """Decide clip boundaries for one file.

    Returns: (clips [(start_s, end_s)], dropped [(start_s, end_s)] of speech too short to keep).
    """
    levels = frame_rms_db(audio16k, _LEVEL_FRAME, _LEVEL_HOP) if len(audio16k) >= _LEVEL_FRAME else np.zeros(1)
    return plan_from_levels(probs, levels, len(audio16k) / VAD_RATE, opts)


def plan_from_levels(probs: np.ndarray, levels: np.ndarray, duration: float, opts: SliceOptions):
    """`plan_clips` from a file's VAD probabilities and 10 ms levels (what `SpeechScan` gives) and length."""
    regions = split_long(speech_regions(probs, opts), levels, _LEVEL_HOP / VAD_RATE, opts)
    grouped = group_regions(regions, opts)
    keep = [c for c in grouped if c[1] - c[0] >= opts.min_seconds - 2 * opts.margin]
    dropped = [c for c in grouped if c[1] - c[0] < opts.min_seconds - 2 * opts.margin]
    clips = add_margins(keep, duration, opts)
    final = [c for c in clips if c[1] - c[0] >= opts.min_seconds]
    # Margins can be cut short by the file edge or a neighbour; such clips stay under the minimum.
    dropped += [orig for c, orig in zip(clips, keep) if c[1] - c[0] < opts.min_seconds]
    return final, sorted(dropped)


def slice_file(path: Path, out_dir: Path, stem: str, opts: SliceOptions, voice_dir: Path) -> FileSlices:
    """Slice one source file into `out_dir/<stem>_0001.wav`, ... Errors become `FileSlices.error`.

    Two streaming passes (detect at 16 kHz, then cut at 44.1 kHz), so memory does not grow with the
    file's length: a 1-hour recording is read in blocks of `prep.audio.BLOCK_FRAMES` samples.
    """
    result = FileSlices(source=str(path))
    try:
        info = probe_audio(path)
        scan = SpeechScan()
        for block in iter_audio(path, VAD_RATE, quality="HQ", info=info):  # for detection only
            scan.feed(block)
        probs, levels = scan.finish()
    except KoeError as exc:
        result.error = exc.problem
        return result
    result.info = info.to_dict() | {"fixes": info.format_fixes()}
    duration = info.frames / info.sample_rate
    if duration < opts.min_seconds:
        result.error = f"too short ({duration:.2f} s; clips must be at least {opts.min_seconds:g} s)"
        return result
    clips, dropped = plan_from_levels(probs, levels, scan.length / VAD_RATE, opts)
    result.dropped = [f"{s:.2f}-{e:.2f} s: speech too short ({e - s:.2f} s)" for s, e in dropped]
    if not clips:
        result.error = "no usable speech found" + (f" (only short bits: {len(dropped)})" if dropped else "")
        return result
    ranges = [(int(round(s * TARGET_RATE)), int(round(e * TARGET_RATE))) for s, e in clips]

    def write(n: int, piece: np.ndarray) -> None:
        target = out_dir / f"{stem}_{n + 1:04d}.wav"
        result.clipped_samples += count_clipped(piece)
        write_wav16(target, piece, TARGET_RATE)
        result.clips.append(target.relative_to(voice_dir).as_posix())
        result.durations.append(round(len(piece) / TARGET_RATE, 3))

    try:
        cut_ranges(iter_audio(path, TARGET_RATE, info=probe_audio(path)), ranges, write)
    except KoeError as exc:
        result.error = exc.problem
    return result


def cut_ranges(blocks, ranges: list[tuple[int, int]], write: Callable[[int, np.ndarray], None]) -> None:
    """Call `write(i, samples)` for each [start, end) sample range of a block stream, in order.

    Ranges are sorted and do not overlap (`plan_clips` guarantees it); only the open ranges are buffered.
    A range running past the end of the stream gets the samples there are, as slicing an array would.
    """
    pending: dict[int, list[np.ndarray]] = {}
    first, pos = 0, 0
    for block in blocks:
        end = pos + len(block)
        k = first
        while k < len(ranges) and ranges[k][0] < end:
            a, b = ranges[k]
            if b > pos:
                pending.setdefault(k, []).append(block[max(a - pos, 0): min(b, end) - pos])
            k += 1
        while first < len(ranges) and ranges[first][1] <= end:
            write(first, np.concatenate(pending.pop(first, [np.zeros(0, np.float32)])))
            first += 1
        pos = end
    for k in range(first, len(ranges)):
        write(k, np.concatenate(pending.pop(k, [np.zeros(0, np.float32)])))


def raw_sources(voice_dir: Path) -> list[tuple[Path, str]]:
    """Audio files under raw/ with their speakers, sorted."""
    raw = Path(voice_dir) / RAW
    if not raw.is_dir():
        return []
    files = sorted(p for p in raw.rglob("*") if p.is_file() and is_audio_file(p))
    return [(p, speaker_for(p.relative_to(raw), Path(voice_dir).name)) for p in files]


def _unique_stems(sources: list[tuple[Path, str]], raw: Path) -> dict[Path, str]:
    """Clip stems per source, unique within a speaker (a.wav and a.mp3 -> a, a_mp3; sub/a.wav -> sub_a)."""
    stems, seen = {}, set()
    for p, spk in sources:
        parts = p.relative_to(raw).parts
        base = "_".join([*parts[1:-1], Path(parts[-1]).stem]) if len(parts) > 1 else Path(parts[-1]).stem
        stem = clip_stem(base)
        if (spk, stem) in seen:
            stem = clip_stem(f"{base}_{p.suffix.lstrip('.').lower()}")
        k = 2
        while (spk, stem) in seen:
            stem = clip_stem(f"{base}_{k}")
            k += 1
        seen.add((spk, stem))
        stems[p] = stem
    return stems


def _remove_clips(voice_dir: Path, clips: list[str]) -> None:
    for c in clips:
        wav = voice_dir / c
        for path in (wav, bert_path(wav), spec_path(wav)):
            path.unlink(missing_ok=True)


def _work(args):
    path, out_dir, stem, opts, voice_dir = args
    return slice_file(path, out_dir, stem, opts, voice_dir)


def slice_voice(voice_dir: str | os.PathLike, opts: SliceOptions | None = None, workers: int = 1,
                force: bool = False, progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Slice every raw file of a voice that has not been sliced yet (or changed since).

    Takes: voice folder; SliceOptions; worker processes; `force` re-slices everything.
    Returns: the slices.json manifest {raw path: {"stamp", "speaker", "clips", "durations", "dropped",
    "info", "error"}}. Raises KoeError when raw/ holds no audio.
    """
    voice_dir = Path(voice_dir)
    opts = opts or SliceOptions()
    opts.check()
    sources = raw_sources(voice_dir)
    if not sources:
        raise KoeError("no audio files in raw/", where=str(voice_dir / RAW),
                       fix="run the ingest stage first (python -m pipeline.ingest SOURCE " + str(voice_dir) + ")")
    manifest_path = voice_dir / SLICES
    previous = read_json(manifest_path, {})
    manifest = {} if force else dict(previous)
    raw = voice_dir / RAW
    stems = _unique_stems(sources, raw)
    todo = []
    for p, spk in sources:
        key = p.relative_to(voice_dir).as_posix()
        old = previous.get(key)
        cleaned = clean_path(voice_dir, p)  # python -m pipeline.clean's copy, when there is one
        src = cleaned if cleaned.is_file() else p
        done = (not force and old and old.get("stamp") == file_stamp(src) and old.get("options") == vars(opts)
                and all((voice_dir / c).is_file() for c in old.get("clips", [])))
        if not done:
            if old:  # a re-slice may give fewer clips: stale ones (and their features) must not linger
                _remove_clips(voice_dir, old.get("clips", []))
            todo.append((key, spk, (src, voice_dir / WAVS / spk, stems[p], opts, voice_dir)))
    total, finished = len(sources), len(sources) - len(todo)
    if progress:
        progress(finished, total, "")

    def record(key, spk, res: FileSlices, stamp):
        manifest[key] = {"stamp": stamp, "speaker": spk, "clips": res.clips, "durations": res.durations,
                         "dropped": res.dropped, "info": res.info, "clipped_samples": res.clipped_samples,
                         "error": res.error, "options": vars(opts)}
        write_json(manifest_path, manifest)

    if workers > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            for (key, spk, args), res in zip(todo, pool.map(_work, [t[2] for t in todo])):
                finished += 1
                record(key, spk, res, file_stamp(args[0]))
                if progress:
                    progress(finished, total, key)
    else:
        for key, spk, args in todo:
            res = _work(args)
            finished += 1
            record(key, spk, res, file_stamp(args[0]))
            if progress:
                progress(finished, total, key)
    if not manifest_path.exists():
        write_json(manifest_path, manifest)
    return manifest


def slice_summary(manifest: dict, shown: int = 5) -> str:
    """The closing line of a slice run, from its slices.json manifest: "89 clips from 10 recordings; 2 gave
    none: a.wav, b.wav" (recordings named relative to raw/, the first `shown` of them, then "… N more")."""
    clips = sum(len(entry.get("clips") or []) for entry in manifest.values())
    none = [key[len(RAW) + 1:] if key.startswith(f"{RAW}/") else key
            for key, entry in sorted(manifest.items()) if not entry.get("clips")]
    text = f"{clips} clips from {len(manifest)} recordings"
    if none:
        more = f", … {len(none) - shown} more" if len(none) > shown else ""
        text += f"; {len(none)} gave none: {', '.join(none[:shown])}{more}"
    return text


def _init_worker():
    import torch

    torch.set_num_threads(1)
