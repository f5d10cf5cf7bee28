"""BERT feature throughput: utterances per second, batched vs one at a time, same model and device.

Uses a random model with the real ZH tokenizer (shared/golden/tokenizers), sized by --hidden/--layers
(default a small one so the CPU run takes seconds; --hidden 1024 --layers 24 mimics the real model).

    .venv/bin/python bench/features.py [--device cuda] [--hidden 1024 --layers 24] [--n 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEXTS = ["大家好，我是派蒙。", "今天天气不错，我们一起去公园散步吧！", "你知道吗？这个东西要花3000块钱。",
         "他在2023年12月26日说了一句话：不要放弃。", "一个人，一本书，一杯茶。", "我不知道你在说什么……",
         "百分之五十的人喜欢吃苹果，50%的人喜欢吃香蕉。", "请把门关上、把窗户打开；然后坐下。"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--n", type=int, default=64, help="utterances")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--tokenizers", default=str(Path(__file__).resolve().parents[2] / "shared/golden/tokenizers"))
    args = parser.parse_args(argv)
    import torch

    from vits.text import clean_text
    from vits.text.bert import BertFeatures
    from vits.text.testing import build_tiny_models

    torch.set_num_threads(args.threads)
    segs = [s for i in range(args.n) for s in clean_text(TEXTS[i % len(TEXTS)] * (1 + i % 3), "ZH")]
    with tempfile.TemporaryDirectory() as tmp:
        dirs = build_tiny_models(tmp, args.tokenizers, hidden=args.hidden, layers=args.layers, languages=("ZH",))
        dtype = torch.float16 if args.fp16 else torch.float32
        bert = BertFeatures(dirs, device=args.device, dtype=dtype)
        bert.features(segs[0])  # load + warm up

        def timed(fn):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return out, time.perf_counter() - t0

        single, t_single = timed(lambda: [bert.features(s) for s in segs])
        batched, t_batch = timed(lambda: bert.features_batch(segs))
        diff = max((a - b).abs().max().item() for a, b in zip(single, batched))
    tokens = sum(len(s.word2ph) for s in segs)
    print(f"model hidden {args.hidden}, {args.layers} layers, {args.device}, {dtype}; {len(segs)} utterances, "
          f"{tokens} tokens")
    print(f"one at a time: {len(segs) / t_single:8.1f} utt/s")
    print(f"batched:       {len(segs) / t_batch:8.1f} utt/s  ({t_single / t_batch:.2f}x)")
    print(f"max abs diff batched vs single: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
