"""Same-speaker check with the real GE2E encoder from the Resemblyzer wheel (prep/speaker.py, the report).

A voice with speaker "a" (espeak-ng "en") holding one clip of another voice (OpenJTalk) and one clip of
speaker "b" (espeak-ng "en+f2"), and speaker "b" itself: the report flags exactly those two, with the
right suggestion, in report.json, report.txt and `pipeline.report --json`; the cache makes a re-run embed
only changed clips.
"""

from __future__ import annotations

import json

import pytest
from helpers_audio import espeak_audio, have_espeak, japanese_audio, with_silence, write_audio

from pipeline import report as report_cli
from prep.speaker import SpeakerEncoder, clip_embeddings

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")

SENTENCES = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.", "The boy was there when the sun rose.",
]


class CountingEncoder(SpeakerEncoder):
    """The real encoder, counting the files it had to embed."""

    def __init__(self):
        super().__init__()
        self.embedded: list[str] = []

    def embed_file(self, path):
        self.embedded.append(str(path))
        return super().embed_file(path)


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
