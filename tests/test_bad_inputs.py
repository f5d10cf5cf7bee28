"""The bad-input corpus (issue 15): odd and broken audio, hostile zips, malformed lists, built here.

Every case must end in a clear message naming the file (and line) while the good inputs next to it
still go through: nothing lost, nothing written outside the voice folder.
"""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import prep.ingest as ingest_mod
from prep.ingest import archive_name_encoding, ingest
from prep.slicing import SliceOptions, slice_file
from settings import Settings
from studio import review
from studio.voices import create_voice, import_uploads
from vits.errors import KoeError
from vits.lists import parse_cleaned_line, read_cleaned_list, read_esd_list

GOOD_LINE_TAIL = "|spk|EN|hello|_ h ə l oʊ _|0 0 0 0 0 0|1 4 1"


def _tone_bytes(tmp_path: Path, seconds=0.5, sr=16000) -> bytes:
    path = tmp_path / "tone.wav"
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, subtype="PCM_16")
    return path.read_bytes()


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------ audio


def test_broken_and_odd_audio_is_refused_by_name_and_the_good_file_kept(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = _tone_bytes(tmp_path)
    (src / "good.wav").write_bytes(good)
    (src / "empty.wav").write_bytes(b"")
    (src / "header_only.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk")
    (src / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(4000))
    (src / "cut.flac").write_bytes(b"fLaC" + b"\x00" * 30)
    result = ingest(src, tmp_path / "Data" / "v")
    assert result.copied == ["v/good.wav"]
    refused = dict(result.rejected)
    assert set(refused) == {"empty.wav", "header_only.wav", "noise.mp3", "cut.flac"}
    assert "empty (0 bytes)" in refused["empty.wav"]
    assert all("cannot decode" in refused[n] for n in ("header_only.wav", "noise.mp3", "cut.flac"))
    assert _files_under(tmp_path / "Data") == {"v/raw/v/good.wav"}


def test_nan_samples_and_files_without_samples_or_speech_give_a_reason(tmp_path):
    voice = tmp_path / "v"
    nan = np.full(44100 * 3, 0.1, dtype=np.float32)
    nan[::7] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 44100, subtype="FLOAT")
    sf.write(tmp_path / "none.wav", np.zeros(0, dtype=np.float32), 44100, subtype="PCM_16")
    sf.write(tmp_path / "short.wav", np.zeros(4410, dtype=np.float32), 44100, subtype="PCM_16")
    opts = SliceOptions()
    res = slice_file(tmp_path / "nan.wav", voice / "wavs", "nan", opts, voice)
    assert res.error == "no usable speech found" and any("NaN/inf samples zeroed" in n for n in res.info["fixes"])
    assert slice_file(tmp_path / "none.wav", voice / "wavs", "none", opts, voice).error == "file holds no audio samples"
    assert slice_file(tmp_path / "short.wav", voice / "wavs", "s", opts, voice).error.startswith("too short (0.10 s")
    assert not (voice / "wavs").exists()


# ------------------------------------------------------------------------------------------ zips


def _zip(path: Path, members: list[tuple[str, bytes]], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _zip_with_raw_names(path: Path, members: list[tuple[bytes, bytes]]) -> Path:
    """A zip whose names are the given bytes without the UTF-8 flag, as Windows' zip tools write them."""
    placeholders = [(f"{i:03d}".encode() + b"#" * (len(raw) - 3), raw) for i, (raw, _) in enumerate(members)]
    _zip(path, [(ph.decode(), data) for (ph, _), (_, data) in zip(placeholders, members)])
    blob = path.read_bytes()
    for ph, raw in placeholders:
        assert blob.count(ph) == 2  # local header and central directory
        blob = blob.replace(ph, raw)
    path.write_bytes(blob)
    return path


def test_zip_bomb_of_zeros_is_refused_before_anything_is_written(tmp_path):
    good = _tone_bytes(tmp_path)
    archive = _zip(tmp_path / "bomb.zip", [("spk/zeros.wav", b"RIFF" + bytes(64 << 20)), ("spk/ok.wav", good)])
    assert archive.stat().st_size < 1 << 20
    voice = tmp_path / "Data" / "v"
    result = ingest(archive, voice)
    assert result.copied == ["spk/ok.wav"]
    reason = dict(result.rejected)["spk/zeros.wav"]
    assert "zip bomb" in reason and ":1" in reason
    assert _files_under(voice / "raw") == {"spk/ok.wav"}
    # The studio's upload applies the same rule.
    settings = Settings(root=tmp_path, data_root=tmp_path / "Data")
    create_voice(settings, "alice")
    refused: list = []
    assert import_uploads(settings, "alice", [archive], refused=refused) == ["raw/spk/ok.wav"]
    assert refused and refused[0][0] == "spk/zeros.wav" and "zip bomb" in refused[0][1]
    with pytest.raises(KoeError, match="zip bomb"):
        import_uploads(settings, "alice", [_zip(tmp_path / "only_bomb.zip", [("z.wav", bytes(64 << 20))])])


def test_members_over_the_size_limit_or_lying_about_their_size_are_refused(tmp_path, monkeypatch):
    good = _tone_bytes(tmp_path)
    big = _zip(tmp_path / "big.zip", [("a/big.wav", good * 40), ("a/ok.wav", good)], zipfile.ZIP_STORED)
    monkeypatch.setattr(ingest_mod, "MAX_MEMBER_BYTES", len(good) * 10)
    result = ingest(big, tmp_path / "v1")
    assert result.copied == ["a/ok.wav"] and "limit per file" in dict(result.rejected)["a/big.wav"]
    monkeypatch.undo()
    # A central directory that declares fewer bytes than the member holds: streaming stops at the declared
    # size and the CRC check refuses the member.
    liar = _zip(tmp_path / "liar.zip", [("a/liar.wav", good), ("a/ok.wav", good)], zipfile.ZIP_STORED)
    blob = bytearray(liar.read_bytes())
    central = blob.index(b"PK\x01\x02")
    struct.pack_into("<I", blob, central + 24, 100)
    liar.write_bytes(bytes(blob))
    result = ingest(liar, tmp_path / "v2")
    assert result.copied == ["a/ok.wav"] and "cannot unpack" in dict(result.rejected)["a/liar.wav"]
    assert _files_under(tmp_path / "v2" / "raw") == {"a/ok.wav"}
    # A member declaring 4 GiB unpacked from a few kB is refused before a byte is written.
    struct.pack_into("<I", blob, central + 24, 0xFFFFFFFF)
    liar.write_bytes(bytes(blob))
    result = ingest(liar, tmp_path / "v3")
    assert result.copied == ["a/ok.wav"] and "4295 MB" in dict(result.rejected)["a/liar.wav"]


def test_a_truncated_wav_streams_the_samples_it_has(tmp_path):
    from prep.audio import iter_audio, load_audio

    path = tmp_path / "cut.wav"
    sf.write(path, np.full((44100, 6), 0.25, dtype=np.float32), 44100, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: 44 + 6 * 2 * 30000 + 5])  # the header still says 44100 frames
    streamed = np.concatenate(list(iter_audio(path, block_frames=4096)))
    assert len(streamed) == 30000 and np.allclose(streamed, 0.25, atol=1e-4)
    assert np.array_equal(streamed, load_audio(path)[0])


def test_a_zip_that_does_not_fit_on_the_disk_is_refused_whole(tmp_path, monkeypatch):
    good = _tone_bytes(tmp_path)
    archive = _zip(tmp_path / "in.zip", [("a/one.wav", good)])
    monkeypatch.setattr(ingest_mod, "MIN_FREE_BYTES", 1 << 62)
    with pytest.raises(KoeError, match="GB are free") as err:
        ingest(archive, tmp_path / "v")
    assert "free disk space" in err.value.fix and str(archive) in str(err.value)
    assert _files_under(tmp_path / "v") == set()
    settings = Settings(root=tmp_path, data_root=tmp_path / "Data")
    create_voice(settings, "alice")
    with pytest.raises(KoeError, match="GB are free"):
        import_uploads(settings, "alice", [archive])


def test_traversal_links_and_drive_letters_never_leave_raw(tmp_path):
    good = _tone_bytes(tmp_path)
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("../../up.wav", "/etc/abs.wav", "C:\\win\\d.wav", "a/../../b.wav", "ok/fine.wav"):
            zf.writestr(name, good)
        link = zipfile.ZipInfo("ok/link.wav")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    result = ingest(archive, tmp_path / "Data" / "v")
    assert result.copied == ["ok/fine.wav"]
    assert set(dict(result.rejected)) == {"../../up.wav", "/etc/abs.wav", "C:\\win\\d.wav", "a/../../b.wav",
                                          "ok/link.wav"}
    assert _files_under(tmp_path) == {"tone.wav", "evil.zip", "Data/v/raw/ok/fine.wav"}


JAPANESE = ["こんにちは/テスト.wav", "日本語の音声.wav", "話者/第一声.wav", "ソフト/表示.wav"]  # ソ, 表: 0x5C trail bytes
CHINESE = ["说话人/录音一.wav", "小明/第一句.wav", "你好.wav"]


@pytest.mark.parametrize("names,encoding", [(JAPANESE, "cp932"), (CHINESE, "gbk"),
                                            (JAPANESE + CHINESE, "utf-8"), (["café/crème.wav"], "cp437")])
def test_zip_names_are_decoded_with_the_archive_s_encoding(tmp_path, names, encoding):
    raw = [n.encode(encoding) for n in names]
    assert archive_name_encoding(raw) == encoding
    good = _tone_bytes(tmp_path)
    archive = _zip_with_raw_names(tmp_path / "names.zip", [(r, good) for r in raw])
    result = ingest(archive, tmp_path / "Data" / "v", speaker="top")
    expected = sorted(n if "/" in n else f"top/{n}" for n in names)
    assert sorted(result.copied) == expected and not result.rejected
    settings = Settings(root=tmp_path, data_root=tmp_path / "Data")
    create_voice(settings, "alice")
    added = import_uploads(settings, "alice", [archive], speaker=None)
    assert sorted(added) == sorted(f"raw/{n}" if "/" in n else f"raw/alice/{n}" for n in names)


def test_info_zip_unicode_path_field_wins_over_the_guess(tmp_path):
    good = _tone_bytes(tmp_path)
    name = "声優/台詞.wav"
    legacy = "??/??.wav".encode("ascii")
    archive = tmp_path / "u.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo(legacy.decode())
        payload = b"\x01" + struct.pack("<I", zlib.crc32(legacy)) + name.encode("utf-8")
        info.extra = struct.pack("<HH", 0x7075, len(payload)) + payload
        zf.writestr(info, good)
    assert ingest(archive, tmp_path / "v").copied == [name]


# ------------------------------------------------------------------------------------------ lists


def test_esd_paths_that_escape_the_voice_folder_are_refused_with_their_line(tmp_path):
    voice = tmp_path / "Data" / "v"
    (voice / "wavs").mkdir(parents=True)
    outside = tmp_path / "x.wav"
    outside.write_bytes(_tone_bytes(tmp_path))
    lines = ["wavs/a.wav|spk|EN|fine", "../../x.wav|spk|EN|up and out", f"{outside}|spk|EN|absolute outside",
             f"{voice / 'wavs' / 'b.wav'}|spk|EN|absolute inside", "wavs/../../../x.wav|spk|EN|sneaky",
             "wavs\\..\\..\\..\\x.wav|spk|EN|backslashes", "only|three|fields", "wavs/c.wav|spk|XX|bad language"]
    (voice / "esd.list").write_bytes(("\ufeff" + "\n".join(lines) + "\n").encode("utf-8") + b"wavs/d.wav|s|EN|\xff\n")
    entries, problems = read_esd_list(voice / "esd.list")
    assert [e.line_no for e in entries] == [1, 4]
    by_line = {p.line_no: p.reason for p in problems}
    assert sorted(by_line) == [2, 3, 5, 6, 7, 8, 9]
    assert all("outside the voice folder" in by_line[n] and "wavs/<speaker>/<clip>.wav" in by_line[n]
               for n in (2, 3, 5, 6))
    assert "expected 4 fields" in by_line[7] and "unknown language" in by_line[8] and "UTF-8" in by_line[9]
    # The studio's review table shows the same problem on the row and refuses to save it.
    flagged = {c.wav: c.flags for c in review.read_esd(voice / "esd.list")}
    assert "outside the voice folder" in flagged["../../x.wav"][0]
    with pytest.raises(KoeError, match="outside the voice folder"):
        review.save_esd(voice, review.read_esd(voice / "esd.list"))


def test_cleaned_lists_with_outside_paths_stop_every_reader_with_file_and_line(tmp_path):
    from prep.features import read_lists
    from vits.data import read_list

    voice = tmp_path / "Data" / "v"
    (voice / "filelists").mkdir(parents=True)
    train = voice / "filelists" / "train.list"
    train.write_text("wavs/a.wav" + GOOD_LINE_TAIL + "\n/tmp/x.wav" + GOOD_LINE_TAIL + "\n", encoding="utf-8")
    (voice / "filelists" / "val.list").write_text("../x.wav" + GOOD_LINE_TAIL + "\n", encoding="utf-8")
    with pytest.raises(KoeError, match="outside the voice folder") as err:
        read_list(train, voice)
    assert f"{train}:2" in str(err.value)
    with pytest.raises(KoeError, match="outside"):
        read_cleaned_list(train, voice)
    assert parse_cleaned_line("wavs/a.wav" + GOOD_LINE_TAIL, "t:1", voice).wav == "wavs/a.wav"
    items, problems = read_lists(voice)
    assert [i.where for i in items] == [f"{train}:1"]
    assert any(f"{train}:2" in p and "outside" in p for p in problems)
    assert any("val.list:1" in p and "outside" in p for p in problems)
    assert not Path("/tmp/x.bert.pt").exists() and not (tmp_path / "Data" / "x.bert.pt").exists()
