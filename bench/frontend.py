"""Text frontend throughput: sentences per second per language (clean_text, warm caches).

    .venv/bin/python bench/frontend.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SENTENCES = {
    "ZH": ["大家好，我是派蒙。", "今天天气不错，我们一起去公园散步吧！", "你知道吗？这个东西要花3000块钱。",
           "他在2023年12月26日说了一句话：不要放弃。", "电话号码是13812345678。", "百分之五十的人喜欢吃苹果。",
           "我们要看一看，想一想。", "他的体重是65.5公斤。"],
    "JP": ["こんにちは、世界。", "今日はいい天気ですね。", "東京タワーに行きました！", "コーヒーを一杯ください。",
           "雨が降っているので、傘を持っていきます。", "三時に駅で会いましょう。", "学校の先生はとても優しい。",
           "それは本当ですか？"],
    "EN": ["Hello, world! I don't know.", "The quick brown fox jumps over the lazy dog.",
           "It costs $5.50 and weighs 3kg.", "Call me at 555-123-4567 tomorrow.",
           "I refuse to collect the refuse.", "The meeting is at 3:05 pm on 2023-12-26.",
           "Unbelievable pronunciation of zorblaxian words.", "We met on the 21st of June, 1999."],
    "AUTO": ["今日はいい天気ですね。Hello!", "你好呀，Hello世界！", "I love 北京 very much.", "東京でiPhoneを買った。"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="passes over the sentence list")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from vits.text import clean_text

    warnings.simplefilter("ignore")
    print(f"{'language':8} {'first call s':>12} {'sentences/s':>12} {'chars/s':>10}")
    for lang, sentences in SENTENCES.items():
        t0 = time.perf_counter()
        clean_text(sentences[0], lang)  # dictionary loads (jieba, OpenJTalk, CMU) happen here
        first = time.perf_counter() - t0
        chars = sum(len(s) for s in sentences) * args.repeat
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            for s in sentences:
                clean_text(s, lang)
        dt = time.perf_counter() - t0
        print(f"{lang:8} {first:12.2f} {len(sentences) * args.repeat / dt:12.1f} {chars / dt:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
