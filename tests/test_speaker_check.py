"""Same-speaker check with the real GE2E encoder from the Resemblyzer wheel (prep/speaker.py, the report).

A voice with speaker "a" (espeak-ng "en") holding one clip of another voice (OpenJTalk) and one clip of
speaker "b" (espeak-ng "en+f2"), and speaker "b" itself: the report flags exactly those two, with the
right suggestion, in report.json, report.txt and `pipeline.report --json`; the cache makes a re-run embed
only changed clips.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_audio import espeak_audio, have_espeak, japanese_audio, with_silence, write_audio

from pipeline import report as report_cli
from prep.speaker import (
    OUTLIER_LIMIT,
    ClipFeatures,
    SpeakerEncoder,
    clip_embeddings,
    clip_features,
    crossfit_distance,
    deviations,
    find_outliers,
    robust_centroid,
    voice_cues,
)

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")

SENTENCES = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.", "The boy was there when the sun rose.",
]
MORE = [  # clips of a real dataset say different things: with repeated texts the spread is the texts'
    "The hogs were fed chopped corn and garbage.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "A pot of tea helps to pass the evening.", "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.", "The salt breeze came across from the sea.",
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
    "The wrist was badly strained and hung limp.", "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.", "The meal was cooked before the bell rang.",
    "A king ruled the state in the early days.", "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.", "The wide road shimmered in the hot sun.",
]


class CountingEncoder(SpeakerEncoder):
    """The real encoder, counting the files it had to embed."""

    def __init__(self):
        super().__init__()
        self.embedded: list[str] = []

    def features_file(self, path):
        self.embedded.append(str(path))
        return super().features_file(path)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    root = tmp_path_factory.mktemp("spk") / "v"
    for k, text in enumerate(SENTENCES):
        audio, sr = espeak_audio(text, "en", speed=(150, 175, 200)[k % 3])
        write_audio(root / "wavs" / "a" / f"a_{k:02d}.wav", with_silence(audio, sr, 0.2, 0.2), sr, rate=44100)
    for k, text in enumerate(SENTENCES[:9]):
        audio, sr = espeak_audio(text, "en+f2", speed=(150, 175, 200)[k % 3])
        folder = "a" if k == 0 else "b"  # b's first clip is filed under a
        write_audio(root / "wavs" / folder / f"b_{k:02d}.wav", with_silence(audio, sr, 0.2, 0.2), sr, rate=44100)
    audio, sr = japanese_audio("今日はとても良い天気ですね。明日の会議は十時から始まります。")
    write_audio(root / "wavs" / "a" / "other_00.wav", audio, sr, rate=44100)
    return root


def test_report_flags_the_other_voice_and_the_misfiled_clip(voice, capsys):
    assert report_cli.main([str(voice), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout is the JSON and nothing else
    flags = {d["wav"]: d["flag"] for d in printed["speaker_outliers"]}
    assert flags == {"wavs/a/other_00.wav": "another speaker?", "wavs/a/b_00.wav": "belongs to b?"}
    scores = [d["score"] for d in printed["speaker_outliers"]]
    assert scores == sorted(scores) and all(d["score"] < d["threshold"] or d["flag"].startswith("belongs")
                                            for d in printed["speaker_outliers"])
    assert printed["speaker_check"]["a"]["checked"] and printed["speaker_check"]["b"]["checked"]
    assert "another speaker? 1 clip, listen" in " ".join(printed["problems"])
    assert "belongs to b? 1 clip, listen" in " ".join(printed["problems"])
    assert any(p["wav"] == "wavs/a/other_00.wav" and "another speaker?" in p["problem"]
               for p in printed["clip_problems"])
    assert json.loads((voice / "report.json").read_text())["speaker_outliers"] == printed["speaker_outliers"]
    text = (voice / "report.txt").read_text()
    assert "wavs/a/other_00.wav: another speaker?" in text


def test_embeddings_are_cached_per_clip(voice):
    wavs = sorted(p.relative_to(voice).as_posix() for p in (voice / "wavs").rglob("*.wav"))
    encoder = CountingEncoder()
    first = clip_embeddings(voice, wavs, encoder=encoder)  # the report above filled the cache
    assert encoder.embedded == [] and set(first) == set(wavs)
    changed = voice / "wavs" / "a" / "a_03.wav"
    audio, sr = espeak_audio("A pot of tea helps to pass the evening.", "en")
    write_audio(changed, audio, sr, rate=44100)
    second = clip_embeddings(voice, wavs, encoder=encoder)
    assert encoder.embedded == [str(changed)]
    assert float(second["wavs/a/a_03.wav"] @ first["wavs/a/a_03.wav"]) < 0.9999  # really re-embedded
    assert float(second["wavs/a/a_03.wav"] @ second["wavs/a/a_01.wav"]) > 0.7  # and still speaker a
    cached = clip_features(voice, wavs, encoder=encoder)  # pitch and timbre come back from the cache too
    assert encoder.embedded == [str(changed)]
    fresh = SpeakerEncoder().features_file(voice / "wavs" / "a" / "a_01.wav")
    assert abs(cached["wavs/a/a_01.wav"].pitch - fresh.pitch) < 1e-4
    assert np.allclose(cached["wavs/a/a_01.wav"].timbre, fresh.timbre, atol=1e-3)


def tone(freq: float, harmonics: int, seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, harmonics + 1)).astype(np.float32) * 0.3


def test_voice_cues_measure_pitch_in_semitones_and_timbre():
    timbre_low, pitch_low = voice_cues(tone(200.0, 3))
    timbre_high, pitch_high = voice_cues(tone(400.0, 3))
    assert abs(pitch_low - 12.0) < 0.3 and abs(pitch_high - 24.0) < 0.3  # semitones re 100 Hz
    timbre_bright, pitch_bright = voice_cues(tone(200.0, 12))  # same pitch, more overtones: another timbre
    assert abs(pitch_bright - pitch_low) < 0.3
    assert np.linalg.norm(timbre_bright - timbre_low) > 0.2 * np.linalg.norm(timbre_low)
    silent_timbre, silent_pitch = voice_cues(np.zeros(16000, np.float32))
    assert np.isnan(silent_pitch) and not silent_timbre.any()


def test_a_clip_far_off_on_one_cue_is_flagged_and_typical_ones_are_not():
    rng = np.random.default_rng(0)
    base = rng.standard_normal(256)
    feats = []
    for _ in range(40):  # one speaker: embeddings near one direction, timbre and pitch near their own
        e = base + 0.3 * rng.standard_normal(256)
        feats.append(ClipFeatures((e / np.linalg.norm(e)).astype(np.float32),
                                  rng.standard_normal(38).astype(np.float32), float(rng.normal(5.0, 1.0))))
    odd = ClipFeatures(feats[0].embedding, feats[0].timbre, 5.0 + 8.0)  # only its pitch is 8 semitones off
    dev = deviations(feats + [odd])
    assert dev["combined"][-1] > OUTLIER_LIMIT and dev["pitch"][-1] > OUTLIER_LIMIT
    assert (dev["combined"][:-1] > OUTLIER_LIMIT).sum() <= 1  # 40 typical clips: at most one false alarm
    # cross-fitted: a clip is never part of the model it is measured against, nor are its copies (row 40),
    # so a duplicate scores like any typical clip, not 0, and a far clip stands out
    x = np.stack([f.timbre for f in feats] + [feats[0].timbre, feats[1].timbre + 10.0]).astype(np.float64)
    d = crossfit_distance(x)
    assert abs(d[40] - d[0]) < 1e-9 and d[40] > 0.5 * np.median(d[:40])
    assert d[-1] > 3 * np.median(d[:40])


def test_a_voice_ge2e_alone_passes_is_flagged_by_timbre_and_pitch():
    """espeak-ng en+m7 (other formants and pitch) among 30 clips of "en": the first version's GE2E-only check
    (cosine to the centroid, median - 2.5 x max(1.4826 MAD, 0.03)) passes it; with timbre and pitch it is
    flagged, and none of the 30 is."""
    encoder = SpeakerEncoder()
    from prep.audio import resample

    def clip(text, voice, speed):
        audio, sr = espeak_audio(text, voice, speed=speed)
        return encoder.features(resample(audio, sr, 16000))

    feats = {f"en_{k:02d}": clip(text, "en", (150, 165, 175, 185, 200)[k % 5])
             for k, text in enumerate(SENTENCES + MORE)}
    feats["m7_a"] = clip("The girl at the booth sold fifty bonds.", "en+m7", 175)
    feats["m7_b"] = clip("Rice is often served in round bowls. The boy was there when the sun rose.", "en+m7", 175)
    outliers, summary = find_outliers(feats, dict.fromkeys(feats, "a"))
    assert {o.wav: o.flag for o in outliers} == {"m7_a": "another speaker?", "m7_b": "another speaker?"}
    assert all(o.score < o.threshold and "timbre" in o.why for o in outliers)
    assert summary["a"]["checked"] and summary["a"]["clips"] == 32
    centroid = robust_centroid(np.stack([f.embedding for f in feats.values()]))
    similarity = np.array([float(f.embedding @ centroid) for f in feats.values()])
    median = float(np.median(similarity))
    ge2e_only = median - 2.5 * max(1.4826 * float(np.median(np.abs(similarity - median))), 0.03)
    assert similarity[-2] > ge2e_only and similarity[-1] > ge2e_only  # GE2E alone would pass both
