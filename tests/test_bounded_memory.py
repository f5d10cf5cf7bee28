"""Long recordings are decoded, scanned and cut in blocks: memory does not grow with the file's length.

Before (issue 15 item 2) a 1-hour file peaked at 3.8 GB in slicing; the streamed path must give the
same samples as the whole-file path and keep its peak flat. Peak memory is measured in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from prep.audio import frame_rms_db, iter_audio, load_audio
from prep.slicing import SpeechScan, cut_ranges, speech_probabilities
from tests.helpers_audio import espeak_audio, have_espeak, with_silence

ROOT = Path(__file__).resolve().parent.parent


def _noise(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(1)
    shape = (int(seconds * sr), channels) if channels > 1 else int(seconds * sr)
    return (0.2 * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("name,sr,channels,target", [("st.wav", 22050, 2, 44100), ("m.flac", 48000, 1, 16000),
                                                     ("m.ogg", 44100, 1, None)])
def test_streamed_samples_equal_the_whole_file_decode(tmp_path, name, sr, channels, target):
    path = tmp_path / name
    sf.write(path, _noise(2.3, sr, channels), sr)
    whole, _, _ = load_audio(path, sample_rate=target)
    streamed = np.concatenate(list(iter_audio(path, target, block_frames=1000)))
    assert streamed.dtype == np.float32 and np.array_equal(streamed, whole)


def test_streaming_through_ffmpeg_equals_the_whole_file_decode(tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (scripts/setup.sh installs it)")
    src = tmp_path / "a.wav"
    sf.write(src, _noise(2.0, 44100), 44100)
    m4a = tmp_path / "a.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), str(m4a)], check=True)
    whole, _, info = load_audio(m4a, sample_rate=16000)
    assert info.reader == "ffmpeg"
    streamed = np.concatenate(list(iter_audio(m4a, 16000, block_frames=777)))
    assert np.array_equal(streamed, whole)


def test_speech_scan_fed_in_odd_blocks_equals_the_whole_signal_scan():
    audio = (_noise(3.1, 16000) * np.repeat([0.0, 1.0, 0.1, 1.0], 12400)[: int(3.1 * 16000)]).astype(np.float32)
    scan = SpeechScan()
    for a, b in [(0, 1), (1, 700), (700, 5000), (5000, 5001), (5001, 20000), (20000, len(audio))]:
        scan.feed(audio[a:b])
    probs, levels = scan.finish()
    assert np.array_equal(probs, speech_probabilities(audio))
    assert np.array_equal(levels, frame_rms_db(audio, 400, 160))


def test_cut_ranges_equals_array_slicing_across_block_edges():
    audio = np.arange(10_000, dtype=np.float32)
    ranges = [(0, 10), (95, 2500), (2500, 2501), (4000, 9999), (9990, 12_000)]
    got = {}
    cut_ranges((audio[i:i + 97] for i in range(0, len(audio), 97)), ranges, lambda k, x: got.setdefault(k, x))
    assert sorted(got) == list(range(len(ranges)))
    for k, (a, b) in enumerate(ranges):
        assert np.array_equal(got[k], audio[a:b]), (a, b)


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import numpy as np, soundfile as sf
    from prep.slicing import SliceOptions, slice_file

    small, big, out = (Path(a) for a in sys.argv[1:4])
    slice_file(small, out / "warm", "w", SliceOptions(), out)  # VAD, onnxruntime, soxr loaded and warm
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = slice_file(big, out / "wavs", "big", SliceOptions(), out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (peak - base) / 1024, "clips": res.clips, "error": res.error}))
""")


@pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed (scripts/setup.sh installs it)")
def test_slicing_a_long_recording_keeps_memory_flat(tmp_path):
    speech, sr = espeak_audio("This sentence sits near the end of a long and mostly silent recording.", "en")
    speech = with_silence(speech, sr, 0.5, 0.5)
    small = tmp_path / "small.wav"
    sf.write(small, speech, sr, subtype="PCM_16")
    pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
    # Six minutes of 44.1 kHz silence written sparsely (no RAM, little disk), the speech at 5:00. The
    # whole-file path needed about 60 MB per minute here (float copies, a 16 kHz copy, framed levels).
    frames = 6 * 60 * sr
    big = tmp_path / "long.wav"
    with open(big, "wb") as f:
        f.write(b"RIFF" + (36 + 2 * frames).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little"))
        f.write((1).to_bytes(2, "little") + (1).to_bytes(2, "little") + sr.to_bytes(4, "little")
                + (2 * sr).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little"))
        f.write(b"data" + (2 * frames).to_bytes(4, "little"))
        f.seek(44 + 2 * 300 * sr)
        f.write(pcm)
        f.truncate(44 + 2 * frames)
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(small), str(big), str(tmp_path / "v")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["error"] is None and len(report["clips"]) == 1, report
    clip, _ = sf.read(tmp_path / "v" / report["clips"][0], dtype="float32")
    assert 2.0 <= len(clip) / 44100 <= 12.0 and np.abs(clip).max() > 0.1
    assert report["growth_mb"] < 80, report


def test_loudness_meter_fed_in_blocks_equals_pyloudnorm():
    import pyloudnorm

    from prep.audio import LoudnessMeter

    audio = (_noise(7.3, 44100) * np.repeat([1.0, 0.01, 0.5, 0.0001], 80_500)[: int(7.3 * 44100)]).astype(np.float32)
    meter = LoudnessMeter(44100)
    for a in range(0, len(audio), 30_011):
        meter.feed(audio[a:a + 30_011])
    expected = pyloudnorm.Meter(44100).integrated_loudness(audio.astype(np.float64))
    assert abs(meter.integrated() - expected) < 1e-9


@pytest.mark.parametrize("loudness,trim_db", [(None, None), (-23.0, 40.0), (-10.0, None)])
def test_long_files_are_conformed_in_blocks_with_the_same_result(tmp_path, monkeypatch, loudness, trim_db):
    import prep.audio as audio_mod

    sr = 22050
    body = _noise(5.0, sr, 2) * np.linspace(0.05, 1.0, int(5.0 * sr))[:, None].astype(np.float32)
    quiet = np.zeros((int(1.5 * sr), 2), dtype=np.float32)
    src = tmp_path / "long.wav"
    sf.write(src, np.concatenate([quiet, body, quiet]), sr, subtype="PCM_24")
    whole = audio_mod.conform_clip(src, tmp_path / "whole.wav", loudness=loudness, trim_db=trim_db)
    monkeypatch.setattr(audio_mod, "STREAM_SECONDS", 1.0)
    monkeypatch.setattr(audio_mod, "BLOCK_FRAMES", 10_007)
    streamed = audio_mod.conform_clip(src, tmp_path / "streamed.wav", loudness=loudness, trim_db=trim_db)
    assert streamed.fixes == whole.fixes and streamed.clipped == whole.clipped
    assert abs(streamed.duration - whole.duration) < 1e-9
    a, ra = sf.read(tmp_path / "whole.wav", dtype="int16")
    b, rb = sf.read(tmp_path / "streamed.wav", dtype="int16")
    assert ra == rb == 44100 and np.array_equal(a, b)
