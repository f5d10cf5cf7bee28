"""The dataset chain on real speech: ingest -> slice -> transcribe -> resample -> text -> report, plus prepare.

Speech comes from espeak-ng (English, Mandarin from pinyin) and pyopenjtalk (Japanese), mixed with a
stereo 48 kHz mp3, a 22.05 kHz flac, an upper-case .WAV with a Chinese name and bad inputs (corrupt,
empty, 0.3 s, 40 s without a pause, a speaker with one clip). Whisper is a tiny random model: its text
is garbage, so the tests check the mechanics (metrics, flags, resume, backups), not the words.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers_audio import (
    espeak_audio,
    have_espeak,
    japanese_audio,
    make_tiny_whisper,
    with_silence,
    without_pauses,
    write_audio,
)
from vits.progress import parse_progress

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")
REPO = Path(__file__).resolve().parent.parent


def run(module: str, *argv) -> tuple[int, str, str]:
    """Run `pipeline.<module>.main(argv)` in this process; returns (exit code, stdout, stderr)."""
    import importlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = importlib.import_module(f"pipeline.{module}").main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def progress_lines(stdout: str, stage: str) -> list[dict]:
    lines = [parse_progress(ln) for ln in stdout.splitlines()]
    return [p for p in lines if p and p["stage"] == stage]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("recordings")
    en, sr = espeak_audio("Hello there, this is a test of the speech pipeline. We will slice it into clips.", "en")
    zh, sr_zh = espeak_audio("ni3 hao3, jin1 tian1 tian1 qi4 hen3 hao3. wo3 men5 qu4 gong1 yuan2 ba5.",
                             "cmn-latn-pinyin")
    ja, sr_ja = japanese_audio("こんにちは、今日はいい天気ですね。明日は雨が降るそうです。")
    carol, _ = espeak_audio("My name is Carol and I only recorded one sentence.", "en")
    write_audio(src / "alice" / "hello world.mp3", with_silence(en, sr), sr, rate=48000, channels=2)
    write_audio(src / "alice" / "take 2.flac", with_silence(en, sr), sr, rate=22050, subtype="PCM_24")
    write_audio(src / "bob" / "你好世界.WAV", with_silence(zh, sr_zh), sr_zh, subtype="PCM_U8")
    write_audio(src / "bob" / "ja.wav", with_silence(ja, sr_ja), sr_ja, subtype="FLOAT")
    write_audio(src / "bob" / "long.wav", without_pauses(en, sr, 40), sr, rate=96000, subtype="PCM_32")
    write_audio(src / "carol" / "one.ogg", with_silence(carol, sr), sr, rate=8000)
    write_audio(src / "short.wav", en[: int(0.3 * sr)], sr)
    (src / "empty.wav").write_bytes(b"")
    (src / "corrupt.mp3").write_bytes(b"ID3" + os.urandom(4000))
    (src / "notes.txt").write_text("not audio")
    return src


@pytest.fixture(scope="module")
def voice(source, tmp_path_factory) -> Path:
    """Ingested and sliced."""
    v = tmp_path_factory.mktemp("Data") / "myvoice"
    code, out, err = run("ingest", source, v)
    assert code == 0, err
    v.joinpath("_ingest.out").write_text(out + "\n----\n" + err, encoding="utf-8")
    code, out, err = run("slice", v)
    assert code == 0, err
    v.joinpath("_slice.out").write_text(out + "\n----\n" + err, encoding="utf-8")
    return v


def test_ingest_copies_good_files_and_refuses_bad_ones_by_name(voice):
    raw = sorted(p.relative_to(voice / "raw").as_posix() for p in (voice / "raw").rglob("*") if p.is_file())
    assert raw == ["alice/hello world.mp3", "alice/take 2.flac", "bob/ja.wav", "bob/long.wav", "bob/你好世界.WAV",
                   "carol/one.ogg", "myvoice/short.wav"]
    state = json.loads((voice / "ingest.json").read_text(encoding="utf-8"))
    refused = dict(state["rejected"])
    assert set(refused) == {"empty.wav", "corrupt.mp3"} and "empty" in refused["empty.wav"]
    log = (voice / "_ingest.out").read_text(encoding="utf-8")
    assert "refused corrupt.mp3" in log and "refused empty.wav" in log
    assert state["ignored"] == ["notes.txt"]


def test_slice_writes_44k_mono_16bit_clips_within_limits(voice):
    clips = sorted((voice / "wavs").rglob("*.wav"))
    names = {c.relative_to(voice / "wavs").as_posix() for c in clips}
    assert {"alice/hello world_0001.wav", "alice/take 2_0001.wav", "bob/你好世界_0001.wav", "bob/ja_0001.wav",
            "carol/one_0001.wav"} <= names
    long_clips = [n for n in names if n.startswith("bob/long_")]
    assert len(long_clips) >= 4  # 40 s without a pause, cut at quiet points into <= 11.6 s pieces
    for c in clips:
        info = sf.info(str(c))
        assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16"), c
        assert 2.0 - 1e-3 <= info.duration <= 11.61, (c, info.duration)
        assert c.stat().st_size // 1024 <= 1000  # the bucket sampler keeps it
    total_long = sum(sf.info(str(voice / "wavs" / n)).duration for n in long_clips)
    assert 39.0 < total_long <= 40.5  # nothing lost when cutting
    manifest = json.loads((voice / "slices.json").read_text(encoding="utf-8"))
    assert "too short" in manifest["raw/myvoice/short.wav"]["error"]
    assert "2 channels -> mono" in manifest["raw/alice/hello world.mp3"]["info"]["fixes"]
    log = (voice / "_slice.out").read_text(encoding="utf-8")
    assert "raw/myvoice/short.wav: too short" in log
    steps = progress_lines(log, "slice")
    assert steps[-1]["clips"] == len(clips) and any(s.get("total") == 7 for s in steps)


def test_slice_resumes_without_redoing_work(voice):
    before = {p: p.stat().st_mtime_ns for p in (voice / "wavs").rglob("*.wav")}
    code, out, _ = run("slice", voice)
    assert code == 0
    assert {p: p.stat().st_mtime_ns for p in (voice / "wavs").rglob("*.wav")} == before
    assert progress_lines(out, "slice")[0]["step"] == 7  # all 7 recordings already done


@pytest.fixture(scope="module")
def whisper_pt(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-random.pt")


def _transcribe(voice, whisper_pt, *extra):
    return run("transcribe", voice, "--model", whisper_pt, "--language", "en", "--beam-size", "1",
               "--temperatures", "0", "--max-tokens", "8", "--device", "cpu", *extra)


def test_transcribe_records_confidence_flags_and_resumes(voice, whisper_pt):
    code, out, err = _transcribe(voice, whisper_pt)
    assert code == 0, err
    meta = json.loads((voice / "esd.meta.json").read_text(encoding="utf-8"))["clips"]
    clips = {p.relative_to(voice).as_posix() for p in (voice / "wavs").rglob("*.wav")}
    assert set(meta) == clips
    for wav, m in meta.items():
        assert m["language"] == "EN" and m["speaker"] == wav.split("/")[1]
        for key in ("avg_logprob", "no_speech_prob", "compression_ratio"):
            assert isinstance(m[key], float)
        assert m["excluded"] == bool(set(m["flags"]) & {"empty", "no_speech", "repetition", "high_compression",
                                                           "text_too_long", "subtitle_credit"})
        if m["excluded"]:
            assert f"{wav}: left out of esd.list" in err
    listed = [ln.split("|") for ln in (voice / "esd.list").read_text(encoding="utf-8").splitlines()]
    assert {row[0] for row in listed} == {w for w, m in meta.items() if not m["excluded"]}

    # A hand edit survives a re-run: only clips in neither file are transcribed.
    (voice / "esd.list").write_text("wavs/alice/take 2_0001.wav|alice|EN|typed by hand\n", encoding="utf-8")
    code, out, _ = _transcribe(voice, whisper_pt)
    assert code == 0 and progress_lines(out, "transcribe")[-1]["transcribed"] == 0
    assert (voice / "esd.list").read_text(encoding="utf-8") == "wavs/alice/take 2_0001.wav|alice|EN|typed by hand\n"

    # --force redoes every clip; --keep-flagged keeps the garbage text so the list format can be checked.
    code, out, err = _transcribe(voice, whisper_pt, "--force", "--keep-flagged")
    assert code == 0, err
    rows = [ln.split("|") for ln in (voice / "esd.list").read_text(encoding="utf-8").splitlines()]
    assert sorted(r[0] for r in rows) == sorted(clips)
    assert all(len(r) == 4 and r[2] == "EN" and r[1] == r[0].split("/")[1] and r[3] for r in rows)
    backups = list((voice / "backups").glob("esd.list.*.bak"))
    assert len(backups) == 1 and "typed by hand" in backups[0].read_text(encoding="utf-8")
    assert "previous esd.list saved as" in out


def test_transcribe_names_a_missing_model(voice, tmp_path):
    code, out, err = run("transcribe", voice, "--model", tmp_path / "nope.pt", "--device", "cpu")
    assert code == 1 and "nope.pt" in err and "Whisper checkpoint not found" in err


def test_resample_normalises_loudness_and_converts_dropped_in_clips(voice):
    dropin = voice / "wavs" / "alice" / "dropin.wav"
    en, sr = espeak_audio("A clip that someone copied in by hand.", "en")
    write_audio(dropin, with_silence(en, sr) * 0.1, sr, rate=48000, channels=2, subtype="FLOAT")
    code, out, err = run("resample", voice, "--loudness", "-23", "--workers", "2")
    assert code == 0, err
    import pyloudnorm

    for c in (voice / "wavs").rglob("*.wav"):
        info = sf.info(str(c))
        assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
    audio, rate = sf.read(str(dropin))
    assert abs(pyloudnorm.Meter(rate).integrated_loudness(audio) + 23) < 1.0
    fixes = json.loads((voice / "resample.json").read_text(encoding="utf-8"))["wavs/alice/dropin.wav"]["fixes"]
    assert "2 channels -> mono" in fixes and "48000 Hz -> 44100 Hz" in fixes
    code, out, _ = run("resample", voice, "--loudness", "-23")
    assert code == 0 and progress_lines(out, "resample")[-1]["processed"] == 0
    dropin.unlink()


ESD_LINES = """\
wavs/alice/hello world_0001.wav|alice|EN|Hello there, this is a test of the speech pipeline.
wavs/alice/take 2_0001.wav|alice|EN|We will slice it into clips.
wavs/bob/你好世界_0001.wav|bob|ZH|你好，今天天气很好。我们去公园吧。
wavs/bob/ja_0001.wav|bob|JP|こんにちは、今日はいい天気ですね。
wavs/bob/long_0001.wav|bob|EN|Hello there, this is a test.
wavs/bob/long_0002.wav|bob|EN|This is the second part.
wavs/bob/long_0003.wav|bob|ZH|我喜欢这个测试。
wavs/bob/long_0004.wav|bob|EN|The fourth part is here.
wavs/bob/long_0004.wav|bob|EN|The fourth part again.
wavs/carol/one_0001.wav|carol|EN|My name is Carol and I only recorded one sentence.
wavs/alice/tiny.wav|alice|EN|Too short for the sampler.
wavs/alice/emoji.wav|alice|EN|😀🎉👍
wavs/alice/missing.wav|alice|EN|This file does not exist.
this line is malformed
"""


@pytest.fixture(scope="module")
def texted(voice):
    en, sr = espeak_audio("Short.", "en")
    write_audio(voice / "wavs" / "alice" / "tiny.wav", en[: int(0.3 * sr)], sr, rate=44100)
    write_audio(voice / "wavs" / "alice" / "emoji.wav", with_silence(en, sr, 1, 1), sr, rate=44100)
    (voice / "esd.list").write_text(ESD_LINES, encoding="utf-8")
    code, out, err = run("text", voice, "--batch-size", "4")
    assert code == 0, err
    return voice, out, err


def test_text_builds_cleaned_lists_and_config(texted):
    voice, out, err = texted
    train = (voice / "filelists" / "train.list").read_text(encoding="utf-8").splitlines()
    val = (voice / "filelists" / "val.list").read_text(encoding="utf-8").splitlines()
    rows = [ln.split("|") for ln in train + val]
    assert len(rows) == 10 and len({r[0] for r in rows}) == 10
    for r in rows:
        assert len(r) == 7
        phones, tones, word2ph = r[4].split(), r[5].split(), [int(w) for w in r[6].split()]
        assert phones[0] == phones[-1] == "_" and len(phones) == len(tones) == sum(word2ph)
        assert r[2] in ("ZH", "JP", "EN")
    by_speaker = {r[0]: r[1] for r in (ln.split("|") for ln in val)}
    assert "bob" in by_speaker.values()  # bob has 7 clips: at least one validation clip
    assert not any(ln.startswith("wavs/carol/") for ln in val)  # one clip: training only
    cfg = json.loads((voice / "configs" / "config.json").read_text(encoding="utf-8"))
    assert cfg["data"]["spk2id"] == {"alice": 0, "bob": 1, "carol": 2} and cfg["data"]["n_speakers"] == 3
    assert cfg["data"]["training_files"] == "filelists/train.list"
    assert cfg["data"]["validation_files"] == "filelists/val.list"
    assert cfg["train"]["batch_size"] == 4 and cfg["version"] == "2.3" and cfg["model"]["gin_channels"] == 512
    for needle in ("line 9 (wavs/bob/long_0004.wav): duplicate", "line 12 (wavs/alice/emoji.wav): unreadable",
                   "line 13 (wavs/alice/missing.wav): missing", "line 14 (this line is malformed): malformed"):
        assert needle in err, needle
    code, out, _ = run("text", texted[0], "--batch-size", "4")
    assert code == 0 and "up to date" in out


def test_report_covers_the_dataset(texted):
    voice = texted[0]
    code, out, err = run("report", voice, "--quiet")
    assert code == 0, err
    r = json.loads((voice / "report.json").read_text(encoding="utf-8"))
    assert set(r["speakers"]) == {"alice", "bob", "carol"}
    assert r["speakers"]["bob"]["minutes"] > 0.5 and r["speakers"]["bob"]["val_clips"] >= 1
    assert sum(h["clips"] for h in r["clip_length_histogram"]) == r["clips"]
    drops = {d["wav"]: d["reason"] for d in r["sampler_drops"]}
    assert "too short" in drops["wavs/alice/tiny.wav"]  # 0.3 s: at most 32 units of 1024 bytes
    assert r["format_fixes"]["channels -> mono"] >= 1
    assert any("48000 Hz" in k for k in r["format_fixes"])
    assert {d["kind"] for d in r["text_dropped"]} == {"malformed", "duplicate", "unreadable", "missing"}
    assert any(d["speaker"] == "carol" for d in r["too_little_data"])
    assert any(p["source"] == "raw/myvoice/short.wav" for p in r["source_problems"])
    assert {name for name, _ in r["ingest_rejected"]} == {"empty.wav", "corrupt.mp3"}
    assert all(0.0 <= c["silence_ratio"] <= 1.0 for c in r["mostly_silent"])
    assert 0.0 < r["speakers"]["bob"]["silence_ratio"] < 0.5
    by_clip = {p["wav"]: p["problem"] for p in r["clip_problems"]}
    assert "sampler drops it" in by_clip["wavs/alice/tiny.wav"] and "unreadable" in by_clip["wavs/alice/emoji.wav"]
    txt = (voice / "report.txt").read_text(encoding="utf-8")
    for needle in ("Speakers with too little data", "carol", "bucket sampler", "tiny.wav", "emoji.wav"):
        assert needle in txt, needle


def _prepare(*argv, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pipeline.prepare", *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_prepare_runs_the_chain_and_stops_at_the_first_failure(source, tmp_path):
    voice = tmp_path / "Data" / "fresh"
    evil = tmp_path / "upload.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.write(source / "carol" / "one.ogg", "carol/one.ogg")
        zf.writestr("../evil.wav", (source / "bob" / "ja.wav").read_bytes())
    proc = _prepare(voice, "--source", evil, "--stages", "ingest,slice,text,report", "--workers", "1")
    assert proc.returncode == 1
    assert "../evil.wav" in proc.stderr and "outside" in proc.stderr
    assert not (tmp_path / "Data" / "evil.wav").exists() and not (tmp_path / "evil.wav").exists()
    assert (voice / "wavs" / "carol" / "one_0001.wav").is_file()  # ingest + slice worked
    assert "stage 'text' failed" in proc.stderr and "esd.list" in proc.stderr
    assert not (voice / "report.json").exists()  # the chain stopped
    stages = [p["item"] for p in map(parse_progress, proc.stdout.splitlines()) if p and p["stage"] == "prepare"
              and p.get("item")]
    assert stages[:3] == ["ingest", "slice", "text"]
    # Fix the cause and run again: finished stages skip their work.
    (voice / "esd.list").write_text("wavs/carol/one_0001.wav|carol|EN|My name is Carol.\n", encoding="utf-8")
    proc = _prepare(voice, "--stages", "slice,text,report", "--in-process")
    assert proc.returncode == 0, proc.stderr
    assert (voice / "report.json").is_file() and (voice / "filelists" / "val.list").read_text().strip()
    assert json.loads((voice / "slices.json").read_text())["raw/carol/one.ogg"]["clips"] == ["wavs/carol/one_0001.wav"]


def test_whisper_helper_loads_by_path(whisper_pt):
    import whisper

    model = whisper.load_model(str(whisper_pt), device="cpu")
    assert model.dims.n_vocab == 51865 and model.is_multilingual
    assert np.isfinite(sum(p.sum().item() for p in model.parameters()))


def test_prepare_runs_the_features_stage_with_the_configured_berts(texted, golden_dir, tmp_path):
    import torch

    from vits.text.testing import shared_tiny_models

    voice = texted[0]
    dirs = shared_tiny_models(str(golden_dir / "tokenizers"), hidden=32, layers=4)
    cfg = tmp_path / "config.yml"
    cfg.write_text("bert:\n" + "".join(f"  {lang}: {path}\n" for lang, path in dirs.items()), encoding="utf-8")
    code, out, err = run("prepare", voice, "--stages", "text,features,report", "--config", cfg, "--device", "cpu",
                         "--in-process")
    assert code == 0, err
    items = [p["item"] for p in map(parse_progress, out.splitlines()) if p and p["stage"] == "prepare"
             and p.get("item")]
    assert items == ["text", "features", "report"]
    for name in ("train.list", "val.list"):
        for line in (voice / "filelists" / name).read_text(encoding="utf-8").splitlines():
            wav, phones = line.split("|")[0], line.split("|")[4].split()
            feats = torch.load(voice / wav.replace(".wav", ".bert.pt"), weights_only=True)
            assert feats.shape == (32, 2 * len(phones) + 1)
