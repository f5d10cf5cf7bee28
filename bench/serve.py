"""Load test of the HTTP API: `python bench/serve.py [--requests 50] [--threads 2]`.

Builds a tiny random voice (and a tiny 1024-wide Chinese BERT) in a temporary Data folder, starts the real
server (uvicorn, HTTP on 127.0.0.1), fires N concurrent `/voice` requests, then makes each request again
alone and checks that every concurrent answer is 200 and byte-identical to its lone twin. Prints p50/p99
latency and throughput. CPU only; needs shared/golden/tokenizers (set KOE_SHARED if it is elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TEXTS = ["你好。", "今天天气很好。", "我们一起去公园吧！", "谢谢你的帮助。", "明天见。"]
TINY_MODEL = {
    "inter_channels": 16, "hidden_channels": 16, "filter_channels": 32, "n_heads": 2, "n_layers": 3,
    "upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]],
    "gin_channels": 8, "n_flow_layer": 2, "n_layers_trans_flow": 3,
}


def make_tiny_voice(root: Path, tokenizers: Path) -> Path:
    """Write Data/tiny (random G, speakers alice/bob), tiny BERT and a config.yml under `root`."""
    import torch

    from vits.checkpoints import save_checkpoint
    from vits.config import VoiceConfig
    from vits.models import build_generator
    from vits.text.testing import build_tiny_models
    from vits.voice_folder import config_path, models_dir

    bert = build_tiny_models(root / "bert", tokenizers, hidden=1024, layers=3, languages=("ZH",))
    cfg = VoiceConfig.model_validate({"data": {"n_speakers": 2, "spk2id": {"alice": 0, "bob": 1}},
                                      "model": TINY_MODEL})
    voice = root / "Data" / "tiny"
    cfg.save(config_path(voice))
    torch.manual_seed(0)
    save_checkpoint(models_dir(voice) / "G_100.pth", build_generator(cfg), epoch=1, step=100, learning_rate=2e-4)
    config = root / "config.yml"
    config.write_text(f"data_root: Data\ndevice: cpu\nbert:\n  ZH: {bert['ZH']}\n  JP: {root / 'none'}\n"
                      f"  EN: {root / 'none'}\n")
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _fire(url: str, requests: list[dict]) -> list[tuple[int, bytes, float]]:
    import httpx

    async with httpx.AsyncClient(timeout=600) as client:
        async def one(params):
            t0 = time.perf_counter()
            r = await client.get(url, params=params)
            return r.status_code, r.content, time.perf_counter() - t0

        return await asyncio.gather(*(one(p) for p in requests))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)

    import httpx
    import torch
    import uvicorn

    from server.routes import create_app
    from settings import load_settings

    torch.set_num_threads(args.threads)
    shared = Path(os.environ.get("KOE_SHARED", REPO.parent / "shared"))
    with tempfile.TemporaryDirectory(prefix="koe-bench-serve-") as tmp:
        t0 = time.perf_counter()
        settings = load_settings(make_tiny_voice(Path(tmp), shared / "golden" / "tokenizers"))
        app = create_app(settings, max_queue=args.requests + 10)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/voice"
        # Warm-up: loads the voice, the BERT model and the text frontend.
        warm = httpx.get(url, params={"text": "你好。", "seed": 0}, timeout=600)
        assert warm.status_code == 200, warm.text
        print(f"setup {time.perf_counter() - t0:.1f} s (tiny voice, tiny BERT, server, warm-up)")

        requests = [{"text": TEXTS[i % len(TEXTS)], "seed": i, "speaker_name": ("alice", "bob")[i % 2],
                     "sdp_ratio": 0.5} for i in range(args.requests)]
        t_start = time.perf_counter()
        results = asyncio.run(_fire(url, requests))
        wall = time.perf_counter() - t_start
        alone = [httpx.get(url, params=p, timeout=600) for p in requests]
        server.should_exit = True
        thread.join(timeout=10)

    statuses = [s for s, _, _ in results]
    latencies = [t for _, _, t in results]
    identical = sum(1 for (s, body, _), a in zip(results, alone) if s == 200 and a.status_code == 200
                    and body == a.content)
    audio_seconds = sum((len(body) - 44) / 2 / 44100 for s, body, _ in results if s == 200)
    summary = {
        "requests": args.requests,
        "status_200": statuses.count(200),
        "identical_to_alone": identical,
        "p50_latency_s": round(_percentile(latencies, 50), 3),
        "p99_latency_s": round(_percentile(latencies, 99), 3),
        "wall_s": round(wall, 2),
        "throughput_req_s": round(args.requests / wall, 2),
        "audio_s_per_s": round(audio_seconds / wall, 2),
        "torch_threads": args.threads,
    }
    print(f"{summary['status_200']}/{args.requests} answered 200, {identical}/{args.requests} byte-identical to "
          f"the same request made alone")
    print(f"latency p50 {summary['p50_latency_s']} s, p99 {summary['p99_latency_s']} s; "
          f"throughput {summary['throughput_req_s']} req/s ({summary['audio_s_per_s']} s of audio per s)")
    print("BENCH " + json.dumps(summary))
    return 0 if summary["status_200"] == identical == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
