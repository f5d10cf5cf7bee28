"""BERT as ONNX (export_onnx --bert [--int8]) and text -> audio in a process where torch cannot be imported."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vits.errors import KoeError
from vits.text.bert_onnx import OnnxBertFeatures
from vits.voice_folder import ONNX, ONNX_BERT, ONNX_BERT_METADATA

REPO = Path(__file__).resolve().parent.parent
TEXTS = {"ZH": "你好，世界！今天天气很好。", "JP": "こんにちは、世界。今日は…いい天気です！", "EN": "Hello world, it's a wonderful day!"}
# Blocks torch and transformers as if they were not installed (and says so if anything asks for them).
NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None
    sys.meta_path.insert(0, _NoTorch())
""")


@pytest.fixture(scope="module")
def small_berts(golden_dir, tmp_path_factory):
    """BertFeatures over the shared tiny random models (ZH/JP/EN, 32 features) and their ONNX export (+ int8)."""
    from vits.onnx_bert_export import export_berts
    from vits.text.bert import BertFeatures
    from vits.text.testing import shared_tiny_models

    torch_bert = BertFeatures(shared_tiny_models(str(golden_dir / "tokenizers"), hidden=32, layers=4))
    root = tmp_path_factory.mktemp("onnx-bert")
    _meta_path, meta = export_berts(torch_bert, ("ZH", "JP", "EN"), root, int8=True)
    return torch_bert, root, meta


def _cleaned(language):
    import vits.text as text_mod

    return text_mod.clean_text(TEXTS[language], language)


@pytest.mark.parametrize("language", ["ZH", "JP", "EN"])
def test_onnx_features_equal_bertfeatures(small_berts, language):
    torch_bert, root, _ = small_berts
    onnx_bert = OnnxBertFeatures(root)
    segments = _cleaned(language)
    for seg in segments:
        assert onnx_bert.token_ids(seg) == torch_bert.token_ids(seg)
        assert onnx_bert.aligned_word2ph(seg) == torch_bert.aligned_word2ph(seg)
    want = [t.numpy() for t in torch_bert.features_batch(segments)]
    got = onnx_bert.features_batch(segments)
    for w, g in zip(want, got):
        assert g.shape == w.shape and g.dtype == np.float32
        assert np.abs(g - w).max() < 1e-4
    # one at a time gives the batched numbers; the style vector is BertFeatures' (spec §7.7)
    assert np.abs(onnx_bert.features(segments[0]) - got[0]).max() < 1e-5
    style = "今天很开心！" if language == "ZH" else ("とても嬉しい！" if language == "JP" else "I am so happy!")
    assert np.abs(onnx_bert.style_vector(style, language) - torch_bert.style_vector(style, language)).max() < 1e-4
    # the int8 graphs: close to fp32, and their measured error is in koe_bert.json
    q = OnnxBertFeatures(root, int8=True).features_batch(segments)
    cos = [float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(q, got)]
    assert min(cos) > 0.9


def test_export_metadata_records_the_int8_error(small_berts):
    _, root, meta = small_berts
    on_disk = json.loads((root / ONNX_BERT_METADATA).read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(meta))
    for lang in ("ZH", "JP", "EN"):
        entry = on_disk["languages"][lang]
        assert (root / lang / entry["graphs"]["fp32"]).is_file() and (root / lang / entry["graphs"]["int8"]).is_file()
        assert entry["fp32_vs_torch"]["max_abs"] < 1e-4
        err = entry["int8_vs_fp32"]
        assert 0 < err["max_abs"] and 0.9 < err["min_cosine"] <= err["mean_cosine"] <= 1.0 + 1e-6
    assert on_disk["languages"]["JP"]["mode"] == "character" and on_disk["languages"]["ZH"]["mode"] == "tokenizer"


def test_japanese_character_tokenizer_matches_transformers(small_berts):
    """The JP tokenizer (BertJapaneseTokenizer, rebuilt from `tokenizers` parts) gives transformers' ids."""
    torch_bert, root, _ = small_berts
    onnx_bert = OnnxBertFeatures(root)
    chars = "".join(chr(c) for c in range(0x3000, 0x3100)) + "…ＡＢａｂ１２３!?.,ÉéÅ①㍿ｶﾞ々〆ヵ漢字鬱龍" + "".join(
        chr(c) for c in range(0x21, 0x7F)) + "".join(chr(c) for c in range(0xFF01, 0xFF5F))
    want = torch_bert.token_ids(_seg("JP", chars))
    assert onnx_bert.token_ids(_seg("JP", chars)) == want


def _seg(language, text):
    from vits.text.common import Cleaned

    return Cleaned(language, text, [], [], [])


def test_missing_or_partial_exports_are_clear_errors(small_berts, tmp_path):
    _, root, _ = small_berts
    with pytest.raises(KoeError, match="koe_bert.json is missing") as err:
        OnnxBertFeatures(tmp_path)
    assert "--bert" in err.value.fix
    partial = tmp_path / "fp32only"
    shutil.copytree(root, partial)
    meta = json.loads((partial / ONNX_BERT_METADATA).read_text(encoding="utf-8"))
    del meta["languages"]["EN"]["graphs"]["int8"]
    (partial / ONNX_BERT_METADATA).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(KoeError, match="no int8 graphs for EN"):
        OnnxBertFeatures(partial, int8=True)
    with pytest.raises(KoeError, match="no exported KO BERT model"):
        OnnxBertFeatures(partial).features(_seg("KO", "안녕"))


@pytest.fixture(scope="module")
def onnx_voice(golden_dir, tmp_path_factory):
    """The golden small model exported with a 1024-feature tiny ZH BERT through the CLI (--bert --int8)."""
    from pipeline.export_onnx import main as export_main
    from vits.text.testing import build_tiny_models

    root = tmp_path_factory.mktemp("onnx-bert-voice")
    dirs = build_tiny_models(root / "bert", golden_dir / "tokenizers", hidden=1024, layers=3, languages=("ZH",))
    voice = root / "small"
    (voice / "models").mkdir(parents=True)
    (voice / "configs").mkdir()
    shutil.copy(golden_dir / "model-small" / "G_1000.pth", voice / "models" / "G_1000.pth")
    shutil.copy(golden_dir / "model-small" / "config.json", voice / "configs" / "config.json")
    settings = root / "config.yml"
    settings.write_text(f"data_root: {root}\nbert:\n  ZH: {dirs['ZH']}\n", encoding="utf-8")
    out = io.StringIO()
    mp = pytest.MonkeyPatch()
    mp.setenv("KOE_CONFIG", str(settings))
    try:
        with contextlib.redirect_stdout(out):
            assert export_main([str(voice), "--bert", "--int8", "--bert-languages", "ZH", "--no-verify"]) == 0
    finally:
        mp.undo()
    return voice, dirs, out.getvalue()


def test_cli_prints_the_int8_error_and_refuses_int8_alone(onnx_voice, capsys):
    from pipeline.export_onnx import main as export_main

    voice, _, stdout = onnx_voice
    assert "ZH BERT: fp32 vs torch max abs" in stdout and "int8 vs fp32 max abs" in stdout
    assert "mean cosine" in stdout
    assert (voice / ONNX / ONNX_BERT / ONNX_BERT_METADATA).is_file()
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(voice), "--int8"])
    assert exit_info.value.code == 2 and "use it with --bert" in capsys.readouterr().err


def test_text_to_audio_without_torch_equals_torch_bert(onnx_voice, tmp_path):
    """OnnxVoice.load(folder) reads text -> audio in a process where torch and transformers cannot be imported,
    and gives the audio of the same ONNX synthesizer fed torch BertFeatures (within 1e-3)."""
    from vits.onnx_runtime import OnnxVoice
    from vits.text.bert import BertFeatures

    voice, dirs, _ = onnx_voice
    folder = voice / ONNX
    text = "你好，世界。今天天气很好！"
    script = NO_TORCH + textwrap.dedent(f"""
        import numpy as np
        from vits.onnx_runtime import OnnxVoice
        for kind, int8 in (("fp32", False), ("int8", True)):
            v = OnnxVoice.load({str(folder)!r}, bert_int8=int8)
            audio = v.synthesize({text!r}, "ZH", seed=7, style_text="今天很开心", style_weight=0.5)
            np.save({str(tmp_path)!r} + f"/{{kind}}.npy", audio)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
        print("LOADED", loaded)
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "LOADED []" in run.stdout
    want = OnnxVoice.load(folder).synthesize(text, "ZH", seed=7, bert=BertFeatures(dirs), style_text="今天很开心",
                                             style_weight=0.5)
    fp32 = np.load(tmp_path / "fp32.npy")
    assert fp32.shape == want.shape and len(want) > 4410
    assert np.abs(fp32 - want).max() < 1e-3
    int8 = np.load(tmp_path / "int8.npy")
    assert int8.shape[0] > 0 and np.isfinite(int8).all()


def test_synthesize_cli_onnx_engine_runs_without_torch(onnx_voice, tmp_path):
    """python -m pipeline.synthesize <voice> --engine onnx [--bert-precision int8]: text -> WAV with torch blocked,
    the same audio as OnnxVoice (16-bit rounding); int8 names its BERT in the last progress line."""
    import soundfile as sf

    from vits.onnx_runtime import OnnxVoice

    voice, _, _ = onnx_voice
    settings = voice.parent / "config.yml"
    text = "你好，世界。今天天气很好！"
    outputs = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / f"{precision}.wav"
        script = NO_TORCH + textwrap.dedent(f"""
            from pipeline.synthesize import main
            code = main([{str(voice)!r}, "--engine", "onnx", "--bert-precision", {precision!r}, "--text", {text!r},
                         "--language", "ZH", "--seed", "7", "--float", "--out", {str(out)!r}])
            print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")))
            sys.exit(code)
        """)
        env = {**os.environ, "KOE_CONFIG": str(settings)}
        run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                             env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "LOADED []" in run.stdout and f"ONNX BERT ({precision})" in run.stdout
        outputs[precision], _rate = sf.read(out, dtype="float32")
    want = OnnxVoice.load(voice / ONNX).synthesize(text, "ZH", seed=7)
    assert outputs["fp32"].shape == want.shape and np.abs(outputs["fp32"] - want).max() < 1e-6
    assert outputs["int8"].shape[0] > 0 and not np.array_equal(outputs["int8"][:len(want)], want)


def test_synthesize_cli_refuses_int8_on_the_torch_engine(onnx_voice, capsys):
    from pipeline.synthesize import main

    voice, _, _ = onnx_voice
    assert main([str(voice), "--bert-precision", "int8", "--text", "你好。", "--out", "x.wav"]) == 1
    assert "--engine onnx" in capsys.readouterr().err


def test_voice_without_bert_graphs_says_how_to_export(onnx_voice, tmp_path):
    from vits.onnx_runtime import OnnxVoice

    voice, _, _ = onnx_voice
    bare = tmp_path / "onnx"
    shutil.copytree(voice / ONNX, bare, ignore=shutil.ignore_patterns(ONNX_BERT))
    with pytest.raises(KoeError, match="needs BERT features") as err:
        OnnxVoice.load(bare).synthesize("你好。", "ZH")
    assert "--bert" in err.value.fix
    with pytest.raises(KoeError, match="no BERT graphs"):
        OnnxVoice.load(bare, bert_int8=True)


def test_registry_reads_an_onnx_voice_with_its_own_bert(onnx_voice):
    """The API/studio registry gives an ONNX export its own BERT graphs even when the server has no BERT models."""
    from server.registry import ModelRegistry
    from settings import load_settings

    voice, _, _ = onnx_voice
    registry = ModelRegistry(load_settings(voice.parent / "config.yml"), "cpu", bert=None)
    entry = registry.load_now("small", backend="onnx")
    assert entry.backend == "onnx" and entry.name == "small@onnx"
    assert isinstance(registry.bert_for(entry), OnnxBertFeatures)
    assert registry.bert_engine(entry) == "ONNX BERT (fp32)"
    audio = entry.voice.synthesize("你好。", "ZH", seed=1, bert=registry.bert_for(entry))
    assert len(audio) > 0 and np.isfinite(audio).all()
    torch_entry = registry.load_now("small", backend="torch")
    assert registry.bert_for(torch_entry) is None and registry.bert_engine(torch_entry) == "torch BERT"


def test_registry_opens_the_int8_bert_on_first_request_only(onnx_voice):
    """`bert_for(entry, "int8")` opens the export's int8 graphs once (also for two first requests at once) and keeps
    them with the voice; a voice only read at int8 never opens its fp32 graphs, so it holds one copy."""
    from concurrent.futures import ThreadPoolExecutor

    from server.errors import ApiError
    from server.registry import ModelRegistry
    from settings import load_settings

    voice, _, _ = onnx_voice
    registry = ModelRegistry(load_settings(voice.parent / "config.yml"), "cpu", bert=None)
    entry = registry.load_now("small", backend="onnx")
    assert entry.bert_int8 is None and entry.info()["bert_precisions"] == ["fp32", "int8"]
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: registry.bert_for(entry, "int8"), range(2))
    assert first is second is entry.bert_int8 and first.kind == "int8"
    assert registry.bert_engine(entry, "int8") == "ONNX BERT (int8)"
    audio = entry.voice.synthesize("你好。", "ZH", seed=1, bert=first)
    assert len(audio) > 0 and np.isfinite(audio).all()
    assert list(first._loaded) == ["ZH"] and entry.voice.bert._loaded == {}  # fp32 graphs never opened
    with pytest.raises(ApiError, match="unknown BERT precision 'fp16'"):
        registry.bert_for(entry, "fp16")
    torch_entry = registry.load_now("small", backend="torch")
    with pytest.raises(ApiError, match="runs on torch") as err:
        registry.bert_for(torch_entry, "int8")
    assert "--bert --int8" in err.value.detail and "small@onnx" in err.value.detail
