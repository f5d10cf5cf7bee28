"""vits.voice_folder: the one place that finds a voice's files (config, checkpoints, dictionary)."""

from __future__ import annotations

import pytest

from vits import voice_folder as vf
from vits.errors import KoeError


def test_userdict_is_found_from_a_folder_its_onnx_export_and_a_g_file(tmp_path):
    voice = tmp_path / "alice"
    (voice / "models").mkdir(parents=True)
    (voice / "onnx").mkdir()
    g = voice / "models" / "G_100.pth"
    g.write_bytes(b"x")
    assert vf.userdict_for(voice) is None and vf.userdict_for(g) is None
    (voice / vf.USERDICT).write_text("word\tpron\n", encoding="utf-8")
    for path in (voice, voice / "onnx", g):
        assert vf.userdict_for(path) == voice / vf.USERDICT, path


def test_generator_files_newest_first_with_release_files(tmp_path):
    models = tmp_path / "v" / "models"
    models.mkdir(parents=True)
    for name in ("G_0.pth", "G_500.pth", "G_500_fp16.pth", "G_1500.safetensors", "D_1500.pth", "notes.txt"):
        (models / name).write_bytes(b"x")
    assert [p.name for _, p in vf.generator_files(tmp_path / "v")] == [
        "G_1500.safetensors", "G_500.pth", "G_500_fp16.pth", "G_0.pth"]
    assert vf.checkpoint_name("DUR_20.pth") == ("DUR", 20) and vf.checkpoint_name("G_20_fp16.pth") is None
    assert sorted(vf.list_checkpoints(models)["G"]) == [0, 500]


def test_config_for_checkpoint_prefers_beside_then_the_voice_config(tmp_path):
    voice = tmp_path / "v"
    (voice / "models").mkdir(parents=True)
    g = voice / "models" / "G_1.pth"
    g.write_bytes(b"x")
    with pytest.raises(KoeError, match="no config.json") as err:
        vf.config_for_checkpoint(g)
    assert str(g) in str(err.value)
    vf.config_path(voice).parent.mkdir()
    vf.config_path(voice).write_text("{}")
    assert vf.config_for_checkpoint(g) == vf.config_path(voice)
    (voice / "models" / "config.json").write_text("{}")
    assert vf.config_for_checkpoint(g) == voice / "models" / "config.json"
