"""Checkpoints that prove they are whole (issue 15 items 4, 9, 12): CRC-32 per record checked on load, damaged
sets passed over on resume with the file named, interrupted saves cleaned up, pickles that need code refused
as "not weights-only", and a full disk reported in one line with what is still safe."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_data import make_voice, tiny_config
from vits import checkpoints as ck
from vits.checkpoints.integrity import crc_problem, nonfinite_tensors
from vits.errors import KoeError

pytestmark = pytest.mark.torch_threads(1)  # tests/conftest.py sets and restores it per test


def _state(seed: int = 0, n: int = 6) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {f"layer{i}.weight": torch.randn(64, 256, generator=gen) for i in range(n)}


def _save(path: Path, step: int, seed: int = 0) -> Path:
    return ck.save_checkpoint(path, _state(seed), epoch=1, step=step, learning_rate=2e-4)


def _record_offset(path: Path, record_suffix: str) -> int:
    """Byte offset of a record's data in a torch zip file (after its local header)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(record_suffix))
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(fh.read(2), "little"), int.from_bytes(fh.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len


def _overwrite(path: Path, offset: int, data: bytes = b"\xff" * 4096) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    assert path.stat().st_size == size  # corrupted in place: same size


# --- item 4: a checksum recorded at save, verified at load --------------------------------------------


def test_in_place_damage_is_named_instead_of_loading_nans(tmp_path):
    path = _save(tmp_path / "G_10.pth", 10)
    with zipfile.ZipFile(path) as archive:
        assert all(i.CRC for i in archive.infolist() if i.file_size)  # recorded when saving
    assert crc_problem(path) is None
    good = path.read_bytes()

    _overwrite(path, _record_offset(path, "data/3") + 1000)  # 4 KiB of 0xff inside a tensor: NaNs
    raw = torch.load(path, weights_only=True)  # what torch alone does: loads the NaNs without a word
    assert nonfinite_tensors(raw) == ["layer3.weight"]
    with pytest.raises(ck.DamagedCheckpoint) as err:
        ck.read_checkpoint(path)
    text = str(err.value)
    assert str(path) in text and "record data/3 (a tensor storage)" in text and "CRC-32" in text
    assert "\n" not in text and "→" in text

    path.write_bytes(good)
    _overwrite(path, _record_offset(path, "data/2") - 40)  # a record's header
    with pytest.raises(ck.DamagedCheckpoint, match=r"header of record data/2"):
        ck.read_checkpoint(path)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ck.DamagedCheckpoint, match=r"truncated or not a PyTorch file"):
        ck.read_checkpoint(path)
    path.write_bytes(os.urandom(len(good)))
    with pytest.raises(ck.DamagedCheckpoint, match=r"truncated or not a PyTorch file"):
        ck.read_checkpoint(path)


def test_files_without_a_recorded_checksum_still_load(tmp_path):
    # Bert-VITS2's own files are torch zip files: they carry the CRC-32 too and are checked the same way.
    plain = {"model": _state(1), "iteration": 3, "optimizer": None, "learning_rate": 2e-4}
    torch.save(plain, tmp_path / "G_100.pth")
    assert crc_problem(tmp_path / "G_100.pth") is None
    assert ck.read_checkpoint(tmp_path / "G_100.pth")["iteration"] == 3
    # The pre-1.6 format and files saved with torch's CRC-32 off record none: they load unchecked...
    torch.save(plain, tmp_path / "G_200.pth", _use_new_zipfile_serialization=False)
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(plain, tmp_path / "G_300.pth")
    finally:
        torch.serialization.set_crc32_options(True)
    for name in ("G_200.pth", "G_300.pth"):
        assert crc_problem(tmp_path / name) is None
        assert torch.equal(ck.read_checkpoint(tmp_path / name)["model"]["layer0.weight"], plain["model"]["layer0.weight"])
    # ...and a resume still refuses their NaNs (the usual result of damage), naming the file.
    _overwrite(tmp_path / "G_300.pth", _record_offset(tmp_path / "G_300.pth", "data/1"))
    found = ck.newest_intact_set(tmp_path, ["G"])
    assert found.step == 200
    assert found.damaged == [(tmp_path / "G_300.pth", "it holds NaN/inf values (layer1.weight)")]


def test_newest_intact_set_passes_over_damaged_sets_and_fails_when_none_is_left(tmp_path):
    for step in (100, 200):
        for kind in ("G", "D", "DUR"):
            _save(tmp_path / f"{kind}_{step}.pth", step, seed=step)
    # step 300: a whole file whose optimizer state went NaN (CRC fine: it was saved that way)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    opt.state[model.weight] = {"step": torch.tensor(5.0), "exp_avg": torch.full((4, 4), float("nan")),
                               "exp_avg_sq": torch.ones(4, 4)}
    ck.save_checkpoint(tmp_path / "G_300.pth", _state(3), opt, epoch=1, step=300, learning_rate=2e-4)
    _overwrite(tmp_path / "D_200.pth", _record_offset(tmp_path / "D_200.pth", "data/0") + 10)

    found = ck.newest_intact_set(tmp_path, ["G", "D", "DUR"])
    assert found.step == 100 and set(found.checkpoints) == {"G", "D", "DUR"}
    assert [p.name for p, _ in found.damaged] == ["G_300.pth", "D_200.pth"]
    assert "NaN/inf" in found.damaged[0][1] and "optimizer state" in found.damaged[0][1]
    assert "CRC-32" in found.damaged[1][1]
    # D is not trained (kinds): its damage does not matter
    assert ck.newest_intact_set(tmp_path, ["G", "DUR"]).step == 200
    # nothing intact left: an error naming every bad file, not a silent start from scratch
    (tmp_path / "G_100.pth").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ck.DamagedCheckpoint) as err:
        ck.newest_intact_set(tmp_path, ["G", "D", "DUR"])
    assert all(name in str(err.value) for name in ("G_300.pth", "D_200.pth", "G_100.pth"))
    assert ck.newest_intact_set(tmp_path / "empty") is None


def test_resume_after_damage_and_a_killed_save(tmp_path):
    """The one real run: resume passes over a set with a damaged D, says what it loaded, cleans temp files."""
    from vits.train import TrainOptions, train
    from vits.train.setup import build_networks, build_optimizers
    from vits.voice_folder import TRAIN_LOCK

    cfg = tiny_config(n_speakers=1)
    cfg.train.batch_size, cfg.train.log_interval, cfg.train.eval_interval = 1, 1, 1000
    cfg.train.segment_size, cfg.train.keep_ckpts = 1024, 0
    voice = make_voice(tmp_path, n_clips=1, n_val=1, n_speakers=1, cfg=cfg, seconds=(1.0, 1.0))
    models = voice / "models"
    opts = TrainOptions(voice_dir=voice, max_steps=3, use_wavlm=False, device="cpu")
    nets = build_networks(cfg, opts, torch.device("cpu"), lambda _line: None)
    build_optimizers(nets, cfg, torch.device("cpu"))
    for step in (1, 2):  # what Trainer._save writes
        for kind in ("D", "DUR", "G"):
            ck.save_checkpoint(models / f"{kind}_{step}.pth", nets.by_kind[kind], nets.optims[kind], epoch=1,
                               step=step, learning_rate=cfg.train.learning_rate, scheduler=nets.schedulers[kind],
                               extra={"param_names": nets.param_names(kind)})
    _overwrite(models / "D_2.pth", _record_offset(models / "D_2.pth", "data/3") + 8)
    # a kill -9 during a save leaves atomic_path's temp file behind
    (models / ".G_3.pth.k2j4h5g6.tmp").write_bytes(bytes(300_000))
    (models / ".notes.txt.k2j4h5g6.tmp").write_bytes(b"not a checkpoint save: kept")

    lines: list[str] = []
    result = train(opts, log=lines.append)
    text = "\n".join(lines)
    assert f"warning: {models / 'D_2.pth'} is damaged and was not loaded: record data/3" in text, text
    assert "loaded the older set G_1.pth (step 1) instead" in text
    assert "resumed from G_1.pth: step 1" in text
    assert "removed 1 temp file(s) of a checkpoint save that was interrupted (0.3 MB): .G_3.pth.k2j4h5g6.tmp" in text
    assert not (models / ".G_3.pth.k2j4h5g6.tmp").exists() and (models / ".notes.txt.k2j4h5g6.tmp").exists()
    assert result.step == 3 and nonfinite_tensors(ck.read_checkpoint(models / "G_3.pth")) == []
    assert (voice / TRAIN_LOCK).read_text() == ""  # released


# --- item 9: pickles that need code are "not weights-only", not "truncated" --------------------------


class _RunsCommand:
    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def _malicious_corpus(sentinel: Path) -> dict[str, bytes]:
    evil = _RunsCommand(sentinel)
    weights = {"enc_p.emb.weight": torch.ones(3, 2)}
    out = {"raw pickle, protocol 2": pickle.dumps(evil, protocol=2),
           "raw pickle, protocol 4 (STACK_GLOBAL)": pickle.dumps({"model": evil}, protocol=4),
           "text pickle (GLOBAL/REDUCE)": f"cos\nsystem\n(S'touch {sentinel}'\ntR.".encode(),
           "text pickle (INST)": f"(S'touch {sentinel}'\nios\nsystem\n.".encode(),
           "builtins.eval": f"c__builtin__\neval\n(S'open(\"{sentinel}\", \"w\")'\ntR.".encode()}
    buf = io.BytesIO()
    torch.save({"model": weights, "iteration": 1, "hook": evil}, buf)
    out["torch zip with a payload"] = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"model": weights, "hook": evil}, buf, _use_new_zipfile_serialization=False)
    out["legacy torch file with a payload"] = buf.getvalue()
    return out


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_malicious_pickles_are_refused_as_not_weights_only(tmp_path):
    sentinel = tmp_path / "code_ran"
    for name, data in _malicious_corpus(sentinel).items():
        path = tmp_path / "G_5.pth"
        path.write_bytes(data)
        with pytest.raises(KoeError) as err:
            ck.read_checkpoint(path)
        text = str(err.value)
        assert "not a weights-only file" in text and "malicious" in text, (name, text)
        assert "system" in text or "eval" in text, (name, text)
        assert "truncated" not in text and "download" not in text.split("→")[0], (name, text)
        assert "do not convert" in text, (name, text)
        # resume names it the same way instead of passing over it in silence
        with pytest.raises(ck.DamagedCheckpoint, match="not a weights-only file"):
            ck.newest_intact_set(tmp_path, ["G"])
    assert not sentinel.exists()  # nothing in any of them ran


def test_trusted_file_with_python_objects_gets_the_conversion_command(tmp_path):
    path = tmp_path / "G_7.pth"
    torch.save({"model": _state(2), "iteration": np.int64(4), "learning_rate": np.float64(2e-4)}, path)
    with pytest.raises(KoeError) as err:
        ck.read_checkpoint(path)
    text = str(err.value)
    assert "not a weights-only file" in text and "numpy" in text and "malicious" not in text
    assert "convert_trusted_checkpoint" in text and "truncated" not in text
    command = text.split('python -c "', 1)[1].split('"', 1)[0]
    exec(command, {})  # the command exactly as printed
    converted = ck.read_checkpoint(tmp_path / "G_7.safe.pth")
    assert converted["iteration"] == 4 and torch.equal(converted["model"]["layer1.weight"], _state(2)["layer1.weight"])


# --- item 12: disk full during a save -------------------------------------------------------------------


def test_disk_full_while_writing_is_one_line_and_keeps_the_older_checkpoint(tmp_path, monkeypatch):
    import tempfile

    import vits.fileio

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    _save(tmp_path / "G_1.pth", 1)
    real_mkstemp = tempfile.mkstemp

    def mkstemp_on_full_disk(**kwargs):
        # The temp file is a link to /dev/full: every write to it fails with the kernel's ENOSPC.
        fd, name = real_mkstemp(**kwargs)
        os.close(fd)
        os.unlink(name)
        os.symlink("/dev/full", name)
        return os.open(os.devnull, os.O_RDONLY), name

    monkeypatch.setattr(vits.fileio.tempfile, "mkstemp", mkstemp_on_full_disk)
    with pytest.raises(KoeError) as err:
        _save(tmp_path / "G_2.pth", 2, seed=2)
    monkeypatch.undo()
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    assert "the disk filled up while saving G_2.pth" in text
    assert "G_2.pth was not written and nothing was replaced" in text
    assert "the newest complete checkpoint G_1.pth (step 1) and every older file are untouched" in text
    assert "→ free space" in text and "keep_ckpts" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G_1.pth"]  # no temp file, no half G_2
    assert torch.equal(ck.read_checkpoint(tmp_path / "G_1.pth")["model"]["layer0.weight"], _state(0)["layer0.weight"])


def test_not_enough_space_is_refused_before_writing_on_a_tiny_tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (the /dev/full test covers a disk that fills up mid-write)")
    try:
        small = ck.save_checkpoint(mount / "G_1.pth", {"w": torch.zeros(100_000)}, epoch=1, step=1,
                                   learning_rate=2e-4)
        with pytest.raises(KoeError) as err:
            ck.save_checkpoint(mount / "G_2.pth", {"w": torch.zeros(1_000_000)}, epoch=1, step=2, learning_rate=2e-4)
        text = str(err.value)
        assert "not enough disk space to save G_2.pth: it needs about 5.0 MB" in text, text
        assert "G_1.pth (step 1)" in text and "untouched" in text
        assert sorted(p.name for p in mount.iterdir()) == ["G_1.pth"]
        assert ck.read_checkpoint(small)["koe_step"] == 1
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_clean_leftover_saves_removes_only_checkpoint_temp_files(tmp_path):
    for name in (".G_3.pth.abcdefgh.tmp", ".WD_30.pth.a1b2c3d4.tmp", ".report.json.abcdefgh.tmp", "G_3.pth"):
        (tmp_path / name).write_bytes(b"x" * 10)
    removed = ck.clean_leftover_saves(tmp_path)
    assert sorted(p.name for p, _ in removed) == [".G_3.pth.abcdefgh.tmp", ".WD_30.pth.a1b2c3d4.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.json.abcdefgh.tmp", "G_3.pth"]


def test_synthesis_names_a_truncated_newest_g_and_the_older_one_it_uses(tmp_path):
    from vits.synthesis import newest_generator

    models = tmp_path / "models"
    models.mkdir()
    _save(models / "G_10.pth", 10)
    newest = _save(models / "G_20.pth", 20)
    newest.write_bytes(newest.read_bytes()[:1000])  # a kill during the copy: no central directory
    with pytest.warns(ck.CheckpointWarning) as caught:
        chosen = newest_generator(tmp_path)
    assert chosen.name == "G_10.pth"
    message = str(caught[0].message)
    assert "G_20.pth" in message and "G_10.pth" in message
