"""Vocal separation (prep/separate.py): MDX-Net chunking with overlap + crossfade, and the missing-model error.

An identity ONNX graph of the MDX-Net IO ([batch, 4, dim_f, dim_t] in and out, dim_f = all bins) must give
the input back without seams, whatever the block sizes the audio arrives in."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from prep.separate import MdxParams, Separator, missing_model_error
from vits.errors import KoeError

TINY = MdxParams(n_fft=256, hop=64, dim_f=129, dim_t=32, sample_rate=44100, compensate=1.0)


def _identity_model(path, p: MdxParams):
    shape = ["batch", 4, p.dim_f, p.dim_t]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "mdx_identity",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize("blocks", [[5000], [1, 999, 3000, 17, 983], [700] * 10])
def test_identity_model_gives_the_input_back_without_seams(tmp_path, blocks):
    sep = Separator(_identity_model(tmp_path / "id.onnx", TINY), TINY)
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((2, sum(blocks)))).astype(np.float32)
    edges = np.cumsum([0, *blocks])
    out = np.concatenate(list(sep.stream(x[:, a:b] for a, b in zip(edges[:-1], edges[1:]))), axis=1)
    assert out.shape == x.shape
    assert np.max(np.abs(out - x)) < 1e-4


def test_mono_stays_mono_and_keeps_its_length(tmp_path):
    sep = Separator(_identity_model(tmp_path / "id.onnx", TINY), TINY)
    x = np.sin(np.arange(3333) / 7.0).astype(np.float32)
    out = sep.separate(x, 44100)
    assert out.shape == x.shape and np.max(np.abs(out - x)) < 1e-4


def test_missing_model_names_the_file_and_the_download_command(tmp_path):
    with pytest.raises(KoeError) as exc:
        Separator(tmp_path / "separator" / "UVR-MDX-NET-Voc_FT.onnx")
    text = str(exc.value)
    assert "UVR-MDX-NET-Voc_FT.onnx" in text and "python -m pipeline.download separator" in text
    assert str(missing_model_error(tmp_path / "x.onnx")).startswith(str(tmp_path / "x.onnx"))
