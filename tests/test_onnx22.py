"""ONNX export of a Bert-VITS2 2.2 (CLAP) voice: emo is an enc_p input; onnxruntime matches the golden audio."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from pipeline.export_onnx import main as export_main
from vits.errors import KoeError
from vits.onnx_export import METADATA_NAME
from vits.onnx_runtime import OnnxSynthesizer

CASES = {"sdp0": 0.0, "sdp05": 0.5, "sdp1": 1.0}


@pytest.fixture(scope="module")
def golden(golden_dir):
    torch.set_num_threads(2)
    return torch.load(golden_dir / "model-22" / "vectors.pt", weights_only=True)


@pytest.fixture(scope="module")
def exported(golden_dir, tmp_path_factory):
    voice = tmp_path_factory.mktemp("onnx22") / "v22"
    (voice / "models").mkdir(parents=True)
    (voice / "configs").mkdir()
    shutil.copy(golden_dir / "model-22" / "G_1000.pth", voice / "models" / "G_1000.pth")
    shutil.copy(golden_dir / "model-22" / "config.json", voice / "configs" / "config.json")
    # With the onnxruntime-vs-torch check (verify_export with an emotion vector): exit 1 above 1e-3.
    assert export_main([str(voice), "--threads", "2"]) == 0
    return voice


@pytest.fixture(scope="module")
def synth(exported):
    return OnnxSynthesizer(exported / "onnx")


def test_metadata_and_emo_input(exported):
    out = exported / "onnx"
    meta = json.loads((out / METADATA_NAME).read_text())
    assert meta["version"] == "2.2" and meta["Clap"] is True
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(out / "enc_p.onnx").graph.input}
    assert inputs["emo"] == [1, 512]


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnxruntime_reproduces_golden_audio(synth, golden, case):
    assert synth.needs_emotion
    g = golden
    t_x = g["x"].shape[1]
    audio, attn = synth.infer(g["x"][0], g["tone"][0], g["language"][0], g["bert"][0], g["ja_bert"][0],
                              g["en_bert"][0], speaker=int(g["sid"][0]), sdp_ratio=CASES[case], noise_scale=0.0,
                              noise_scale_w=0.0, sdp_noise=np.zeros((2, t_x), np.float32), return_attn=True,
                              emo=g["emo"][0].numpy())
    ref = g[f"infer_{case}_audio"][0, 0].numpy()
    assert audio.shape == ref.shape and np.abs(audio - ref).max() < 1e-3
    assert np.array_equal(attn, g[f"infer_{case}_attn"][0, 0].numpy())


def test_second_emotion_and_missing_emotion(synth, golden):
    g = golden
    args = (g["x"][0], g["tone"][0], g["language"][0], g["bert"][0], g["ja_bert"][0], g["en_bert"][0])
    audio = synth.infer(*args, speaker=2, sdp_ratio=0.0, noise_scale=0.0, noise_scale_w=0.0, emo=g["emo2"][0])
    ref = g["infer_sdp0_emo2_audio"][0, 0].numpy()
    assert audio.shape == ref.shape and np.abs(audio - ref).max() < 1e-3
    with pytest.raises(KoeError, match=r"2\.2 \(CLAP\) export: it needs an emotion vector"):
        synth.infer(*args, speaker=2)
