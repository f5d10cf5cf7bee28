"""The Export tab in a real browser: an ONNX export runs as a job, and the page follows it to the end —
"running" goes away, the result is shown and the exported files are listed, also after a page reload; with
BERT and int8 ticked the job exports the BERT graphs too and the page shows their measured int8 error.
And the command the tab builds for each choice of the BERT / int8 controls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers_studio import Studio, studio_page
from test_browser_e2e import CHROMIUM, open_tab, shot, wait_job, wait_text
from test_serve import TINY_MODEL

from studio.tabs.export import bert_summary, onnx_command
from vits.checkpoints import save_checkpoint
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.lists import CleanedLine
from vits.models import build_generator
from vits.voice_folder import (
    ONNX,
    ONNX_BERT,
    ONNX_BERT_METADATA,
    ONNX_METADATA,
    TRAIN_LIST,
    config_path,
    models_dir,
)


def tiny_voice(root: Path) -> Path:
    """Voice `tiny` under root/Data: a tiny config, a G_10 and a one-line ZH train.list (its BERT language)."""
    voice = root / "Data" / "tiny"
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": 1, "spk2id": {"alice": 0}}, "model": TINY_MODEL})
    cfg.save(config_path(voice))
    torch.manual_seed(0)
    save_checkpoint(models_dir(voice) / "G_10.pth", build_generator(cfg), epoch=1, step=10, learning_rate=2e-4)
    line = CleanedLine("wavs/a.wav", "alice", "ZH", "你好", ["_", "n", "i", "_"], [0, 3, 3, 0], [1, 2, 1])
    (voice / TRAIN_LIST).parent.mkdir(parents=True, exist_ok=True)
    (voice / TRAIN_LIST).write_text(line.line() + "\n", encoding="utf-8")
    return voice


def test_the_bert_and_int8_controls_change_the_command(tmp_path):
    g = str(tmp_path / "models" / "G_10.pth")
    plain = onnx_command(tmp_path, g, bert=False, int8=False)
    assert plain.argv[-3:] == [str(tmp_path), "--checkpoint", g] and plain.expected == ["onnx/*.onnx"]
    with_bert = onnx_command(tmp_path, g, bert=True, int8=False)
    assert with_bert.argv == [*plain.argv, "--bert"]
    assert with_bert.expected == ["onnx/*.onnx", f"{ONNX}/{ONNX_BERT}/{ONNX_BERT_METADATA}"]
    assert onnx_command(tmp_path, g, bert=True, int8=True).argv == [*plain.argv, "--bert", "--int8"]
    with pytest.raises(KoeError, match="int8 quantises the BERT graphs") as err:
        onnx_command(tmp_path, g, bert=False, int8=True)
    assert "tick BERT" in err.value.fix
    assert bert_summary(tmp_path) == ""  # no BERT export on disk: nothing to show


@pytest.mark.parametrize(("bert", "int8"), [(False, False), (True, False), (True, True)])
def test_the_command_is_one_the_cli_accepts(tmp_path, bert, int8):
    """The studio's argv parses with pipeline.export_onnx's own parser, with the flags the controls asked for."""
    from pipeline.export_onnx import build_parser

    argv = onnx_command(tmp_path, None, bert=bert, int8=int8).argv
    args = build_parser().parse_args(argv[argv.index("pipeline.export_onnx") + 1:])
    assert (args.voice, args.bert, args.int8, args.checkpoint) == (str(tmp_path), bert, int8, None)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_onnx_export_finishes_on_the_page_and_lists_the_files(tmp_path, golden_dir):
    from vits.text.testing import build_tiny_models

    voice = tiny_voice(tmp_path)
    bert_dirs = build_tiny_models(tmp_path / "bert", golden_dir / "tokenizers", hidden=32, layers=3,
                                  languages=("ZH",))
    config = tmp_path / "config.yml"
    config.write_text(f"device: cpu\nbert:\n  ZH: {bert_dirs['ZH']}\n", encoding="utf-8")
    studio = Studio(tmp_path, config, env={"OMP_NUM_THREADS": "2"})
    bert_meta = voice / ONNX / ONNX_BERT / ONNX_BERT_METADATA
    try:
        studio.wait_ready()
        with studio_page(studio, 1200) as page:
            open_tab(page, "Export")
            page.wait_for_function(
                "() => document.querySelector('#export-checkpoint input').value.includes('G_10')")
            int8 = page.locator("#export-onnx-int8 input")
            assert int8.is_disabled() and not page.locator("#export-onnx-bert input").is_checked()
            page.locator("#export-onnx").click()
            page.locator("#export-onnx-status").get_by_text("export_onnx: running").wait_for()
            text = wait_job(page, "export-onnx-status", "export_onnx", 240)
            assert "running" not in text and "Result: wrote" in text, text
            listed = page.locator(f"#export-onnx-files td.filename[aria-label='{ONNX_METADATA}']")
            listed.wait_for()
            shown = sorted(page.locator("#export-onnx-files td.filename").evaluate_all(
                "cells => cells.map(c => c.getAttribute('aria-label'))"))
            written = sorted(p.name for p in (voice / ONNX).iterdir() if p.is_file())  # not ort_cache/
            assert "dec.onnx" in written and shown == written, (written, shown)
            assert not (voice / ONNX / ONNX_BERT).exists()  # BERT unticked: no BERT graphs
            shot(page, "export-onnx-finished")
            # A reloaded page shows the finished job and its files again, not a stale "running".
            page.reload()
            open_tab(page, "Export")
            listed.wait_for()
            assert "export_onnx: finished" in page.locator("#export-onnx-status").inner_text()

            # BERT + int8: the same job now writes the BERT graphs and their int8 copy; the page shows the error.
            page.locator("#export-onnx-bert input").check()
            page.wait_for_function("() => !document.querySelector('#export-onnx-int8 input').disabled")
            int8.check()
            page.locator("#export-onnx").click()
            page.locator("#export-onnx-status").get_by_text("export_onnx: running").wait_for()
            wait_job(page, "export-onnx-status", "export_onnx", 240)
            entry = json.loads(bert_meta.read_text(encoding="utf-8"))["languages"]["ZH"]
            assert set(entry["graphs"]) == {"fp32", "int8"}
            err = entry["int8_vs_fp32"]
            info = wait_text(page, "export-onnx-bert-info", "int8 vs fp32", timeout_s=30)
            assert f"{err['max_abs']:.3g} ({err['max_abs_relative']:.2%} of the feature scale)" in info, info
            assert f"{err['mean_cosine']:.5f}" in info and f"{entry['fp32_vs_torch']['max_abs']:.2e}" in info
            shot(page, "export-onnx-bert-int8")
            # Unticking BERT unticks and disables int8 (int8 alone would quantise nothing).
            page.locator("#export-onnx-bert input").uncheck()
            page.wait_for_function("() => document.querySelector('#export-onnx-int8 input').disabled")
            assert not int8.is_checked()
    finally:
        studio.stop()
