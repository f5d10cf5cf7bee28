"""Same-speaker check: is every clip of a speaker really that speaker? (GE2E embeddings from Resemblyzer.)

Each clip gets a 256-d speaker embedding from the GE2E encoder whose weights ship in the Resemblyzer wheel.
Per speaker of the voice a robust centroid (a trimmed mean: the clips least like the rest are left out of it,
so a few intruders do not drag it), and per clip its cosine similarity to that centroid. A clip scoring far
below its speaker's typical score is flagged "another speaker?"; one closer to another speaker's centroid
"belongs to <speaker>?". Nothing is dropped: the report lists them to listen to.
Embeddings are cached per clip in `speaker_embeddings.npz` (keyed by path, size and mtime), so re-runs
only embed new or changed clips.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prep.audio import load_audio
from vits.errors import KoeError
from vits.fileio import atomic_path
from vits.voice_folder import SPEAKER_EMBEDDINGS, file_stamp

RATE = 16000
MODEL = "resemblyzer-0.1.4-ge2e"  # cache key: embeddings from another encoder are not comparable
MIN_CLIPS = 8  # fewer clips than this give no trustworthy centroid: the speaker is not checked
KEEP = 0.8  # share of a speaker's clips (the most typical) the centroid is averaged over
OUTLIER_Z = 2.5  # flag clips more than this many robust deviations below the speaker's median score (bench/speaker_check.py sweep)
MIN_SPREAD = 0.03  # floor of that deviation: a very uniform speaker still needs a clear gap to flag


@dataclass
class SpeakerOutlier:
    """A clip that may not be its speaker: `flag` is "another speaker?" or "belongs to <speaker>?"."""
    wav: str
    speaker: str
    score: float  # cosine similarity to its own speaker's centroid
    threshold: float  # its speaker's cut-off: scores below it are flagged
    flag: str
    closest: str | None = None  # the other speaker it is closer to, for "belongs to"

    def to_dict(self) -> dict:
        return {"wav": self.wav, "speaker": self.speaker, "score": round(self.score, 4),
                "threshold": round(self.threshold, 4), "flag": self.flag, "closest": self.closest}


class SpeakerEncoder:
    """The GE2E encoder (loaded on first use, CPU). `embed(audio16k)` -> L2-normalised float32 [256]."""

    def __init__(self):
        self._encoder = None

    def _model(self):
        if self._encoder is None:
            try:
                from resemblyzer import VoiceEncoder
            except ImportError as exc:
                raise KoeError(f"the speaker encoder is missing ({exc})", where="resemblyzer",
                               fix="install it: .venv/bin/pip install --no-deps Resemblyzer==0.1.4 "
                                   "webrtcvad-wheels (or run bash scripts/setup.sh)") from None
            self._encoder = VoiceEncoder(device="cpu", verbose=False)
        return self._encoder

    def embed(self, audio16k: np.ndarray) -> np.ndarray:
        from resemblyzer import preprocess_wav

        audio = np.asarray(audio16k, np.float32)
        trimmed = preprocess_wav(audio, source_sr=RATE)  # volume normalised, long silences cut (webrtcvad)
        if len(trimmed) < RATE // 2:  # VAD kept almost nothing (laughter, BGM): embed what is there
            trimmed = audio
        return self._model().embed_utterance(trimmed).astype(np.float32)

    def embed_file(self, path: str | os.PathLike) -> np.ndarray:
        audio, _, _ = load_audio(path, RATE)
        return self.embed(audio)


def _read_cache(path: Path) -> dict[str, tuple[list[int], np.ndarray]]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["model"]) != MODEL:
                return {}
            return {p: (s.tolist(), e) for p, s, e in zip(data["paths"].tolist(), data["stamps"], data["embeddings"])}
    except (OSError, KeyError, ValueError):
        return {}  # a damaged cache is rebuilt, never trusted


def _write_cache(path: Path, cache: dict[str, tuple[list[int], np.ndarray]]) -> None:
    paths = sorted(cache)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, model=np.array(MODEL), paths=np.array(paths, dtype=str),
                 stamps=np.array([cache[p][0] for p in paths], dtype=np.int64).reshape(-1, 2),
                 embeddings=np.array([cache[p][1] for p in paths], dtype=np.float32).reshape(-1, 256))


def clip_embeddings(voice_dir: str | os.PathLike, wavs: list[str], encoder: SpeakerEncoder | None = None,
                    progress: Callable[[int, int, str], None] | None = None) -> dict[str, np.ndarray]:
    """GE2E embeddings of clips (paths relative to the voice folder), from the cache where still valid.

    Returns {wav: embedding}; clips that cannot be read are left out (the report lists unreadable clips).
    """
    voice_dir = Path(voice_dir)
    cache_path = voice_dir / SPEAKER_EMBEDDINGS
    cache = _read_cache(cache_path)
    encoder = encoder or SpeakerEncoder()
    out, changed = {}, False
    for i, wav in enumerate(wavs, 1):
        path = voice_dir / wav
        try:
            stamp = file_stamp(path)
        except OSError:
            continue
        hit = cache.get(wav)
        if hit is not None and hit[0] == stamp:
            out[wav] = hit[1]
        else:
            try:
                out[wav] = encoder.embed_file(path)
            except KoeError:
                continue
            cache[wav], changed = (stamp, out[wav]), True
        if progress:
            progress(i, len(wavs), wav)
    if changed:
        _write_cache(cache_path, {w: cache[w] for w in cache if (voice_dir / w).is_file()})
    return out


def robust_centroid(embeddings: np.ndarray, keep: float = KEEP, rounds: int = 3) -> np.ndarray:
    """Unit-length mean of the `keep` share of embeddings most similar to the current centroid, refined."""
    e = np.asarray(embeddings, np.float64)
    c = e.mean(axis=0)
    c /= np.linalg.norm(c) + 1e-12
    n = max(1, int(round(keep * len(e))))
    for _ in range(rounds):
        nearest = np.argsort(-(e @ c))[:n]
        c = e[nearest].mean(axis=0)
        c /= np.linalg.norm(c) + 1e-12
    return c


def find_outliers(embeddings: dict[str, np.ndarray], speaker_of: dict[str, str], *, min_clips: int = MIN_CLIPS,
                  z: float = OUTLIER_Z) -> tuple[list[SpeakerOutlier], dict[str, dict]]:
    """Flag clips unlike their speaker. Returns (outliers, lowest score first; per speaker {"clips",
    "median", "threshold", "checked"}). Speakers with fewer than `min_clips` clips are not checked."""
    by_speaker: dict[str, list[str]] = {}
    for wav in embeddings:
        by_speaker.setdefault(speaker_of[wav], []).append(wav)
    centroids = {spk: robust_centroid(np.stack([embeddings[w] for w in wavs]))
                 for spk, wavs in by_speaker.items() if len(wavs) >= min_clips}
    outliers, summary = [], {}
    for spk, wavs in by_speaker.items():
        if spk not in centroids:
            summary[spk] = {"clips": len(wavs), "checked": False,
                            "why": f"fewer than {min_clips} clips: too few to tell who the speaker is"}
            continue
        e = np.stack([embeddings[w] for w in wavs]).astype(np.float64)
        scores = e @ centroids[spk]
        median = float(np.median(scores))
        spread = max(1.4826 * float(np.median(np.abs(scores - median))), MIN_SPREAD)
        threshold = median - z * spread
        summary[spk] = {"clips": len(wavs), "checked": True, "median": round(median, 4),
                        "threshold": round(threshold, 4)}
        others = {o: e @ c for o, c in centroids.items() if o != spk}
        for k, wav in enumerate(wavs):
            closest = max(others, key=lambda o: others[o][k]) if others else None
            if closest is not None and others[closest][k] > scores[k]:
                outliers.append(SpeakerOutlier(wav, spk, float(scores[k]), threshold, f"belongs to {closest}?",
                                               closest))
            elif scores[k] < threshold:
                outliers.append(SpeakerOutlier(wav, spk, float(scores[k]), threshold, "another speaker?"))
    outliers.sort(key=lambda o: o.score)
    return outliers, summary


def check_voice(voice_dir: str | os.PathLike, clips: list[tuple[str, str]], *, min_clips: int = MIN_CLIPS,
                progress: Callable[[int, int, str], None] | None = None) -> tuple[list[SpeakerOutlier], dict]:
    """The same-speaker check of a voice's clips [(wav relative to the voice folder, speaker)].

    Loads the encoder only when some speaker has at least `min_clips` clips. Returns find_outliers' result.
    Raises KoeError when the encoder is not installed.
    """
    counts: dict[str, int] = {}
    for _, spk in clips:
        counts[spk] = counts.get(spk, 0) + 1
    checked = [(w, s) for w, s in clips if counts[s] >= min_clips]
    embeddings = clip_embeddings(voice_dir, [w for w, _ in checked], progress=progress) if checked else {}
    outliers, summary = find_outliers(embeddings, dict(clips), min_clips=min_clips)
    for spk, n in counts.items():
        summary.setdefault(spk, {"clips": n, "checked": False,
                                 "why": f"fewer than {min_clips} clips: too few to tell who the speaker is"})
    return outliers, summary
