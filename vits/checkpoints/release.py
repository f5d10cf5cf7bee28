"""Release files: a generator without training-only parts (enc_q, optimizer), optionally float16 or
safetensors, and the parameter count shown in model cards."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from vits.checkpoints.format import (
    _KIND_FIX,
    KIND_DESCRIPTIONS,
    _state_of,
    _strip_module,
    _torch_save_atomic,
    checkpoint_epoch_step,
    identify_checkpoint,
    read_checkpoint,
    write_checked,
)
from vits.errors import KoeError


def export_release(g_path: str | os.PathLike, out_path: str | os.PathLike, fp16: bool = False,
                   safetensors: bool = False) -> Path:
    """Write a release generator: no ``enc_q`` (training-only), no optimizer; optionally float16.

    The ``.pth`` output is the Bert-VITS2 release format (``iteration`` 0, ``optimizer`` None,
    ``learning_rate`` 1e-4) which Bert-VITS2 and Koe Studio both load for synthesis. With
    ``safetensors=True`` the file is a safetensors file instead (suffix forced to ``.safetensors``),
    whose metadata notes the format (``koe_format``: "bert-vits2-2.3-G-release") and source step;
    Koe Studio reads it, Bert-VITS2 itself does not. Returns the written path.
    Raises KoeError when `g_path` is not a 2.3 or 2.2 generator, or the disk is full (nothing is replaced).
    """
    g_path, out_path = Path(g_path), Path(out_path)
    ckpt = read_checkpoint(g_path)
    kind = identify_checkpoint(ckpt)
    if kind not in ("G", "G-2.2"):  # 2.2: the quantiser buffers are kept (cast too with fp16, as 2.2 does)
        raise KoeError(f"this file is {KIND_DESCRIPTIONS[kind]}, not a generator", where=str(g_path),
                       fix=_KIND_FIX["G"])
    state = {}
    for key, value in ckpt["model"].items():
        key = _strip_module(key)
        if "enc_q" in key:
            continue
        if fp16 and value.is_floating_point():
            value = value.half()
        state[key] = value.contiguous()
    try:
        step = checkpoint_epoch_step(ckpt, g_path)[1]
    except KoeError:
        step = 0
    if safetensors:
        from safetensors.torch import save

        out_path = out_path.with_suffix(".safetensors")
        version = "2.2" if kind == "G-2.2" else "2.3"
        meta = {"format": "pt", "koe_format": f"bert-vits2-{version}-G-release", "iteration": "0",
                "learning_rate": "0.0001", "koe_step": str(step), "source": g_path.name,
                "dtype": "float16" if fp16 else "float32"}
        blob = save(state, metadata=meta)
        write_checked(out_path, lambda tmp: tmp.write_bytes(blob), len(blob))
        return out_path
    _torch_save_atomic({"model": state, "iteration": 0, "optimizer": None, "learning_rate": 0.0001,
                        "koe_step": step, "koe_release": True}, out_path)
    return out_path


def parameter_count(state: Mapping) -> int:
    """Total number of elements in a state_dict's tensors."""
    return sum(math.prod(v.shape) for v in _state_of(state).values() if isinstance(v, torch.Tensor))
