"""How close the CPU decoder is to what this machine's convolutions can do (GFLOP/s), per stage and whole.

    .venv/bin/python bench/decoder_ceiling.py            # 1 and 2 threads, ~1 min on 2 cores

The anchor is oneDNN's best case on this CPU: one large channels-last convolution (256 and 512 channels, the
shape HiFi-GAN's first stages have), which no decoder made of the same convolutions can beat at fp32. Then
each resblock stage of `vits.fast_infer.FusedDecoder` (default 2.3 generator, random weights, 310 frames =
3.6 s of 44.1 kHz audio), the whole fused decoder and the 1-D decoder Bert-VITS2 runs (`Generator.forward`),
each with its FLOP count (2 per multiply-add). Prints figures; never fails on time. Run it alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FRAMES = 310
RATES = (8, 8, 2, 2, 2)
KERNELS = (16, 16, 4, 4, 4)


def _best(fn, args: tuple, repeat: int = 5) -> float:
    """Best wall seconds of fn(*args) over `repeat` runs after warm-up (the thread pool settles after a switch)."""
    for _ in range(3):
        fn(*args)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def decoder_macs(frames: int = FRAMES, channels: int = 512, resblock_sum: int = 3 + 7 + 11) -> tuple[int, list[int]]:
    """Multiply-adds of the default HiFi-GAN for `frames` (total, and per resblock stage)."""
    total, length, per_stage = 192 * channels * 7 * frames, frames, []
    for rate, kernel in zip(RATES, KERNELS):
        out = channels // 2
        total += channels * out * kernel * length  # transposed conv: per input frame
        length *= rate
        stage = 6 * resblock_sum * out * out * length  # 3 resblocks x 3 dilations x 2 convs
        per_stage.append(stage)
        total += stage
        channels = out
    return total + channels * 7 * length, per_stage


def main() -> int:
    import torch
    from torch.nn import functional as F

    from vits.config import VoiceConfig
    from vits.fast_infer import LRELU_SLOPE, fused_decoder
    from vits.models import build_generator, prepare_for_inference
    from vits.synthesis import keep_freed_memory

    keep_freed_memory()  # as vits.synthesis.Voice does on the CPU
    torch.manual_seed(0)
    model = prepare_for_inference(build_generator(VoiceConfig())).eval()
    fused = fused_decoder(model.dec)
    if fused is None:
        print("this torch has no oneDNN fused convolutions: nothing to measure")
        return 0
    total, stages = decoder_macs()
    print(f"decoder: {2 * total / 1e9:.0f} GFLOP for {FRAMES} frames (3.6 s of audio)")

    def stage(i, x):
        first, acc = F.leaky_relu(x, LRELU_SLOPE), None
        for pairs in fused.blocks[i * 3:(i + 1) * 3]:
            y = x
            for k, (c1, c2) in enumerate(pairs):
                act = first if k == 0 else F.leaky_relu(y, LRELU_SLOPE)
                y = c2.plus(F.leaky_relu_(c1(act), LRELU_SLOPE), y)
            acc = y if acc is None else acc.add_(y)
        return acc.div_(3)

    for threads in (1, 2):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            ceiling = []
            for channels, kernel in ((256, 7), (512, 3)):
                x = torch.randn(1, channels, 1, 16384).contiguous(memory_format=torch.channels_last)
                w = torch.randn(channels, channels, 1, kernel).contiguous(memory_format=torch.channels_last)
                sec = _best(lambda x, w, k: F.conv2d(x, w, padding=(0, k // 2)), (x, w, kernel))
                ceiling.append(2 * channels * channels * kernel * 16384 / sec / 1e9)
            anchor = max(ceiling)
            print(f"\n{threads} thread(s): oneDNN best case {ceiling[0]:.0f} / {ceiling[1]:.0f} GFLOP/s "
                  f"(256 ch k7 / 512 ch k3); x = share of {anchor:.0f}")
            channels, length = 256, FRAMES * 8
            for i, macs in enumerate(stages):
                x = torch.randn(1, channels, 1, length).contiguous(memory_format=torch.channels_last)
                sec = _best(stage, (i, x), 3)
                rate = 2 * macs / sec / 1e9
                print(f"  stage {i} ({channels:3d} ch, {length:6d} samples): {sec * 1000:6.1f} ms  {rate:4.0f} GFLOP/s "
                      f"x{rate / anchor:.2f}")
                channels, length = channels // 2, length * (RATES[i + 1] if i + 1 < len(RATES) else 1)
            z, g = torch.randn(1, 192, FRAMES), torch.randn(1, 512, 1)
            for name, fn in (("fused decoder (Voice)", fused), ("1-D decoder (Bert-VITS2)", model.dec)):
                sec = _best(fn, (z, g), 3)
                rate = 2 * total / sec / 1e9
                print(f"  {name:25s} {sec:.3f} s  {rate:4.0f} GFLOP/s x{rate / anchor:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
