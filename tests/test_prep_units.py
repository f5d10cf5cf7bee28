"""Dataset pipeline building blocks: audio formats, zip safety, slicing plans, list parsing, flags, split."""

from __future__ import annotations

import os
import stat
import zipfile

import numpy as np
import pytest
import soundfile as sf

from prep.audio import load_audio, probe_audio, write_wav16
from prep.ingest import ingest
from prep.lists import TextOptions, split_per_speaker, suggest_batch_size
from prep.report import sampler_drop_reason
from prep.slicing import SAMPLER_MAX_SECONDS, SliceOptions, group_regions, plan_clips, split_long
from prep.transcribe import TranscribeOptions, hallucination_flags, to_simplified
from tests.helpers_audio import espeak_audio, have_espeak, with_silence, write_audio
from vits.errors import KoeError
from vits.lists import LineProblem, parse_esd_line, read_esd_list, write_lines

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")


def _tone(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize("name,rate,channels,subtype", [
    ("u8.wav", 8000, 1, "PCM_U8"), ("s16.wav", 16000, 1, "PCM_16"), ("s24.wav", 96000, 1, "PCM_24"),
    ("s32.wav", 32000, 2, "PCM_32"), ("f32.wav", 44100, 1, "FLOAT"), ("x.flac", 22050, 1, "PCM_16"),
    ("x.ogg", 48000, 2, None), ("x.mp3", 48000, 2, None), ("x.m4a", 44100, 1, None), ("x.opus", 48000, 1, None),
    ("UPPER.WAV", 24000, 1, "PCM_16"),
])
def test_load_audio_any_format(tmp_path, name, rate, channels, subtype):
    path = write_audio(tmp_path / name, _tone(1.0, rate), rate, channels=channels, subtype=subtype)
    audio, sr, info = load_audio(path, sample_rate=44100)
    assert sr == 44100 and audio.ndim == 1 and audio.dtype == np.float32
    assert info.channels == channels
    assert abs(len(audio) / 44100 - 1.0) < 0.08  # lossy codecs add a little padding
    assert 0.15 < np.abs(audio).max() < 0.6  # 0.3 peak; lossy codecs overshoot a little
    if channels == 2:
        assert "2 channels -> mono" in info.format_fixes()


def test_unreadable_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(KoeError, match="empty.wav.*empty") as err:
        load_audio(empty)
    assert err.value.fix
    bad = tmp_path / "bad clip.mp3"
    bad.write_bytes(os.urandom(3000))
    with pytest.raises(KoeError, match="bad clip.mp3.*cannot decode"):
        probe_audio(bad)


def test_write_wav16_is_44k_mono_pcm16_and_clips_overflow(tmp_path):
    out = tmp_path / "a" / "b.wav"
    write_wav16(out, np.array([0.0, 0.5, 1.5, -2.0], dtype=np.float32))
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
    data, _ = sf.read(str(out), dtype="int16")
    assert data.tolist() == [0, 16384, 32767, -32768]
    assert not list(out.parent.glob(".*tmp"))


def _zip_with(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, link in members:
            info = zipfile.ZipInfo(name)
            if link:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return path


def test_zip_members_cannot_escape(tmp_path):
    good = tmp_path / "g.wav"
    write_audio(good, _tone(0.5, 22050), 22050)
    wav = good.read_bytes()
    archive = _zip_with(tmp_path / "in.zip", [
        ("alice/ok.wav", wav, False), ("../evil.wav", wav, False), ("/abs.wav", wav, False),
        ("alice/../../evil2.wav", wav, False), ("C:/win.wav", wav, False), ("alice/link.wav", "/etc/passwd", True),
        ("readme.txt", b"hi", False), ("alice/broken.wav", b"RIFFjunk", False),
    ])
    voice = tmp_path / "Data" / "v"
    result = ingest(archive, voice)
    assert result.copied == ["alice/ok.wav"]
    refused = dict(result.rejected)
    for name in ("../evil.wav", "/abs.wav", "alice/../../evil2.wav", "C:/win.wav", "alice/link.wav", "alice/broken.wav"):
        assert name in refused, name
    assert "outside" in refused["../evil.wav"] and "link" in refused["alice/link.wav"]
    assert result.ignored == ["readme.txt"]
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"g.wav", "in.zip", "Data/v/raw/alice/ok.wav"}
    # Resume: same zip again copies nothing new.
    again = ingest(archive, voice)
    assert again.copied == [] and again.skipped == ["alice/ok.wav"]


def test_ingest_folder_keeps_unicode_names_and_renames_clashes(tmp_path):
    src = tmp_path / "src"
    write_audio(src / "小明" / "第 1 句.WAV", _tone(0.5, 16000), 16000)
    write_audio(src / "top.flac", _tone(0.5, 16000), 16000)
    voice = tmp_path / "v"
    res = ingest(src, voice, speaker="narrator")
    assert sorted(res.copied) == ["narrator/top.flac", "小明/第 1 句.WAV"]
    write_audio(src / "top.flac", _tone(0.7, 16000), 16000)  # changed content, same name
    res = ingest(src, voice, speaker="narrator")
    assert res.copied == ["narrator/top (2).flac"] and res.skipped == ["小明/第 1 句.WAV"]
    with pytest.raises(KoeError, match="not found"):
        ingest(tmp_path / "nope", voice)


def test_long_speech_is_cut_at_its_quietest_points():
    opts = SliceOptions()
    hop = 0.01
    levels = np.full(4000, -20.0)  # 40 s of loud speech, one quiet dip at 9.0 s and one at 20.0 s
    levels[900] = -60.0
    levels[2000] = -60.0
    pieces = split_long([(0.0, 40.0)], levels, hop, opts)
    assert abs(pieces[0][1] - 9.005) < 0.02 and abs(pieces[1][1] - 20.005) < 0.02
    limit = opts.effective_max() - 2 * opts.margin
    assert all(opts.min_seconds <= e - s <= limit + 1e-9 for s, e in pieces)
    assert pieces[0][0] == 0.0 and pieces[-1][1] == 40.0
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))


def test_grouping_merges_short_pauses_and_keeps_a_trailing_phrase():
    opts = SliceOptions()
    clips = group_regions([(0.0, 1.0), (1.1, 2.5), (3.0, 5.5), (6.0, 7.0)], opts)
    # 0-2.5 merges (0.1 s pause, first part too short); 3.0-5.5 starts after a 0.5 s pause;
    # the 1 s phrase at 6.0 is too short alone and joins its nearest neighbour.
    assert clips == [(0.0, 2.5), (3.0, 7.0)]
    assert group_regions([(0.0, 1.0), (9.0, 10.0)], opts) == [(0.0, 1.0), (9.0, 10.0)]  # too far apart


def test_plan_drops_isolated_short_speech_and_caps_at_sampler_limit():
    sr = 16000
    audio = np.zeros(sr * 30, dtype=np.float32)
    probs = np.zeros(len(audio) // 512, dtype=np.float32)
    step = 512 / sr
    probs[int(1 / step):int(1.5 / step)] = 0.9  # 0.5 s blip
    probs[int(10 / step):int(25 / step)] = 0.9  # 15 s unbroken speech
    clips, dropped = plan_clips(audio, probs, SliceOptions(max_seconds=12))
    assert len(dropped) == 1 and dropped[0][0] < 2
    assert len(clips) == 2 and all(2.0 <= e - s <= SAMPLER_MAX_SECONDS for s, e in clips)
    assert 11.6 < SAMPLER_MAX_SECONDS < 11.61
    assert sampler_drop_reason((int(SAMPLER_MAX_SECONDS * 44100) + 1) * 2 + 44) is None


def test_sampler_drop_reasons_follow_bucket_boundaries():
    assert "too short" in sampler_drop_reason(32 * 1024 + 1023)
    assert sampler_drop_reason(33 * 1024) is None
    assert sampler_drop_reason(1000 * 1024 + 1023) is None
    assert "too long" in sampler_drop_reason(1001 * 1024)


def test_esd_lines_are_checked_one_by_one(tmp_path):
    assert parse_esd_line("wavs/a.wav|spk|zh|你好", 1).language == "ZH"
    assert parse_esd_line("wavs/a.wav|spk|ja|こんにちは", 1).language == "JP"
    assert parse_esd_line("   ", 3) is None
    for line, reason in [("wavs/a.wav|spk|ZH", "4 fields"), ("a|b|c|d|e", "4 fields"), ("a.wav|s|FR|x", "language"),
                         ("a.wav|s|EN|  ", "empty text"), ("|s|EN|x", "wav")]:
        problem = parse_esd_line(line, 7)
        assert isinstance(problem, LineProblem) and reason in problem.reason and "line 7" in str(problem)
    esd = tmp_path / "esd.list"
    esd.write_bytes(b"a.wav|s|EN|ok\nbroken line\n" + b"b.wav|s|EN|\xff\xfe bad\n")
    entries, problems = read_esd_list(esd)
    assert [e.wav for e in entries] == ["a.wav"] and [p.line_no for p in problems] == [2, 3]


def test_esd_list_is_never_overwritten_without_backup(tmp_path):
    esd = tmp_path / "esd.list"
    esd.write_text("mine|s|EN|hand edited\n", encoding="utf-8")
    backup = write_lines(esd, ["new|s|EN|text"])
    assert backup is not None and backup.read_text(encoding="utf-8") == "mine|s|EN|hand edited\n"
    assert backup.parent == tmp_path / "backups"  # the one backup place: backups/ beside the list
    assert esd.read_text(encoding="utf-8") == "new|s|EN|text\n"
    assert write_lines(esd, ["new|s|EN|text"]) is None  # unchanged: no backup churn
    backup2 = write_lines(esd, ["newer|s|EN|text"])
    assert backup2 != backup and backup.exists()


def test_hallucination_flags():
    o = TranscribeOptions()
    assert hallucination_flags("", "EN", 3, -0.2, 0.1, 1.0, o) == ["empty"]
    assert "no_speech" in hallucination_flags("you", "EN", 3, -1.5, 0.9, 1.0, o)
    assert "repetition" in hallucination_flags("好的好的好的好的好的", "ZH", 3, -0.3, 0.0, 1.5, o)
    assert "high_compression" in hallucination_flags("ok", "EN", 3, -0.3, 0.0, 3.1, o)
    assert "subtitle_credit" in hallucination_flags("字幕由Amara.org社区提供", "ZH", 3, -0.3, 0.0, 1.0, o)
    assert "text_too_long" in hallucination_flags("长" * 80, "ZH", 2.0, -0.3, 0.0, 1.0, o)
    assert "unsupported_language" in hallucination_flags("bonjour", "fr", 2.0, -0.3, 0.0, 1.0, o)
    assert "clip_over_30s" in hallucination_flags("ok", "EN", 31.0, -0.3, 0.0, 1.0, o)
    assert hallucination_flags("今天天气很好。", "ZH", 2.0, -0.3, 0.0, 1.0, o) == []
    assert to_simplified("這是測試，請說話。") == "这是测试，请说话。"


def test_split_gives_every_speaker_with_five_clips_a_validation_clip():
    items = {"a": [f"a{i}" for i in range(40)], "b": [f"b{i}" for i in range(5)], "c": ["c0"],
             "d": [f"d{i}" for i in range(4)]}
    train, val = split_per_speaker(items, TextOptions(val_per_speaker=2, max_val_total=2))
    assert sorted(v[0] for v in val) == ["a", "b"]  # cap 2 still leaves one for each eligible speaker
    assert sorted(train + val) == sorted(x for v in items.values() for x in v)
    assert "c0" in train and not set(train) & set(val)
    train2, val2 = split_per_speaker(items, TextOptions(val_per_speaker=2, max_val_total=12))
    assert len(val2) == 3 and (train2, val2) == split_per_speaker(items, TextOptions())  # seeded


def test_suggested_batch_size():
    assert suggest_batch_size(None) is None
    assert suggest_batch_size(8 * 2**30) == 4 and suggest_batch_size(24 * 2**30) == 12
    assert suggest_batch_size(80 * 2**30) == 32


@needs_espeak
def test_helpers_make_real_speech():
    audio, sr = espeak_audio("ni3 hao3", "cmn-latn-pinyin")
    assert sr == 22050 and len(audio) > sr * 0.3 and np.abs(audio).max() > 0.1
    padded = with_silence(audio, sr, 0.5, 0.5)
    assert len(padded) == len(audio) + sr


@needs_espeak
def test_reslicing_a_changed_recording_replaces_its_clips(tmp_path):
    from prep.slicing import slice_voice
    from tests.helpers_audio import without_pauses

    en, sr = espeak_audio("This recording changes between runs of the slicer.", "en")
    voice = tmp_path / "v"
    raw = voice / "raw" / "spk" / "take.wav"
    write_audio(raw, without_pauses(en, sr, 25), sr)
    first = slice_voice(voice)["raw/spk/take.wav"]["clips"]
    assert len(first) >= 3
    (voice / first[-1]).with_suffix(".bert.pt").write_bytes(b"stale features")
    write_audio(raw, with_silence(en, sr), sr)  # the user re-recorded it: shorter now
    second = slice_voice(voice)["raw/spk/take.wav"]["clips"]
    assert second == ["wavs/spk/take_0001.wav"]
    assert sorted(p.name for p in (voice / "wavs" / "spk").iterdir()) == ["take_0001.wav"]
    stamp = (voice / second[0]).stat().st_mtime_ns
    assert slice_voice(voice)["raw/spk/take.wav"]["clips"] == second  # unchanged: not redone
    assert (voice / second[0]).stat().st_mtime_ns == stamp


def test_list_paths_from_bert_vits2_datasets_resolve_inside_the_voice(tmp_path):
    from vits.voice_folder import resolve_wav, safe_name

    voice = tmp_path / "Data" / "myvoice"
    (voice / "wavs" / "spk").mkdir(parents=True)
    (voice / "wavs" / "spk" / "a.wav").write_bytes(b"x")
    for written in ("wavs/spk/a.wav", "Data/myvoice/wavs/spk/a.wav", "./dataset/myvoice/wavs/spk/a.wav",
                    str(voice / "wavs" / "spk" / "a.wav"), "wavs\\spk\\a.wav"):
        assert resolve_wav(voice, written)[0] == "wavs/spk/a.wav", written
    assert resolve_wav(voice, "wavs/spk/b.wav") is None
    assert safe_name("a|b/c\n.d") == "a_b_c_.d" and safe_name("..") == "clip" and safe_name("小 明") == "小 明"


def test_zip_of_one_folder_does_not_become_the_only_speaker(tmp_path):
    wav = write_audio(tmp_path / "g.wav", _tone(0.5, 16000), 16000).read_bytes()
    archive = _zip_with(tmp_path / "voice.zip", [("myvoice/alice/a.wav", wav, False),
                                                 ("myvoice/bob/b.wav", wav, False)])
    assert sorted(ingest(archive, tmp_path / "v").copied) == ["alice/a.wav", "bob/b.wav"]
