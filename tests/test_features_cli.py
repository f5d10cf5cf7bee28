"""`python -m pipeline.features Data/<voice>`: writes valid .bert.pt files, skips them next time,
lists broken lines by file:line and exits non-zero for them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pipeline.features import main
from vits.lists import bert_path
from vits.progress import parse_progress
from vits.text import clean_text

HIDDEN = 32


@pytest.fixture(scope="module")
def dirs(golden_dir):
    from vits.text.testing import shared_tiny_models

    torch.set_num_threads(2)
    return shared_tiny_models(str(golden_dir / "tokenizers"), hidden=HIDDEN, layers=4)


def _voice(tmp_path, extra_lines=()):
    voice = tmp_path / "Data" / "demo"
    (voice / "wavs" / "spk").mkdir(parents=True)
    (voice / "filelists").mkdir()
    lines = []
    for i, (text, lang) in enumerate([("大家好，我是派蒙。", "ZH"), ("こんにちは、世界。", "JP"),
                                      ("Hello, unbelievable world!", "EN"), ("今天天气不错。", "ZH")]):
        (seg,) = clean_text(text, lang)
        wav = f"wavs/spk/clip_{i:04d}.wav"
        (voice / wav).write_bytes(b"")
        lines.append(seg.to_line(wav, "spk"))
    (voice / "filelists" / "train.list").write_text("\n".join(lines[:3] + list(extra_lines)) + "\n", encoding="utf-8")
    (voice / "filelists" / "val.list").write_text(lines[3] + "\n", encoding="utf-8")
    return voice


def _args(voice, dirs):
    return [str(voice), "--bert-zh", str(dirs["ZH"]), "--bert-jp", str(dirs["JP"]), "--bert-en", str(dirs["EN"]),
            "--device", "cpu", "--batch-size", "2"]


def test_writes_features_then_skips_them(tmp_path, dirs, capsys):
    voice = _voice(tmp_path)
    assert main(_args(voice, dirs)) == 0
    out = capsys.readouterr().out
    progress = [parse_progress(line) for line in out.splitlines() if parse_progress(line)]
    assert progress and progress[-1]["step"] == 4 and all(p["stage"] == "features" for p in progress)
    files = sorted((voice / "wavs" / "spk").glob("*.bert.pt"))
    assert [f.name for f in files] == [f"clip_{i:04d}.bert.pt" for i in range(4)]
    for line in (voice / "filelists" / "train.list").read_text(encoding="utf-8").splitlines():
        wav, _, _, _, phones, _, _ = line.split("|")
        feats = torch.load(bert_path(voice / wav), weights_only=True)
        assert feats.shape == (HIDDEN, 2 * len(phones.split()) + 1) and feats.dtype == torch.float32
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert main(_args(voice, dirs)) == 0
    assert "4 already valid" in capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    # a truncated file is recomputed
    files[0].write_bytes(b"junk")
    assert main(_args(voice, dirs)) == 0
    assert "1 written, 3 already valid" in capsys.readouterr().out


def test_broken_lines_are_listed_not_fatal(tmp_path, dirs, capsys):
    bad_word2ph = "wavs/spk/bad.wav|spk|ZH|你好|_ n i h ao _|0 2 2 3 3 0|1 4 1"
    (tmp_path / "Data" / "demo").mkdir(parents=True, exist_ok=True)
    voice = _voice(tmp_path, extra_lines=[bad_word2ph, "only|three|fields"])
    (voice / "wavs" / "spk" / "bad.wav").write_bytes(b"")
    assert main(_args(voice, dirs)) == 1
    out = capsys.readouterr().out
    train = voice / "filelists" / "train.list"
    assert f"{train}:4:" in out and "tokenizer gives 4 tokens" in out
    assert f"{train}:5: expected 7 '|'-separated fields" in out
    assert len(list((voice / "wavs" / "spk").glob("*.bert.pt"))) == 4  # the good lines are done


def test_missing_model_folder_stops_with_the_fix(tmp_path, dirs, capsys):
    voice = _voice(tmp_path)
    args = _args(voice, dirs)
    args[args.index("--bert-zh") + 1] = str(tmp_path / "missing")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "python -m pipeline.download bert" in err


def test_help():
    result = subprocess.run([sys.executable, "-m", "pipeline.features", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "--num-gpus" in result.stdout
