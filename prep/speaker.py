"""Same-speaker check: is every clip of a speaker really that speaker?

Each clip gets three cues: a 256-d speaker embedding from the GE2E encoder whose weights ship in the
Resemblyzer wheel, its timbre (mean and spread of MFCC 1-19 over the voiced frames) and its pitch (median F0
in semitones). Per speaker of the voice, each clip's distance from the speaker's other clips is measured per
cue, cross-fitted (a clip is never part of the model it is measured against) with a shrunk covariance
fitted on the most typical 80 % of the others, so a few intruders do not drag it. Each distance
becomes a robust z (median and MAD of that speaker's own clips: a varied speaker is allowed more), and
the three combine as sqrt(z_voice^2 + z_timbre^2 + z_pitch^2). A clip whose combined deviation passes
OUTLIER_LIMIT is flagged "another speaker?"; one whose embedding is closer to another speaker's centroid,
"belongs to <speaker>?". Nothing is dropped: the report lists them to listen to.
Why three cues: GE2E alone scores some other voices above the speaker's own least typical clips (espeak-ng
variants, bench/speaker_check.py); timbre and pitch separate many of those (bench/RESULTS.md).
Features are cached per clip in `speaker_embeddings.npz` (keyed by path, size and mtime), so re-runs
only analyse new or changed clips.
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
MODEL = "resemblyzer-0.1.4-ge2e+mfcc19+yin-v2"  # cache key: features from another recipe are not comparable
MIN_CLIPS = 8  # fewer clips than this give no trustworthy model of the speaker: the speaker is not checked
KEEP = 0.8  # share of a speaker's clips (the most typical) a centroid or covariance is fitted on
FOLDS = 5  # cross-fitting: each clip is measured against a model fitted on the other folds
SHRINK = 0.05  # covariance shrinkage toward a scaled identity (bench/speaker_check.py, "tune" group)
SAME_CLIP = 0.999  # embeddings this alike are copies of one clip: they share a fold
OUTLIER_LIMIT = 4.0  # flag clips whose combined deviation passes this (bench/speaker_check.py, "tune" group)
PITCH_SPREAD_MIN = 0.5  # semitones: floor of the pitch spread, so a monotone speaker is not flagged for 1 st
TIMBRE_DIM = 38  # MFCC 1..19: mean and standard deviation over the voiced frames
HOP = 160  # 10 ms frames for pitch and timbre
VOICED = 0.1  # frames with RMS above this share of the clip's loudest frame count as voiced


@dataclass
class ClipFeatures:
    """What the check knows of one clip: GE2E embedding [256] (unit length), timbre [38], pitch (semitones
    re 100 Hz, median over the voiced frames; nan when none)."""
    embedding: np.ndarray
    timbre: np.ndarray
    pitch: float


@dataclass
class SpeakerOutlier:
    """A clip that may not be its speaker: `flag` is "another speaker?" or "belongs to <speaker>?".

    `score` is its match with its speaker, 2 ** -(deviation / OUTLIER_LIMIT) ** 2: 1 for a typical clip,
    `threshold` (0.5) at the limit, lower the further it is. `similarity` is the plain GE2E cosine to its
    speaker's centroid and `why` the cues in robust deviations ("voice 2.1, timbre 2.8, pitch +4.0 st")."""
    wav: str
    speaker: str
    score: float
    threshold: float
    flag: str
    closest: str | None = None  # the other speaker it is closer to, for "belongs to"
    similarity: float = float("nan")
    why: str = ""

    def to_dict(self) -> dict:
        return {"wav": self.wav, "speaker": self.speaker, "score": round(self.score, 4),
                "threshold": round(self.threshold, 4), "flag": self.flag, "closest": self.closest,
                "similarity": round(self.similarity, 4), "why": self.why}


def voice_cues(audio16k: np.ndarray) -> tuple[np.ndarray, float]:
    """(timbre [38], pitch in semitones re 100 Hz) of 16 kHz audio, over its voiced frames (nan pitch and
    zero timbre when it has none)."""
    import librosa

    audio = np.asarray(audio16k, np.float32)
    if len(audio) < 1024 or not np.any(audio):
        return np.zeros(TIMBRE_DIM, np.float32), float("nan")
    rms = librosa.feature.rms(y=audio, frame_length=512, hop_length=HOP)[0]
    mfcc = librosa.feature.mfcc(y=audio, sr=RATE, n_mfcc=20, n_fft=512, hop_length=HOP)[1:]
    f0 = librosa.yin(audio, fmin=60, fmax=500, sr=RATE, frame_length=1024, hop_length=HOP)
    n = min(len(rms), mfcc.shape[1], len(f0))
    voiced = rms[:n] > VOICED * rms.max()
    if not voiced.any():
        return np.zeros(TIMBRE_DIM, np.float32), float("nan")
    frames = mfcc[:, :n][:, voiced]
    timbre = np.concatenate([frames.mean(axis=1), frames.std(axis=1)]).astype(np.float32)
    return timbre, float(np.median(12 * np.log2(f0[:n][voiced] / 100.0)))


class SpeakerEncoder:
    """The GE2E encoder (loaded on first use, CPU). `embed(audio16k)` -> L2-normalised float32 [256];
    `features(audio16k)` -> ClipFeatures (embedding, timbre, pitch)."""

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

    def features(self, audio16k: np.ndarray) -> ClipFeatures:
        timbre, pitch = voice_cues(audio16k)
        return ClipFeatures(self.embed(audio16k), timbre, pitch)

    def features_file(self, path: str | os.PathLike) -> ClipFeatures:
        audio, _, _ = load_audio(path, RATE)
        return self.features(audio)


def _read_cache(path: Path) -> dict[str, tuple[list[int], ClipFeatures]]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["model"]) != MODEL:
                return {}
            return {p: (s.tolist(), ClipFeatures(e, t, float(f)))
                    for p, s, e, t, f in zip(data["paths"].tolist(), data["stamps"], data["embeddings"],
                                             data["timbre"], data["pitch"])}
    except (OSError, KeyError, ValueError):
        return {}  # a damaged cache is rebuilt, never trusted


def _write_cache(path: Path, cache: dict[str, tuple[list[int], ClipFeatures]]) -> None:
    paths = sorted(cache)
    feats = [cache[p][1] for p in paths]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, model=np.array(MODEL), paths=np.array(paths, dtype=str),
                 stamps=np.array([cache[p][0] for p in paths], dtype=np.int64).reshape(-1, 2),
                 embeddings=np.array([f.embedding for f in feats], dtype=np.float32).reshape(-1, 256),
                 timbre=np.array([f.timbre for f in feats], dtype=np.float32).reshape(-1, TIMBRE_DIM),
                 pitch=np.array([f.pitch for f in feats], dtype=np.float32))


def clip_features(voice_dir: str | os.PathLike, wavs: list[str], encoder: SpeakerEncoder | None = None,
                  progress: Callable[[int, int, str], None] | None = None) -> dict[str, ClipFeatures]:
    """Embedding, timbre and pitch of clips (paths relative to the voice folder), from the cache where still
    valid. Returns {wav: ClipFeatures}; clips that cannot be read are left out (the report lists them)."""
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
                out[wav] = encoder.features_file(path)
            except KoeError:
                continue
            cache[wav], changed = (stamp, out[wav]), True
        if progress:
            progress(i, len(wavs), wav)
    if changed:
        _write_cache(cache_path, {w: cache[w] for w in cache if (voice_dir / w).is_file()})
    return out


def clip_embeddings(voice_dir: str | os.PathLike, wavs: list[str], encoder: SpeakerEncoder | None = None,
                    progress: Callable[[int, int, str], None] | None = None) -> dict[str, np.ndarray]:
    """GE2E embeddings of clips (paths relative to the voice folder), from the cache where still valid.

    Returns {wav: embedding}; clips that cannot be read are left out (the report lists unreadable clips).
    """
    return {w: f.embedding for w, f in clip_features(voice_dir, wavs, encoder, progress).items()}


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


def copy_groups(embeddings: np.ndarray, same: float = SAME_CLIP) -> np.ndarray:
    """Group ids [n]: clips whose embeddings have cosine >= `same` (copies of one recording) share an id."""
    e = np.asarray(embeddings, np.float32)
    group = np.full(len(e), -1)
    next_id = 0
    for start in range(0, len(e), 1024):  # blocks of rows: bounded memory for large speakers
        sims = e[start:start + 1024] @ e.T
        for r, i in enumerate(range(start, min(start + 1024, len(e)))):
            if group[i] < 0:
                copies = np.flatnonzero((sims[r] >= same) & (group < 0))
                group[copies] = next_id
                group[i] = next_id
                next_id += 1
    return group


def crossfit_distance(x: np.ndarray, keep: float = KEEP, folds: int = FOLDS, shrink: float = SHRINK,
                      groups: np.ndarray | None = None) -> np.ndarray:
    """Mahalanobis distance of each row of x [n, d] under a Gaussian fitted on the other folds' `keep` share of
    rows nearest their median, its covariance shrunk by `shrink` toward the identity times the mean variance
    (with fewer clips than dimensions the plain covariance is singular). Fold of row i: groups[i] % folds
    (default groups: 0..n-1), so rows of one group (copies of a clip) are never fitted on each other: with
    fewer clips than dimensions a clip whose copy was fitted on would measure as 0."""
    x = np.asarray(x, np.float64)
    out = np.zeros(len(x))
    fold = (np.arange(len(x)) if groups is None else np.asarray(groups)) % folds
    for k in range(min(folds, len(x))):
        if not np.any(fold == k) or np.all(fold == k):
            continue
        rest = x[fold != k]
        near = np.argsort(np.linalg.norm(rest - np.median(rest, axis=0), axis=1))
        fit = rest[near[:max(2, int(round(keep * len(rest))))]]
        mean = fit.mean(axis=0)
        cov = np.cov(fit, rowvar=False, bias=True).reshape(x.shape[1], x.shape[1])
        scale = max(float(np.trace(cov)) / x.shape[1], 1e-12)
        cov = (1 - shrink) * cov + shrink * scale * np.eye(x.shape[1])
        diff = x[fold == k] - mean
        out[fold == k] = np.sqrt(np.maximum(np.einsum("ij,ij->i", diff @ np.linalg.inv(cov), diff), 0.0))
    return out


def _above_typical(d: np.ndarray) -> np.ndarray:
    """How many robust deviations (1.4826 MAD) each distance lies above the median one; 0 when below."""
    median = float(np.median(d))
    spread = max(1.4826 * float(np.median(np.abs(d - median))), 1e-3 * median, 1e-9)
    return np.maximum((d - median) / spread, 0.0)


def deviations(feats: list[ClipFeatures]) -> dict[str, np.ndarray]:
    """Per cue, each clip's robust deviation from the other clips of its speaker: {"voice", "timbre",
    "pitch" (signed: + higher), "combined"}. Clips without timbre/pitch (all-zero timbre, nan pitch)
    contribute 0 for that cue."""
    embeddings = np.stack([f.embedding for f in feats])
    groups = copy_groups(embeddings)
    voice = _above_typical(crossfit_distance(embeddings, groups=groups))
    timbre_x = np.stack([f.timbre for f in feats])
    has_timbre = np.any(timbre_x != 0, axis=1)
    timbre = np.zeros(len(feats))
    if has_timbre.sum() >= MIN_CLIPS:
        timbre[has_timbre] = _above_typical(crossfit_distance(timbre_x[has_timbre], groups=groups[has_timbre]))
    pitch_x = np.array([f.pitch for f in feats], np.float64)
    pitch = np.zeros(len(feats))
    voiced = np.isfinite(pitch_x)
    if voiced.sum() >= MIN_CLIPS:
        median = float(np.median(pitch_x[voiced]))
        spread = max(1.4826 * float(np.median(np.abs(pitch_x[voiced] - median))), PITCH_SPREAD_MIN)
        pitch[voiced] = (pitch_x[voiced] - median) / spread
    return {"voice": voice, "timbre": timbre, "pitch": pitch,
            "combined": np.sqrt(voice ** 2 + timbre ** 2 + pitch ** 2)}


def _why(dev: dict[str, np.ndarray], k: int) -> str:
    return (f"voice {dev['voice'][k]:.1f}, timbre {dev['timbre'][k]:.1f}, pitch {dev['pitch'][k]:+.1f} "
            f"(robust deviations)")


def _as_features(value) -> ClipFeatures:
    if isinstance(value, ClipFeatures):
        return value
    return ClipFeatures(np.asarray(value, np.float32), np.zeros(TIMBRE_DIM, np.float32), float("nan"))


def find_outliers(features: dict[str, ClipFeatures | np.ndarray], speaker_of: dict[str, str], *,
                  min_clips: int = MIN_CLIPS, limit: float = OUTLIER_LIMIT) -> tuple[list[SpeakerOutlier], dict]:
    """Flag clips unlike their speaker. `features`: {wav: ClipFeatures} (a bare embedding uses GE2E alone).

    Returns (outliers, lowest score first; per speaker {"clips", "checked", "median" (median score),
    "threshold"}). Speakers with fewer than `min_clips` clips are not checked."""
    features = {w: _as_features(v) for w, v in features.items()}
    by_speaker: dict[str, list[str]] = {}
    for wav in features:
        by_speaker.setdefault(speaker_of[wav], []).append(wav)
    centroids = {spk: robust_centroid(np.stack([features[w].embedding for w in wavs]))
                 for spk, wavs in by_speaker.items() if len(wavs) >= min_clips}
    threshold = 0.5  # the score at deviation == limit
    outliers, summary = [], {}
    for spk, wavs in by_speaker.items():
        if spk not in centroids:
            summary[spk] = {"clips": len(wavs), "checked": False,
                            "why": f"fewer than {min_clips} clips: too few to tell who the speaker is"}
            continue
        wavs = sorted(wavs)  # the folds do not depend on the order clips were found in
        dev = deviations([features[w] for w in wavs])
        scores = 2.0 ** -((dev["combined"] / limit) ** 2)
        e = np.stack([features[w].embedding for w in wavs]).astype(np.float64)
        similarity = e @ centroids[spk]
        summary[spk] = {"clips": len(wavs), "checked": True, "median": round(float(np.median(scores)), 4),
                        "threshold": threshold, "median_similarity": round(float(np.median(similarity)), 4)}
        others = {o: e @ c for o, c in centroids.items() if o != spk}
        for k, wav in enumerate(wavs):
            closest = max(others, key=lambda o: others[o][k]) if others else None
            common = dict(score=float(scores[k]), threshold=threshold, similarity=float(similarity[k]),
                          why=_why(dev, k))
            if closest is not None and others[closest][k] > similarity[k]:
                outliers.append(SpeakerOutlier(wav, spk, flag=f"belongs to {closest}?", closest=closest, **common))
            elif dev["combined"][k] > limit:
                outliers.append(SpeakerOutlier(wav, spk, flag="another speaker?", **common))
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
    features = clip_features(voice_dir, [w for w, _ in checked], progress=progress) if checked else {}
    outliers, summary = find_outliers(features, dict(clips), min_clips=min_clips)
    for spk, n in counts.items():
        summary.setdefault(spk, {"clips": n, "checked": False,
                                 "why": f"fewer than {min_clips} clips: too few to tell who the speaker is"})
    return outliers, summary
