"""The Bert-VITS2 2.2 emotion path inside the text encoder (2.2 spec §3.2, §4.2-4.5).

A CLAP embedding `emo` [B, 512] goes through `in_feature_net` (512 → 1028 → 512, one gated-MLP block),
a 32-head vector quantiser (`emo_vq`, vector-quantize-pytorch's `VectorQuantize`, 64 codes per head)
and `out_feature_net` (512 → hidden); the result is added to every token before the √hidden scale.

The quantiser is the maintained `vector-quantize-pytorch` release with the arguments 2.2 used, plus three
settings that make its training mode behave like the 1.12.0 release 2.2 ran (2.2 spec §10): no rotation
trick (the straight-through estimator), dead codes all refilled at once (sampling with replacement when a
batch has fewer items than a head has dead codes), and a fresh codebook's counts at 0. The codebook flag
`initted` is stored as 2.2 files hold it, a float32 [1] tensor, so checkpoints keep the exact 2.2 layout.
Eval mode is a plain nearest-code look-up; `quantize_eval` writes it out in a few tensor ops (the ONNX
graph uses it) and gives the same codes and values as the library.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from vits.errors import KoeError

EMO_DIM = 512  # CLAP projection size
FEATURE_DIM = 1028  # in_feature_net's inner width (2.2 spec §3.2)
VQ_HEADS = 32
VQ_CODES = 64
VQ_CODE_DIM = 32


class GatedMLP(nn.Module):
    """c_proj(silu(c_fc1 · x) ⊙ c_fc2 · x), no biases (2.2 spec §4.2, the Block's `mlp`)."""

    def __init__(self, width: int, inner: int = EMO_DIM):
        super().__init__()
        self.c_fc1 = nn.Linear(width, inner, bias=False)
        self.c_fc2 = nn.Linear(width, inner, bias=False)
        self.c_proj = nn.Linear(inner, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.silu(self.c_fc1(x)) * self.c_fc2(x))


class Block(nn.Module):
    """Pre-norm residual block x + mlp(norm(x)) with torch's LayerNorm (`weight`/`bias` keys)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = GatedMLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


def in_feature_net() -> nn.Sequential:
    """The 512 → 512 feature net: Linear, GELU, LayerNorm, Block, Linear (keys `0`, `2`, `3.*`, `4`)."""
    return nn.Sequential(
        nn.Linear(EMO_DIM, FEATURE_DIM, bias=False),
        nn.GELU(),
        nn.LayerNorm(FEATURE_DIM),
        Block(FEATURE_DIM),
        nn.Linear(FEATURE_DIM, EMO_DIM, bias=False),
    )


def emotion_quantizer() -> nn.Module:
    """`VectorQuantize` with the 2.2 arguments (2.2 spec §4.3), trained the way 1.12.0 trains it.

    Raises KoeError when vector-quantize-pytorch is not installed.
    """
    try:
        from vector_quantize_pytorch import VectorQuantize
        from vector_quantize_pytorch import vector_quantize_pytorch as vq_module
    except ImportError as exc:
        raise KoeError(f"Bert-VITS2 2.2 voices need vector-quantize-pytorch ({exc})",
                       fix="install the requirements: .venv/bin/pip install -r requirements.txt") from None
    vq = VectorQuantize(dim=EMO_DIM, codebook_size=VQ_CODES, codebook_dim=VQ_CODE_DIM, heads=VQ_HEADS,
                        separate_codebook_per_head=True, commitment_weight=0.1, decay=0.85, kmeans_iters=20,
                        stochastic_sample_codes=True, threshold_ema_dead_code=2, rotation_trick=False)
    codebook = vq._codebook
    # 2.2 files store the flag as float32 [1] (newer releases: a 0-d bool); `if initted` works on both.
    codebook.register_buffer("initted", torch.ones(1))
    with torch.no_grad():
        codebook.cluster_size.zero_()  # 1.12.0 starts counts at 0 (newer releases at 1)
    # Newer releases refill at most as many dead codes per step as the batch has items; they recognise
    # their own sampler by identity, so a wrapper of the same function restores 1.12.0's refill-all policy.
    if codebook.replace_sample_fn is vq_module.batched_sample_vectors:
        codebook.replace_sample_fn = functools.partial(vq_module.batched_sample_vectors)
    return vq


def quantize_eval(vq: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode quantiser in plain tensor ops: x [B, 1, 512] -> (quantised [B, 1, 512], codes [B, 1, 32]).

    Nearest code per head by squared Euclidean distance (ties -> the lowest index), the library's math in
    eval mode (2.2 spec §4.3).
    """
    embed = vq._codebook.embed  # [heads, codes, code_dim]
    p = vq.project_in(x)  # [B, 1, heads*code_dim], channel = head*code_dim + d
    b, n = p.shape[0], p.shape[1]
    p = p.reshape(b * n, VQ_HEADS, VQ_CODE_DIM).transpose(0, 1)  # [heads, B*n, code_dim]
    dist = (p * p).sum(-1, keepdim=True) - 2 * torch.matmul(p, embed.transpose(1, 2)) \
        + (embed * embed).sum(-1).unsqueeze(1)  # [heads, B*n, codes]
    codes = dist.argmin(-1)  # [heads, B*n]
    chosen = torch.gather(embed, 1, codes.unsqueeze(-1).expand(-1, -1, VQ_CODE_DIM))  # [heads, B*n, code_dim]
    q = chosen.transpose(0, 1).reshape(b, n, VQ_HEADS * VQ_CODE_DIM)
    return vq.project_out(q), codes.transpose(0, 1).reshape(b, n, VQ_HEADS)


def emotion_embedding(enc_p: nn.Module, emo: torch.Tensor, *, plain_eval: bool = False):
    """(e_h [B, 1, hidden], loss_commit 0-d, codes [B, 1, 32], feature [B, 512], quantised [B, 1, 512]).

    `enc_p` is a 2.2 text encoder (has in_feature_net, emo_vq, out_feature_net). `plain_eval` uses
    `quantize_eval` instead of the library (for ONNX tracing; eval mode only).
    """
    feature = enc_p.in_feature_net(emo)
    if plain_eval:
        quantized, codes = quantize_eval(enc_p.emo_vq, feature.unsqueeze(1))
        loss = torch.zeros((), device=emo.device, dtype=quantized.dtype)
    else:
        quantized, codes, loss = enc_p.emo_vq(feature.unsqueeze(1))
        loss = torch.mean(loss)
    return enc_p.out_feature_net(quantized), loss, codes, feature, quantized


def check_emotion(emo, batch: int, where: str) -> torch.Tensor:
    """An emotion vector as float32 [batch, 512]: accepts [512], [512, 1], [1, 512] or [batch, 512].

    Takes a torch tensor or a numpy array. Raises KoeError for other shapes or non-finite values.
    """
    import numpy as np

    if isinstance(emo, np.ndarray):
        emo = torch.from_numpy(np.ascontiguousarray(emo))
    if not isinstance(emo, torch.Tensor) or not emo.is_floating_point():
        got = f"{emo.dtype}" if isinstance(emo, torch.Tensor) else type(emo).__name__
        raise KoeError(f"the emotion vector must be a float array of {EMO_DIM} values, got {got}", where=where,
                       fix="pass a CLAP embedding (vits.clap: a text prompt such as 'Happy', or a reference clip)")
    shape = tuple(emo.shape)
    if shape in ((EMO_DIM,), (EMO_DIM, 1)):
        emo = emo.reshape(1, EMO_DIM).expand(batch, EMO_DIM)
    elif shape == (1, EMO_DIM):
        emo = emo.expand(batch, EMO_DIM)
    elif shape != (batch, EMO_DIM):
        raise KoeError(f"the emotion vector has shape {list(shape)}, expected [{EMO_DIM}] or [{batch}, {EMO_DIM}]",
                       where=where, fix=f"pass one {EMO_DIM}-d CLAP embedding per utterance")
    emo = emo.float()
    if not bool(torch.isfinite(emo).all()):
        raise KoeError("the emotion vector holds NaN or infinite values", where=where,
                       fix="compute the CLAP embedding again")
    return emo
