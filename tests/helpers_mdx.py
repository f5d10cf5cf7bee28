"""A random-weight MDX-Net (TFC-TDF U-Net) exported to ONNX the way UVR's MDX-Net files are laid out.

No separation weights ship in a package, so tests and bench/separate.py build the architecture with
seeded random weights: input "input" and output "output", both [batch, 4, dim_f, dim_t] float32 (left
re/im, right re/im of the lowest dim_f STFT bins over dim_t frames), as in UVR-MDX-NET-Voc_FT.onnx.

The network: a 1x1 conv to `channels`; per scale a TFC-TDF block (`layers` k x k convs over frequency x
time, then a TDF: two fully connected layers across the frequency axis, `dim_f -> dim_f/bottleneck ->
dim_f`, added back) and a stride-2 conv that halves frequency and time and adds `growth` channels; a
middle block; the mirror-image decoder (stride-2 transposed convs plus the encoder output of the same
scale: MDX-Net multiplies there, but with random weights a product makes the output grow with a power of
the input level; a sum keeps it proportional); a 1x1 conv back to 4 channels. BatchNorm layers get
random scales so they are not identities; biases are zero, so silence in gives silence out and the output
follows the input instead of a constant pattern. `make_mdx_onnx(real_size=True)` has the real files' size
class (dim_f 3072, dim_t 256; 10.9 M parameters, UVR's 63.7 MB file about 16.7 M).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prep.separate import MdxParams

TINY = MdxParams(n_fft=256, hop=64, dim_f=128, dim_t=32, sample_rate=44100, compensate=1.0)
REAL = MdxParams(n_fft=7680, hop=1024, dim_f=3072, dim_t=256, sample_rate=44100, compensate=1.021)
REAL_NET = {"channels": 32, "growth": 32, "scales": 5, "layers": 3, "bottleneck": 8}
# Real dims, few channels: cheap enough for end-to-end tests of the default model name and its parameters.
REAL_DIMS_SMALL = {"channels": 4, "growth": 4, "scales": 1, "layers": 1, "bottleneck": 64}


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU()]


class TfcTdf(nn.Module):
    """Convs over (frequency, time), then a frequency-wise bottleneck FC pair added back (MDX-Net's block)."""

    def __init__(self, channels: int, layers: int, freq: int, kernel: int, bottleneck: int):
        super().__init__()
        self.tfc = nn.Sequential(*[m for _ in range(layers)
                                   for m in (nn.Conv2d(channels, channels, kernel, padding=kernel // 2),
                                             *_norm_act(channels))])
        hidden = max(1, freq // bottleneck)
        self.tdf_in, self.norm_in = nn.Linear(freq, hidden, bias=False), nn.BatchNorm2d(channels)
        self.tdf_out, self.norm_out = nn.Linear(hidden, freq, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, F, T]
        x = self.tfc(x)
        y = x.transpose(-1, -2)  # the FCs run across frequency: [B, C, T, F]
        y = torch.relu(self.norm_in(self.tdf_in(y)))
        y = torch.relu(self.norm_out(self.tdf_out(y)))
        return x + y.transpose(-1, -2)


class MdxNet(nn.Module):
    """[B, 4, dim_f, dim_t] -> [B, 4, dim_f, dim_t]; dim_f and dim_t must divide by 2**scales."""

    def __init__(self, dim_f: int, channels: int = 8, growth: int = 8, scales: int = 2, layers: int = 2,
                 bottleneck: int = 4, kernel: int = 3):
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(4, channels, 1), *_norm_act(channels))
        self.encoder, self.down, self.up, self.decoder = (nn.ModuleList() for _ in range(4))
        f, c = dim_f, channels
        for _ in range(scales):
            self.encoder.append(TfcTdf(c, layers, f, kernel, bottleneck))
            self.down.append(nn.Sequential(nn.Conv2d(c, c + growth, 2, stride=2), *_norm_act(c + growth)))
            f, c = f // 2, c + growth
        self.middle = TfcTdf(c, layers, f, kernel, bottleneck)
        for _ in range(scales):
            self.up.append(nn.Sequential(nn.ConvTranspose2d(c, c - growth, 2, stride=2), *_norm_act(c - growth)))
            f, c = f * 2, c - growth
            self.decoder.append(TfcTdf(c, layers, f, kernel, bottleneck))
        self.last = nn.Conv2d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        skips = []
        for block, down in zip(self.encoder, self.down):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.middle(x)
        for up, block in zip(self.up, self.decoder):
            x = block(up(x) + skips.pop())
        return self.last(x)


def build_mdx_net(p: MdxParams, seed: int = 0, **net) -> MdxNet:
    """A seeded random-weight MdxNet for `p` (the weights depend on dim_f and `net`, not on dim_t), its output
    scaled to the input's RMS on a noise probe."""
    torch.manual_seed(seed)
    model = MdxNet(p.dim_f, **net)
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # random scales: eval-mode BN is a real per-channel map
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.8 + 0.4 * torch.rand(m.num_features, generator=gen))
        if getattr(m, "bias", None) is not None:
            m.bias.data.zero_()
    model.eval()
    with torch.no_grad():
        probe = torch.randn(1, 4, p.dim_f, 32, generator=gen)  # not p.dim_t: the same weights for any dim_t
        scale = float(probe.std() / model(probe).std().clamp_min(1e-12))
        model.last.weight.mul_(scale)
        model.last.bias.mul_(scale)
    return model


def make_mdx_onnx(path: str | Path, p: MdxParams = TINY, seed: int = 0, *, real_size: bool = False,
                  **net) -> Path:
    """Export a random-weight MdxNet for `p` to `path` with UVR's IO ("input"/"output", dynamic batch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_mdx_net(p, seed, **(REAL_NET if real_size else {}), **net)
    dummy = torch.zeros(1, 4, p.dim_f, p.dim_t)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as vits/onnx_export.py uses
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=17)
    return path


def parameter_count(p: MdxParams = REAL, **net) -> int:
    return sum(int(np.prod(t.shape)) for t in MdxNet(p.dim_f, **(net or REAL_NET)).parameters())
