"""The CPU decoder of `vits.synthesis.Voice`: HiFi-GAN with oneDNN's fused convolutions, same math.

The decoder is ~80% of CPU synthesis time, and a quarter of that went to elementwise passes over its
large activations (leaky ReLU, the residual adds) that each read and write the whole tensor again.
`FusedDecoder` runs every convolution as a channels-last 2-D oneDNN convolution (as
`vits.synthesis.ChannelsLastDecoder` does) and lets oneDNN apply the leaky ReLU after a resblock's first
conv and the residual add after its second inside the convolution (post-ops), computes each stage's
input activation once for its parallel resblocks, and does the remaining elementwise steps in place.
The values are those of `Generator.forward` (same operations, same order; differences ~1e-7 from the
1-D kernels). `fused_decoder` returns None where the fused kernels are missing (torch without oneDNN).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LRELU_SLOPE = 0.1  # vits.models.LRELU_SLOPE; the final activation uses torch's default 0.01, as upstream


class _Conv:
    """A folded Conv1d as the arguments of a channels-last 2-D (fused) convolution over [B, C, 1, T]."""

    def __init__(self, conv: nn.Conv1d):
        if hasattr(conv, "weight_g"):
            raise ValueError("fold weight norm first (vits.models.prepare_for_inference)")
        self.weight = conv.weight.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last)
        self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self.padding, self.stride = [0, conv.padding[0]], [1, conv.stride[0]]
        self.dilation, self.groups = [1, conv.dilation[0]], conv.groups

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def plus(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """conv(x) + other in one pass."""
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups, "add",
            None, None, [], None)


class _ConvTranspose:
    def __init__(self, conv: nn.ConvTranspose1d):
        if hasattr(conv, "weight_g"):
            raise ValueError("fold weight norm first (vits.models.prepare_for_inference)")
        self.weight = conv.weight.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last)
        self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self.stride, self.padding = (1, conv.stride[0]), (0, conv.padding[0])
        self.output_padding, self.groups, self.dilation = (0, conv.output_padding[0]), conv.groups, (1, conv.dilation[0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)


class FusedDecoder(nn.Module):
    """`Generator.forward` (vits.models) with fused oneDNN convolutions; inference only (CPU, no autograd).

    Takes a weight-norm-folded Generator (its weights are copied). Called as
    `decoder(z [B, C, T], g [B, gin, 1] or None) -> audio [B, 1, L]`. Raises ValueError for an unfolded one.
    """

    def __init__(self, generator: nn.Module):
        super().__init__()
        from vits.models import ResBlock1

        self.num_kernels = generator.num_kernels
        self.pre = _Conv(generator.conv_pre)
        self.cond = _Conv(generator.cond) if hasattr(generator, "cond") else None
        self.ups = [_ConvTranspose(up) for up in generator.ups]
        # Per resblock, its (first, second) conv pairs; ResBlock2's single convs are pairs without a first.
        self.blocks = []
        for block in generator.resblocks:
            if isinstance(block, ResBlock1):
                self.blocks.append([(_Conv(c1), _Conv(c2)) for c1, c2 in zip(block.convs1, block.convs2)])
            else:
                self.blocks.append([(None, _Conv(c)) for c in block.convs])
        self.post = _Conv(generator.conv_post)

    def forward(self, z: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre(z.unsqueeze(2).contiguous(memory_format=torch.channels_last))
        if self.cond is not None and g is not None:
            x = x + self.cond(g.unsqueeze(2))
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu_(x, LRELU_SLOPE))  # x is a fresh tensor here: in place is safe
            first_input = F.leaky_relu(x, LRELU_SLOPE)  # the same for every resblock of the stage
            xs = None
            for pairs in self.blocks[i * self.num_kernels:(i + 1) * self.num_kernels]:
                y = x
                for k, (c1, c2) in enumerate(pairs):
                    act = first_input if k == 0 else F.leaky_relu(y, LRELU_SLOPE)
                    y = c2.plus(F.leaky_relu_(c1(act), LRELU_SLOPE) if c1 is not None else act, y)
                xs = y if xs is None else xs.add_(y)
            x = xs.div_(self.num_kernels)
        x = self.post(F.leaky_relu_(x))  # default slope 0.01 here, as upstream
        return torch.tanh_(x).reshape(z.shape[0], 1, -1)


def fused_decoder(generator: nn.Module) -> FusedDecoder | None:
    """A FusedDecoder for `generator`, or None when this torch lacks oneDNN's fused convolutions.

    Probes the kernels once on a tiny input against F.conv2d, so a build whose fused ops are missing or
    wrong falls back (the caller then uses ChannelsLastDecoder) instead of producing other audio.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        probe = _Conv(nn.Conv1d(4, 4, 3, padding=2, dilation=2))
        x = torch.randn(1, 4, 1, 9, generator=torch.Generator().manual_seed(0))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            ok = torch.allclose(probe.plus(x, x), probe(x) + x, atol=1e-5)
    except (RuntimeError, AttributeError):  # op not registered in this build
        return None
    return FusedDecoder(generator) if ok else None
