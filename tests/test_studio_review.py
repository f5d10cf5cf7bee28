"""The studio's file-side behaviour: review-table save, flags, uploads that cannot escape, export zip, auth."""

from __future__ import annotations

import json
import os
import zipfile
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from settings import Settings
from studio import review, stages
from studio.app import launch, parse_auth
from studio.voices import create_voice, import_uploads, model_card, newest_eval_audio, zip_voice
from vits.errors import KoeError
from vits.voice_folder import generator_files


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(root=tmp_path, data_root=tmp_path / "Data")


def _wav(path: Path, seconds=0.5, sr=44100):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * sr), dtype=np.float32), sr, subtype="PCM_16")


@pytest.fixture
def voice(settings) -> Path:
    voice_dir = create_voice(settings, "alice")
    for name in ("a", "b", "c"):
        _wav(voice_dir / "wavs" / "alice" / f"{name}.wav", seconds=1.5)
    (voice_dir / "esd.list").write_text(
        "wavs/alice/a.wav|alice|ZH|你好。\n"
        "wavs/alice/b.wav|alice|EN|Hello there.\n"
        "wavs/alice/c.wav|alice|JP|こんにちは。\n", encoding="utf-8")
    (voice_dir / "esd.meta.json").write_text(json.dumps({"clips": {
        "wavs/alice/a.wav": {"avg_logprob": -0.1, "flags": []},
        "wavs/alice/b.wav": {"avg_logprob": -0.2, "flags": ["repeated words"]},
        "wavs/alice/c.wav": {"avg_logprob": -1.5, "flags": []},
    }}), encoding="utf-8")
    return voice_dir


def test_table_puts_doubtful_clips_first(voice):
    clips = review.table(voice)
    assert [c.wav for c in clips] == ["wavs/alice/b.wav", "wavs/alice/c.wav", "wavs/alice/a.wav"]
    assert clips[0].flags == ["repeated words"]
    assert clips[1].flags[0].startswith("low confidence 0.22")  # exp(-1.5)
    assert clips[2].flags == [] and clips[2].confidence == pytest.approx(0.905, abs=1e-3)
    rows = review.to_rows(clips)
    assert rows[2] == ["", "wavs/alice/a.wav", "alice", "ZH", "你好。"]


def test_save_edits_atomically_with_backup_and_trash(voice):
    before = (voice / "esd.list").read_text(encoding="utf-8")
    rows = review.to_rows(review.table(voice))
    rows[0][4] = "Hello there, friend."
    rows[1][2] = "bob"
    deleted = [rows.pop(2)[1]]  # a.wav
    backup = review.save_esd(voice, review.from_rows(rows), deleted)
    assert backup.read_text(encoding="utf-8") == before and backup.parent == voice / "backups"
    lines = (voice / "esd.list").read_text(encoding="utf-8").splitlines()
    assert lines == ["wavs/alice/b.wav|alice|EN|Hello there, friend.", "wavs/alice/c.wav|bob|JP|こんにちは。"]
    assert not (voice / "wavs/alice/a.wav").exists()
    assert (voice / "trash/wavs/alice/a.wav").is_file()
    assert not list(voice.glob(".esd.list.*"))  # no temp file left behind


@pytest.mark.parametrize("column,value,message", [
    (4, "a|b", "may not contain '|'"),
    (3, "FR", "unknown language 'FR'"),
    (4, "  ", "the text is empty"),
    (1, "../../outside.wav", "outside the voice folder"),
    (2, "", "may not be empty"),
])
def test_invalid_edits_are_refused_and_nothing_is_written(voice, column, value, message):
    before = (voice / "esd.list").read_text(encoding="utf-8")
    rows = review.to_rows(review.table(voice))
    rows[1][column] = value
    with pytest.raises(KoeError, match=message) as info:
        review.save_esd(voice, review.from_rows(rows))
    assert "row 2" in str(info.value)
    assert (voice / "esd.list").read_text(encoding="utf-8") == before
    with pytest.raises(KoeError, match="outside"):
        review.save_esd(voice, review.from_rows(rows[:1]), deleted=["../../x.wav"])


def test_malformed_lines_show_up_flagged(voice):
    with open(voice / "esd.list", "a", encoding="utf-8") as f:
        f.write("wavs/alice/d.wav|alice|XX|text\nbroken line\n")
    clips = review.table(voice)
    flagged = {c.wav: c.flags for c in clips}
    assert "unknown language 'XX'" in flagged["wavs/alice/d.wav"][0]
    assert "expected 4 fields wav|speaker|LANG|text" in flagged["broken line"][0]
    assert "audio missing" in flagged["wavs/alice/d.wav"]
    with pytest.raises(KoeError):
        review.save_esd(voice, clips)


def test_g2p_preview_shows_phones_or_the_error():
    text = review.g2p_preview("Hello world.", "EN")
    assert "phones:" in text and "word2ph" in text
    assert review.g2p_preview("x", "XX").startswith("error:")


def test_uploads_and_zips_cannot_escape_the_voice_folder(settings, tmp_path):
    voice_dir = create_voice(settings, "alice")
    src = tmp_path / "in"
    _wav(src / "take 1.wav")
    (src / "notes.txt").write_text("not audio")
    archive = src / "batch.zip"
    with zipfile.ZipFile(archive, "w") as z:
        # Different audio each (the same audio twice is refused as a duplicate, see below).
        for i, member in enumerate(["bob/one.wav", "../../evil.wav", "/abs/evil2.wav"], 1):
            _wav(tmp_path / "members" / f"{i}.wav", seconds=0.5 + 0.1 * i)
            z.write(tmp_path / "members" / f"{i}.wav", member)
        z.writestr("bob/readme.md", "skip me")
    added = import_uploads(settings, "alice", [src / "take 1.wav", src / "notes.txt", archive])
    assert added == ["raw/alice/take 1.wav", "raw/bob/one.wav", "raw/alice/evil.wav", "raw/abs/evil2.wav"]
    escaped = [p for p in settings.data_root.parent.rglob("*evil*.wav")]
    assert len(escaped) == 2 and all(p.resolve().is_relative_to(voice_dir.resolve()) for p in escaped)
    # Uploading the same name again never overwrites; the same audio again is refused, by name.
    _wav(tmp_path / "other" / "take 1.wav", seconds=0.9)
    assert import_uploads(settings, "alice", [tmp_path / "other" / "take 1.wav"]) == ["raw/alice/take 1_1.wav"]
    refused = []
    with pytest.raises(KoeError, match="no audio"):
        import_uploads(settings, "alice", [src / "take 1.wav"], refused=refused)
    assert refused == [("take 1.wav", "already added as raw/alice/take 1.wav (same audio)")]
    with pytest.raises(KoeError, match="no audio"):
        import_uploads(settings, "alice", [src / "notes.txt"])
    for bad in ["../x", "a/b", ".hidden", "", "-x"]:
        with pytest.raises(KoeError):
            create_voice(settings, bad)


def test_speaker_names_are_sanitized(settings, tmp_path):
    create_voice(settings, "alice")
    _wav(tmp_path / "a.wav")
    added = import_uploads(settings, "alice", [tmp_path / "a.wav"], speaker="../../x|y")
    assert len(added) == 1 and ".." not in Path(added[0]).parts and "|" not in added[0]
    assert (settings.data_root / "alice" / added[0]).is_file()


def test_checkpoints_eval_audio_and_export_zip(settings):
    voice_dir = create_voice(settings, "alice")
    for step in (0, 500, 1500):
        (voice_dir / "models" / f"G_{step}.pth").write_bytes(b"x")
    (voice_dir / "models" / "D_1500.pth").write_bytes(b"x")
    assert [s for s, _ in generator_files(voice_dir)] == [1500, 500, 0]
    assert newest_eval_audio(voice_dir) is None
    for step in (100, 200):
        for name in ("00_gt", "00_sdp0", "01_sdp0"):
            _wav(voice_dir / "logs" / "eval" / f"step_{step}" / f"{name}.wav", seconds=0.1)
    path, step = newest_eval_audio(voice_dir)
    assert step == 200 and path.name == "00_sdp0.wav"

    with pytest.raises(KoeError, match="config.json"):
        zip_voice(voice_dir, voice_dir / "models" / "G_1500.pth", 1500)
    (voice_dir / "configs" / "config.json").write_text(json.dumps({"data": {"spk2id": {"alice": 0}}}))
    (voice_dir / "esd.list").write_text("wavs/a.wav|alice|ZH|你好\nwavs/b.wav|alice|EN|hi\n")
    _wav(voice_dir / "wavs" / "a.wav", seconds=30)
    card = model_card(voice_dir, 1500)
    assert "| steps | 1500 |" in card and "EN, ZH" in card and "0.5 minutes" in card and "alice" in card
    archive = zip_voice(voice_dir, voice_dir / "models" / "G_1500.pth", 1500)
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["alice/G_1500.pth", "alice/README.md",
                                                           "alice/config.json"]


def test_stage_commands_are_argument_lists(tmp_path):
    voice_dir = tmp_path / "Data" / "my voice; rm -rf ~"
    cmd = stages.slice_audio(voice_dir, 2, 12)
    assert cmd.argv[1:4] == ["-m", "pipeline.slice", str(voice_dir)] and "--max" in cmd.argv
    train = stages.train(voice_dir, gpus=2, base_model="/models/base")
    assert "torch.distributed.run" in train.argv and "--nproc_per_node=2" in train.argv and train.gpu
    assert train.argv[-2:] == ["--base", "/models/base"] and train.expected == ["models/G_*.pth"]
    assert stages.train(voice_dir).argv[1:3] == ["-m", "pipeline.train"]


def test_share_needs_auth(tmp_path, capsys):
    args = Namespace(host=None, port=None, share=True, auth=None, insecure_share=False, root=str(tmp_path),
                     config=None)
    before = os.environ.get("KOE_DATA_ROOT")
    assert launch(args) == 2
    assert "--auth" in capsys.readouterr().err
    assert os.environ.get("KOE_DATA_ROOT") == before  # a refused start leaves the process environment alone
    assert parse_auth("me:secret:x") == ("me", "secret:x")
    for bad in ["nopass", ":x", "x:"]:
        with pytest.raises(KoeError):
            parse_auth(bad)


def test_speaker_outliers_come_first_with_their_score(voice):
    # report.json as pipeline.report writes it: the outlier list and its per-clip problem lines
    (voice / "report.json").write_text(json.dumps({
        "problems": ["another speaker? 2 clips, listen"],
        "speaker_outliers": [
            {"wav": "wavs/alice/a.wav", "speaker": "alice", "score": 0.41, "threshold": 0.6,
             "flag": "another speaker?", "closest": None},
            {"wav": "wavs/alice/c.wav", "speaker": "alice", "score": 0.35, "threshold": 0.6,
             "flag": "another speaker?", "closest": None}],
        "clip_problems": [
            {"wav": "wavs/alice/a.wav", "problem": "another speaker? similarity 0.41 to alice (its clips: above 0.60); listen"},
            {"wav": "wavs/alice/c.wav", "problem": "another speaker? similarity 0.35 to alice (its clips: above 0.60); listen"}],
    }), encoding="utf-8")
    clips = review.table(voice)
    assert [c.wav for c in clips] == ["wavs/alice/c.wav", "wavs/alice/a.wav", "wavs/alice/b.wav"]
    assert "another speaker? similarity 0.35" in "; ".join(clips[0].flags)
    assert clips[1].flags == ["another speaker? similarity 0.41 to alice (its clips: above 0.60); listen"]
    assert clips[2].flags == ["repeated words"]  # nothing dropped: the other clips keep their order
