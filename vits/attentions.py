"""Relative-position transformer used by the text encoder and the transformer flow (spec §4.3-4.5)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from vits.modules import LayerNorm


def _band_to_square(band: torch.Tensor, window: int) -> torch.Tensor:
    """[..., T, 2w+1] relative scores -> [..., T, T] with out[i, j] = band[i, j - i + w] (0 outside the band).

    Pad-and-reshape: the flattened rows are re-read with a stride one shorter, which shifts row i by i.
    """
    *lead, t, width = band.shape
    flat = F.pad(band, (0, t)).reshape(*lead, t * (t + width))  # rows of length t + 2w + 1
    flat = F.pad(flat, (0, width))  # room for the last shifted row
    return flat[..., window : window + t * (t + width - 1)].reshape(*lead, t, t + width - 1)[..., :t]


def _square_to_band(square: torch.Tensor, window: int) -> torch.Tensor:
    """[..., T, T] -> [..., T, 2w+1] with out[i, k] = square[i, i + k - w] (0 where out of range)."""
    *lead, t, _ = square.shape
    width = 2 * window + 1
    padded = F.pad(square, (window, window))  # [.., T, T + 2w]
    flat = F.pad(padded.reshape(*lead, t * (t + width - 1)), (0, t))
    return flat.reshape(*lead, t, t + width)[..., :width]


class MultiHeadAttention(nn.Module):
    """Multi-head attention with windowed relative keys/values shared over heads (spec §4.3).

    Args:
        channels: input channels; out_channels: output channels of conv_o.
        n_heads: heads (channels must divide evenly); p_dropout: dropout on attention weights.
        window_size: relative window (4 in Bert-VITS2).
    """

    def __init__(self, channels: int, out_channels: int, n_heads: int, p_dropout: float = 0.0,
                 window_size: int = 4):
        super().__init__()
        if channels % n_heads != 0:
            raise ValueError(f"channels {channels} not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(p_dropout)
        rel_std = self.k_channels**-0.5
        self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * rel_std)
        self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * rel_std)
        nn.init.xavier_uniform_(self.conv_q.weight)
        nn.init.xavier_uniform_(self.conv_k.weight)
        nn.init.xavier_uniform_(self.conv_v.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (queries) and c (keys/values) [B, C, T]; attn_mask [B, 1, T, T] (0 = blocked). Returns [B, C_out, T]."""
        q, k, v = self.conv_q(x), self.conv_k(c), self.conv_v(c)
        b, d, t = k.shape
        t_q = q.shape[2]
        q = q.view(b, self.n_heads, self.k_channels, t_q).transpose(2, 3) / math.sqrt(self.k_channels)
        k = k.view(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        v = v.view(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        scores = torch.matmul(q, k.transpose(-2, -1))
        # Only the 2w+1 in-window relative logits are non-zero: compute those, then place them on the band.
        rel_logits = torch.matmul(q, self.emb_rel_k[0].transpose(0, 1))  # [B, H, T, 2w+1]
        scores = scores + _band_to_square(rel_logits, self.window_size)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask == 0, -1e4)
        p_attn = self.drop(F.softmax(scores, dim=-1))
        out = torch.matmul(p_attn, v)
        out = out + torch.matmul(_square_to_band(p_attn, self.window_size), self.emb_rel_v[0])
        out = out.transpose(2, 3).reshape(b, d, t_q)
        return self.conv_o(out)


class FFN(nn.Module):
    """Two masked convs with ReLU and 'same' padding (left (k-1)//2, right k//2), spec §4.4."""

    def __init__(self, in_channels: int, out_channels: int, filter_channels: int, kernel_size: int,
                 p_dropout: float = 0.0):
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, kernel_size)
        self.drop = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        """x [B, C, T], x_mask [B, 1, T] -> [B, C_out, T]."""
        x = self.conv_1(F.pad(x * x_mask, self.pad))
        x = self.drop(torch.relu(x))
        x = self.conv_2(F.pad(x * x_mask, self.pad))
        return x * x_mask


class Encoder(nn.Module):
    """Post-LN relative-position transformer (attentions.Encoder, spec §4.5).

    With gin_channels > 0 a speaker vector is projected by `spk_emb_linear` and added once, before
    layer `cond_layer_idx` (2).
    """

    def __init__(self, hidden_channels: int, filter_channels: int, n_heads: int, n_layers: int,
                 kernel_size: int = 1, p_dropout: float = 0.0, window_size: int = 4, gin_channels: int = 0,
                 cond_layer_idx: int = 2):
        super().__init__()
        self.n_layers = n_layers
        self.cond_layer_idx = n_layers
        if gin_channels != 0:
            if cond_layer_idx >= n_layers:
                raise ValueError(f"a speaker-conditioned encoder needs more than {cond_layer_idx} layers, "
                                 f"got n_layers={n_layers}")
            self.spk_emb_linear = nn.Linear(gin_channels, hidden_channels)
            self.cond_layer_idx = cond_layer_idx
        self.drop = nn.Dropout(p_dropout)
        self.attn_layers = nn.ModuleList()
        self.norm_layers_1 = nn.ModuleList()
        self.ffn_layers = nn.ModuleList()
        self.norm_layers_2 = nn.ModuleList()
        for _ in range(n_layers):
            self.attn_layers.append(MultiHeadAttention(hidden_channels, hidden_channels, n_heads,
                                                       p_dropout=p_dropout, window_size=window_size))
            self.norm_layers_1.append(LayerNorm(hidden_channels))
            self.ffn_layers.append(FFN(hidden_channels, hidden_channels, filter_channels, kernel_size,
                                       p_dropout=p_dropout))
            self.norm_layers_2.append(LayerNorm(hidden_channels))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, T], x_mask [B, 1, T], g [B, gin, 1] or None -> [B, C, T] (masked)."""
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)
        x = x * x_mask
        for i in range(self.n_layers):
            if i == self.cond_layer_idx and g is not None:
                x = (x + self.spk_emb_linear(g.transpose(1, 2)).transpose(1, 2)) * x_mask
            y = self.drop(self.attn_layers[i](x, x, attn_mask))
            x = self.norm_layers_1[i](x + y)
            y = self.drop(self.ffn_layers[i](x, x_mask))
            x = self.norm_layers_2[i](x + y)
        return x * x_mask
