"""The shared basics: symbols, config defaults, progress lines, settings."""

import json

import pytest

from settings import load_settings
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.progress import ProgressMeter, format_progress, parse_progress
from vits.symbols import SYMBOL_TO_ID, SYMBOLS, cleaned_text_to_sequence, intersperse


def test_symbol_table_matches_spec():
    assert len(SYMBOLS) == 112
    assert SYMBOLS[0] == "_" and SYMBOLS[1] == "AA" and SYMBOLS[7] == "V"
    assert SYMBOLS[101] == "zh" and SYMBOLS[105] == "…" and SYMBOLS[110:] == ["SP", "UNK"]
    assert SYMBOL_TO_ID["ir"] == 52


def test_sequence_offsets_and_blanks():
    ids, tones, langs = cleaned_text_to_sequence(["_", "k", "a", "_"], [0, 1, 1, 0], "JP")
    assert tones == [6, 7, 7, 6] and langs == [1, 1, 1, 1]
    assert intersperse([5, 6]) == [0, 5, 0, 6, 0]
    with pytest.raises(KoeError, match="unknown phone 'xx'"):
        cleaned_text_to_sequence(["xx"], [0], "ZH")


def test_config_defaults_and_roundtrip(tmp_path, golden_dir):
    cfg = VoiceConfig.load(golden_dir / "model-small" / "config.json")
    assert cfg.model.gin_channels == 32 and cfg.data.n_speakers == 3 and cfg.spec_channels == 1025
    partial = tmp_path / "c.json"
    partial.write_text(json.dumps({"data": {"n_speakers": 2}, "custom": 1}))
    cfg = VoiceConfig.load(partial)
    assert cfg.model.gin_channels == 512 and cfg.train.segment_size == 16384 and cfg.segment_frames == 32
    cfg.save(tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text())["custom"] == 1


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {\n "batch_size": }')
    with pytest.raises(KoeError, match=r"bad\.json:2"):
        VoiceConfig.load(bad)
    with pytest.raises(KoeError, match="not found"):
        VoiceConfig.load(tmp_path / "missing.json")


def test_progress_line_roundtrip():
    line = format_progress("train", step=3, total=10, losses={"g/total": 1.5, "x": float("nan")})
    data = parse_progress(line)
    assert data["step"] == 3 and data["losses"]["x"] is None
    assert parse_progress("just a log line") is None
    t = iter([0.0, 1.0, 2.0])
    meter = ProgressMeter("slice", total=4, clock=lambda: next(t))
    meter.update(1)
    assert parse_progress(meter.update(2))["eta_s"] == 2.0


def test_settings_resolve_paths(tmp_path):
    (tmp_path / "config.yml").write_text("data_root: mydata\nhub:\n  endpoint: https://mirror.example\n")
    s = load_settings(tmp_path / "config.yml")
    assert s.data_root == (tmp_path / "mydata").resolve() and s.hub_endpoint == "https://mirror.example"
    assert s.voice_dir("alice") == s.data_root / "alice"
    for bad in ["../x", "a/b", "", ".hidden"]:
        with pytest.raises(KoeError):
            s.voice_dir(bad)


def test_hub_mirror_order_flag_then_config_then_environment(tmp_path, monkeypatch):
    """The one rule the download command, the feature stage and --help state."""
    monkeypatch.setenv("HF_ENDPOINT", "https://env.example")
    (tmp_path / "config.yml").write_text("hub:\n  endpoint: https://config.example\n")
    s = load_settings(tmp_path / "config.yml")
    assert s.use_hub_endpoint("https://flag.example") == "https://flag.example"
    assert s.use_hub_endpoint() == "https://config.example"
    import os

    assert os.environ["HF_ENDPOINT"] == "https://config.example"
    (tmp_path / "config.yml").write_text("hub:\n  endpoint: ''\n")
    monkeypatch.setenv("HF_ENDPOINT", "https://env.example")
    assert load_settings(tmp_path / "config.yml").use_hub_endpoint() == "https://env.example"
    monkeypatch.delenv("HF_ENDPOINT")
    assert load_settings(tmp_path / "config.yml").use_hub_endpoint() == ""


def test_atomic_path_replaces_only_on_success(tmp_path):
    from vits.fileio import atomic_path, write_text_atomic

    target = tmp_path / "sub" / "file.txt"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n" and sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]
    with atomic_path(target, durable=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == "0o644"
