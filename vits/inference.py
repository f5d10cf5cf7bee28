"""The synthesis math of a Bert-VITS2 2.3 (or 2.2) generator, written once (spec §6, 2.2 spec §6.1).

speaker embedding -> text encoder -> log-durations (SDP/DP mix) -> hard alignment path -> expanded prior
-> z_p = m_p + noise -> reverse flow -> decoder. `SynthesizerTrn.infer` and `vits.synthesis.Voice` both
call `infer`; the torch-free ONNX runtime (vits/onnx_runtime.py) mirrors it step by step in numpy.

Random draws, in this order (seeded output and the golden vectors depend on it): randn(B, 2, T_x) on the
CPU default generator (the SDP's noise, drawn even when its share is 0), then randn_like(m_p).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vits import commons

# A decoder replacement (e.g. an onnxruntime session): (z [B, inter, T_y], g [B, gin, 1]) -> audio [B, 1, L].
Decoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def log_durations(model, h, x_mask, g, *, sdp_ratio: float, noise_scale_w: float, skip_unused: bool = False):
    """logw [B,1,T_x] = SDP(h) · sdp_ratio + DP(h) · (1 - sdp_ratio).

    With `skip_unused`, a predictor whose share is 0 is not run (same output, less work): the DP at
    sdp_ratio 1, the SDP at sdp_ratio 0 — but its noise is still drawn so later draws stay identical.
    """
    if skip_unused and sdp_ratio == 0:
        torch.randn(h.size(0), 2, h.size(2))  # the SDP's noise draw (see the module docstring)
        logw_sdp = 0.0
    else:
        logw_sdp = model.sdp(h, x_mask, g=g, reverse=True, noise_scale=noise_scale_w)
    logw_dp = 0.0 if skip_unused and sdp_ratio == 1 else model.dp(h, x_mask, g=g)
    return logw_sdp * sdp_ratio + logw_dp * (1 - sdp_ratio)


def alignment(logw, x_mask, length_scale: float):
    """Durations -> (attn [B,1,T_y,T_x] hard path, y_mask [B,1,T_y]); at least one output frame."""
    w_ceil = torch.ceil(torch.exp(logw) * x_mask * length_scale)
    y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()
    y_mask = commons.sequence_mask(y_lengths, None).unsqueeze(1).to(x_mask.dtype)
    attn = commons.generate_path(w_ceil, x_mask.unsqueeze(2) * y_mask.unsqueeze(-1))
    return attn, y_mask


def expand(attn, stats):
    """Repeat each token's prior statistics [B,C,T_x] along the path -> [B,C,T_y]."""
    return torch.matmul(attn.squeeze(1), stats.transpose(1, 2)).transpose(1, 2)


def infer(model, x, x_lengths, sid, tone, language, bert, ja_bert, en_bert, *, noise_scale: float,
          length_scale: float, noise_scale_w: float, sdp_ratio: float, max_len: int | None = None,
          skip_unused: bool = False, decoder: Decoder | None = None, emo=None, ko_bert=None):
    """Run a SynthesizerTrn (or one without enc_q) from text inputs to audio.

    Takes the model, its text inputs (as `SynthesizerTrn.infer`, already checked), the sampling knobs,
    `max_len` (decode at most this many frames), `skip_unused` (see `log_durations`), an optional
    `decoder` used instead of `model.dec` and, for a 2.2 generator, the emotion vector `emo` [B, 512]
    (the quantiser's commitment loss, 0 in eval mode, is dropped); for a Korean-enabled generator the
    Korean BERT features `ko_bert` [B, 1024, T_x] (None = zeros).
    Returns (o [B,1,hop·T_y], attn [B,1,T_y,T_x], y_mask [B,1,T_y], (z, z_p, m_p, logs_p)).
    """
    g = model.emb_g(sid).unsqueeze(-1)
    if getattr(model.enc_p, "emotion", False):
        h, m_p, logs_p, x_mask, _ = model.enc_p(x, x_lengths, tone, language, bert, ja_bert, en_bert, g=g, emo=emo)
    else:
        extra = {"ko_bert": ko_bert} if getattr(model.enc_p, "korean", False) else {}
        h, m_p, logs_p, x_mask = model.enc_p(x, x_lengths, tone, language, bert, ja_bert, en_bert, g=g, **extra)
    logw = log_durations(model, h, x_mask, g, sdp_ratio=sdp_ratio, noise_scale_w=noise_scale_w,
                         skip_unused=skip_unused)
    attn, y_mask = alignment(logw, x_mask, length_scale)
    m_p, logs_p = expand(attn, m_p), expand(attn, logs_p)
    z_p = m_p + torch.randn_like(m_p) * torch.exp(logs_p) * noise_scale
    z = model.flow(z_p, y_mask, g=g, reverse=True)
    z_in = (z * y_mask)[:, :, :max_len]
    o = decoder(z_in, g) if decoder is not None else model.dec(z_in, g=g)
    return o, attn, y_mask, (z, z_p, m_p, logs_p)
