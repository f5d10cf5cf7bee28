"""ONNX export of the golden small model and torch-free onnxruntime synthesis that matches torch."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.export_onnx import main as export_main
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.onnx_export import METADATA_NAME, attach_onnx_decoder, export_decoder, load_generator
from vits.onnx_runtime import OnnxDecoder, OnnxSynthesizer, generate_path
from vits.synthesis import find_voice_files

INPUTS = ("x", "tone", "language", "bert", "ja_bert", "en_bert")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def golden(golden_dir):
    torch.set_num_threads(2)
    return torch.load(golden_dir / "model-small" / "vectors.pt", weights_only=True)


@pytest.fixture(scope="module")
def small_model(golden_dir):
    cfg = VoiceConfig.load(golden_dir / "model-small" / "config.json")
    return load_generator(golden_dir / "model-small" / "G_1000.pth", cfg), cfg


@pytest.fixture(scope="module")
def export_run(golden_dir, tmp_path_factory):
    """The golden small model as a voice folder, exported through the CLI with its self-check; (voice, stdout)."""
    voice = tmp_path_factory.mktemp("onnx") / "small"
    (voice / "models").mkdir(parents=True)
    (voice / "configs").mkdir()
    shutil.copy(golden_dir / "model-small" / "G_1000.pth", voice / "models" / "G_1000.pth")
    shutil.copy(golden_dir / "model-small" / "config.json", voice / "configs" / "config.json")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert export_main([str(voice), "--threads", "2"]) == 0
    return voice, out.getvalue()


@pytest.fixture(scope="module")
def exported(export_run):
    return export_run[0]


@pytest.fixture(scope="module")
def synth(exported):
    return OnnxSynthesizer(exported / "onnx")


def test_export_writes_graphs_and_metadata(exported, capsys):
    out = exported / "onnx"
    meta = json.loads((out / METADATA_NAME).read_text())
    assert sorted(meta["graphs"]) == sorted(["emb", "enc_p", "sdp", "dp", "flow", "dec"])
    assert all((out / f).is_file() for f in meta["graphs"].values())
    assert meta["LanguageMap"] == {"ZH": [0, 0], "JP": [1, 6], "EN": [2, 8]}
    assert len(meta["symbols"]) == 112 and meta["symbols"][0] == "_"
    assert meta["spk2id"] == {"spk0": 0, "spk1": 1, "spk2": 2} and meta["speakers"] == ["spk0", "spk1", "spk2"]
    assert meta["sampling_rate"] == 44100 and meta["add_blank"] is True and meta["hop_length"] == 512
    assert meta["bert_models"]["ZH"] == "chinese-roberta-wwm-ext-large" and meta["source"]["step"] == 1000
    # Re-running with the same checkpoint is a no-op.
    capsys.readouterr()
    assert export_main([str(exported)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_onnx_runtime_matches_golden_without_torch(exported, golden, tmp_path):
    """Inference in a subprocess where `import torch` fails: equal to the reference audio and paths."""
    np.savez(tmp_path / "in.npz", **{k: golden[k][0].numpy() for k in INPUTS}, sid=golden["sid"].numpy())
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any torch import now raises ImportError
        sys.path.insert(0, {str(REPO)!r})
        import numpy as np
        from vits.onnx_runtime import OnnxSynthesizer
        d = np.load({str(tmp_path / "in.npz")!r})
        synth = OnnxSynthesizer({str(exported / "onnx")!r})
        out = {{}}
        for name, ratio, length in (("sdp0", 0, 1), ("sdp05", 0.5, 1), ("sdp1", 1, 1), ("sdp0_len13", 0, 1.3)):
            audio, attn = synth.infer(d["x"], d["tone"], d["language"], d["bert"], d["ja_bert"], d["en_bert"],
                                      speaker=int(d["sid"][0]), sdp_ratio=ratio, noise_scale=0.0,
                                      noise_scale_w=0.0, length_scale=length, return_attn=True)
            out[name], out[name + "_attn"] = audio, attn
        np.savez({str(tmp_path / "out.npz")!r}, **out)
        print("torch" in sys.modules and sys.modules["torch"] is not None)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    out = np.load(tmp_path / "out.npz")
    for name in ("sdp0", "sdp05", "sdp1", "sdp0_len13"):
        ref = golden[f"infer_{name}_audio"][0, 0].numpy()
        assert out[name].shape == ref.shape, name
        assert np.abs(out[name] - ref).max() < 1e-3, name
    for name in ("sdp0", "sdp05", "sdp1"):
        assert np.array_equal(out[name + "_attn"], golden[f"infer_{name}_attn"][0, 0].numpy())


def test_onnx_matches_torch_with_noise(synth, small_model, golden, monkeypatch):
    """Fed the noise torch drew, the ONNX path equals SynthesizerTrn.infer, also for a shorter input."""
    model, _ = small_model
    n = 11
    ins = {k: golden[k][:, :n] if golden[k].dim() == 2 else golden[k][..., :n] for k in INPUTS}
    drawn = []
    randn, randn_like = torch.randn, torch.randn_like
    # Record the two draws infer makes (SDP noise, then the prior noise) to hand them to onnxruntime.
    monkeypatch.setattr(torch, "randn", lambda *a, **k: drawn.append(randn(*a, **k)) or drawn[-1])
    monkeypatch.setattr(torch, "randn_like", lambda *a, **k: drawn.append(randn_like(*a, **k)) or drawn[-1])
    with torch.no_grad():
        ref = model.infer(ins["x"], torch.tensor([n]), torch.tensor([1]), ins["tone"], ins["language"],
                          ins["bert"], ins["ja_bert"], ins["en_bert"], noise_scale=0.667, noise_scale_w=0.8,
                          sdp_ratio=0.6)[0][0, 0].numpy()
    monkeypatch.undo()
    assert [tuple(d.shape)[:2] for d in drawn] == [(1, 2), (1, 64)]
    got = synth.infer(*(ins[k][0] for k in INPUTS), speaker="spk1", sdp_ratio=0.6, noise_scale=0.667,
                      noise_scale_w=0.8, sdp_noise=drawn[0][0].numpy(), prior_noise=drawn[1][0].numpy())
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-3
    # Seeded draws are reproducible.
    a = synth.infer(*(ins[k][0] for k in INPUTS), speaker=0, seed=3)
    b = synth.infer(*(ins[k][0] for k in INPUTS), speaker=0, seed=3)
    assert np.array_equal(a, b)


def test_onnx_decoder_drop_in(small_model, golden, tmp_path):
    model, _ = small_model
    path = export_decoder(model, tmp_path / "dec.onnx")
    dec = OnnxDecoder(path)
    g = model.emb_g(golden["sid"]).unsqueeze(-1).detach()
    out = dec(golden["dec_in"], g)
    assert isinstance(out, torch.Tensor) and torch.allclose(out, golden["dec_out"], atol=1e-3)
    assert isinstance(dec(golden["dec_in"].numpy(), g.numpy()), np.ndarray)
    # Swapped into the model, infer() decodes with onnxruntime and still matches the reference.
    torch_dec = model.dec
    try:
        attach_onnx_decoder(model, path)
        assert model.dec is not torch_dec
        with torch.no_grad():
            o = model.infer(golden["x"], golden["x_lengths"], golden["sid"], golden["tone"], golden["language"],
                            golden["bert"], golden["ja_bert"], golden["en_bert"], noise_scale=0, noise_scale_w=0,
                            sdp_ratio=0.5)[0]
    finally:
        model.dec = torch_dec
    assert (o - golden["infer_sdp05_audio"]).abs().max() < 1e-3


def test_export_checks_onnxruntime_against_torch(export_run):
    found = re.search(r"onnxruntime vs torch: max abs diff ([0-9.e+-]+)", export_run[1])
    assert found, export_run[1]
    assert float(found.group(1)) < 1e-3


def test_export_fails_when_the_graphs_differ_from_torch(exported, tmp_path, monkeypatch, capsys):
    """The self-check is a gate: graphs that compute something else stop the export with exit 1."""
    import onnx
    from onnx import numpy_helper

    import vits.onnx_export as onnx_export

    def export_broken_graphs(model, cfg, out_dir, **kwargs):
        """The graphs exported for this very checkpoint (module fixture), with the decoder's weights changed."""
        shutil.copytree(exported / "onnx", out_dir, dirs_exist_ok=True)
        dec = onnx.load(str(out_dir / "dec.onnx"))
        weight = max(dec.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
        onnx.save(dec, str(out_dir / "dec.onnx"))
        return out_dir / METADATA_NAME

    monkeypatch.setattr(onnx_export, "export_onnx", export_broken_graphs)
    out = tmp_path / "broken"
    capsys.readouterr()
    assert export_main([str(exported), "--out", str(out), "--force"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(out) in err and "differ from torch" in err and "limit 0.001" in err


def test_generate_path_numpy():
    path = generate_path(np.array([2.0, 0.0, 3.0], np.float32), 5)
    assert path.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]]


def test_clear_errors(tmp_path, synth, capsys):
    with pytest.raises(KoeError, match="export the voice first"):
        OnnxSynthesizer(tmp_path)
    with pytest.raises(KoeError, match="spk0, spk1, spk2"):
        synth.infer([1, 2, 3], [0, 0, 0], [0, 0, 0], speaker="nobody")
    with pytest.raises(KoeError, match="expected \\(1024, 3\\)"):
        synth.infer([1, 2, 3], [0, 0, 0], [0, 0, 0], np.zeros((1024, 4), np.float32))
    (tmp_path / "empty").mkdir()
    assert export_main([str(tmp_path / "empty")]) == 1  # a failure (2 is for usage errors)
    assert "no generator checkpoint" in capsys.readouterr().err


def test_find_voice_files(exported, tmp_path):
    g, cfg = find_voice_files(exported)
    assert g == exported / "models" / "G_1000.pth" and cfg == exported / "configs" / "config.json"
    assert find_voice_files(exported, "G_1000.pth")[0] == g
    assert find_voice_files(g) == (g, cfg)  # a G file finds ../configs/config.json
    with pytest.raises(KoeError, match="checkpoint file not found"):
        find_voice_files(exported, "G_5.pth")
    lone = tmp_path / "G_1.pth"
    lone.write_bytes(b"x")
    with pytest.raises(KoeError, match="no config.json"):
        find_voice_files(lone)


def _graph_outputs(folder: Path, name: str, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_2d_export_equals_1d_export(exported, small_model, golden, tmp_path):
    """The decoder written with 2-D convolutions computes what the 1-D graph of earlier exports does."""
    import onnx

    from vits.onnx_export import export_onnx

    model, cfg = small_model
    folders = {"1d": tmp_path / "1d", "2d": exported / "onnx"}  # the CLI's export is the 2-D one
    export_onnx(model, cfg, folders["1d"], graphs=("dec",), conv_layout="1d")
    conv_ranks = {layout: {len(init.dims) for init in onnx.load(str(folders[layout] / "dec.onnx")).graph.initializer
                           if len(init.dims) >= 3} for layout in folders}
    assert conv_ranks == {"1d": {3}, "2d": {4}}  # the conv weights really are 1-D resp. 2-D kernels
    feed = {"z": golden["dec_in"].numpy(), "g": model.emb_g(golden["sid"]).unsqueeze(-1).detach().numpy()}
    one, two = (_graph_outputs(folders[layout], "dec", feed) for layout in ("1d", "2d"))
    assert one.shape == two.shape == tuple(golden["dec_out"].shape) and np.abs(one - two).max() < 1e-5
    assert np.abs(two - golden["dec_out"].numpy()).max() < 1e-3
    with pytest.raises(ValueError, match="conv_layout"):
        export_onnx(model, cfg, tmp_path / "x", graphs=("dec",), conv_layout="3d")


def test_onnx_equals_the_torch_voice_path(synth, small_model, monkeypatch):
    """Voice (fused decoder, default knobs) and the ONNX path agree within 1e-3 when fed the same noise.

    The prior noise is torch's randn_like(m_p): m_p is a transposed matmul, so the draw fills [1, T_y, C] memory
    order with the strided kernel. Its values are not those of randn(1, T_y, C), which is why a benchmark that
    redraws it that way sees ~3e-3 of "ONNX error" that is only other noise.
    """
    from vits.synthesis import Voice

    model, cfg = small_model
    voice = Voice(model, cfg, "cpu", tune_malloc=False)
    gen = torch.Generator().manual_seed(11)
    ids = torch.randint(1, 100, (23,), generator=gen).tolist()
    tones, langs = [0] * 23, [0] * 23
    berts = [torch.randn(1024, 23, generator=gen) for _ in range(3)]
    drawn = []
    randn, randn_like = torch.randn, torch.randn_like
    monkeypatch.setattr(torch, "randn", lambda *a, **k: drawn.append(randn(*a, **k)) or drawn[-1])
    monkeypatch.setattr(torch, "randn_like", lambda *a, **k: drawn.append(randn_like(*a, **k)) or drawn[-1])
    ref = voice.synthesize_phones(ids, tones, langs, *berts, speaker=1, blanked=True, seed=5)
    monkeypatch.undo()
    sdp_noise, prior = drawn[0][0].numpy(), drawn[1][0].numpy()
    got = synth.infer(ids, tones, langs, *(b.numpy() for b in berts), speaker=1, sdp_noise=sdp_noise,
                      prior_noise=prior)
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-3
    # The same draw taken as randn(1, T_y, C) is other noise: not the audio torch made.
    torch.manual_seed(5)
    torch.randn(1, 2, 23)
    redrawn = torch.randn(1, prior.shape[1], prior.shape[0]).transpose(1, 2)[0].numpy()
    assert not np.allclose(redrawn, prior)


def test_optimised_graphs_are_cached_beside_the_export(exported, tmp_path):
    """The first load writes each graph's optimised copy to ort_cache/; a changed graph gets a fresh one."""
    import os

    from vits.onnx_runtime import CACHE_DIR, GRAPHS

    folder = tmp_path / "onnx"
    shutil.copytree(exported / "onnx", folder, ignore=shutil.ignore_patterns(CACHE_DIR))
    first = OnnxSynthesizer(folder)
    cache = folder / CACHE_DIR
    copies = sorted(p.name for p in cache.glob("*.onnx"))
    assert [c.split(".")[0] for c in copies] == sorted(GRAPHS)
    ins = np.arange(1, 10), np.zeros(9, np.int64), np.zeros(9, np.int64)
    want = first.infer(*ins, speaker=0, seed=1)
    dec = folder / "dec.onnx"
    os.utime(dec, ns=(dec.stat().st_atime_ns, dec.stat().st_mtime_ns + 10**9))  # an export rewrote it
    again = OnnxSynthesizer(folder)
    dec_copies = list(cache.glob("dec.*.onnx"))
    assert len(dec_copies) == 1 and dec_copies[0].name not in copies  # the stale copy was replaced
    assert np.array_equal(again.infer(*ins, speaker=0, seed=1), want)


def test_a_1d_export_is_exported_again(exported, tmp_path):
    """An export of the same checkpoint in the older 1-D layout is not up to date (but still loads)."""
    from vits.onnx_export import is_up_to_date

    folder = tmp_path / "old"
    shutil.copytree(exported / "onnx", folder)
    meta = json.loads((folder / METADATA_NAME).read_text())
    sha = meta["source"]["sha256"]
    assert meta["conv_layout"] == "2d" and is_up_to_date(folder, sha)
    del meta["conv_layout"]  # as exports before the 2-D graphs
    (folder / METADATA_NAME).write_text(json.dumps(meta))
    assert not is_up_to_date(folder, sha)
    assert OnnxSynthesizer(folder).infer([1, 2, 3], [0, 0, 0], [0, 0, 0], seed=0).ndim == 1
