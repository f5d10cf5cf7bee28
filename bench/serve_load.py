"""Bounded load test of the HTTP API with voices loading and unloading: `python bench/serve_load.py`.

Builds two tiny random voices (`tiny`, `other`) and a tiny 1024-wide Chinese BERT in a temporary Data folder,
starts the real server (uvicorn, h11, 127.0.0.1), then fires `--requests` seeded `/voice` requests at once
(`--concurrency` in flight; most for `tiny`, every `--other-every`-th for `other`) while another client
loads and unloads `other` in a loop. Afterwards every request is made again alone, with nothing else
running, and each concurrent 200 answer must be byte-identical to its lone twin (same seed, same audio,
whatever else the server does). Prints the statuses, the identical count, latency p50/p99, throughput and
the load/unload cycles; exits 1 when an answer differs or a request failed in a way the API does not
document. Bounded: a fixed number of requests, `--timeout` seconds at most. CPU only; needs
shared/golden/tokenizers (set KOE_SHARED if it is elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.serve import TEXTS, _free_port, _percentile, make_tiny_voice  # noqa: E402

# 409: the voice was unloaded between finding it and queueing the job (documented); every other non-200 fails.
EXPECTED_REFUSALS = (409,)


async def _load_test(url: str, requests: list[dict], concurrency: int, timeout: float) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)
        done = asyncio.Event()
        cycles = {"load": 0, "unload": 0, "errors": []}

        async def one(params):
            async with gate:
                t0 = time.perf_counter()
                r = await client.get("/voice", params=params)
                return r.status_code, r.content, time.perf_counter() - t0

        async def churn():
            while not done.is_set():
                for action in ("load", "unload"):
                    r = await client.post(f"/models/{action}", json={"model": "other"})
                    if r.status_code == 200:
                        cycles[action] += 1
                    elif not (action == "unload" and r.status_code == 404):  # already pushed out or unloaded
                        cycles["errors"].append(f"{action}: {r.status_code} {r.text[:200]}")
                    await asyncio.sleep(0)

        churner = asyncio.create_task(churn())
        t_start = time.perf_counter()
        results = await asyncio.wait_for(asyncio.gather(*(one(p) for p in requests)), timeout)
        wall = time.perf_counter() - t_start
        done.set()
        await churner
        # The same requests alone, one at a time, with no loading going on.
        alone = []
        for params in requests:
            r = await client.get("/voice", params=params)
            alone.append((r.status_code, r.content))
    return {"results": results, "alone": alone, "wall": wall, "cycles": cycles}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=12, help="requests in flight at once")
    parser.add_argument("--other-every", type=int, default=5, help="every N-th request speaks with 'other'")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the concurrent phase")
    args = parser.parse_args(argv)

    import torch
    import uvicorn

    from server.routes import create_app
    from settings import load_settings

    torch.set_num_threads(args.threads)
    shared = Path(os.environ.get("KOE_SHARED", REPO.parent / "shared"))
    with tempfile.TemporaryDirectory(prefix="koe-bench-load-") as tmp:
        t0 = time.perf_counter()
        settings = load_settings(make_tiny_voice(Path(tmp), shared / "golden" / "tokenizers"))
        shutil.copytree(settings.data_root / "tiny", settings.data_root / "other")
        app = create_app(settings, max_queue=args.requests + 10, max_models=4)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        import httpx

        warm = httpx.get(f"{url}/voice", params={"text": "你好。", "seed": 0, "model": "tiny"}, timeout=600)
        assert warm.status_code == 200, warm.text
        print(f"setup {time.perf_counter() - t0:.1f} s (two tiny voices, tiny BERT, server, warm-up)")
        requests = [{"text": TEXTS[i % len(TEXTS)], "seed": 1000 + i, "speaker_name": ("alice", "bob")[i % 2],
                     "model": "other" if args.other_every and i % args.other_every == args.other_every - 1
                     else "tiny"} for i in range(args.requests)]
        out = asyncio.run(_load_test(url, requests, args.concurrency, args.timeout))
        server.should_exit = True
        thread.join(timeout=10)

    results, alone, wall, cycles = out["results"], out["alone"], out["wall"], out["cycles"]
    statuses: dict[str, int] = {}
    for status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = [(r, a) for r, a in zip(results, alone) if r[0] == 200]
    identical = sum(1 for r, a in ok if a[0] == 200 and r[1] == a[1])
    unexpected = [s for s, _, _ in results if s != 200 and s not in EXPECTED_REFUSALS]
    latencies = [t for s, _, t in results if s == 200] or [0.0]
    audio_seconds = sum((len(body) - 44) / 2 / 44100 for s, body, _ in results if s == 200)
    summary = {
        "requests": args.requests, "concurrency": args.concurrency, "statuses": statuses,
        "answered_200": len(ok), "identical_to_alone": identical, "differing": len(ok) - identical,
        "load_cycles": cycles["load"], "unload_cycles": cycles["unload"], "churn_errors": len(cycles["errors"]),
        "p50_latency_s": round(_percentile(latencies, 50), 3), "p99_latency_s": round(_percentile(latencies, 99), 3),
        "wall_s": round(wall, 2), "throughput_req_s": round(args.requests / wall, 2),
        "audio_s_per_s": round(audio_seconds / wall, 2), "torch_threads": args.threads,
    }
    print(f"{len(ok)}/{args.requests} answered 200 ({statuses}); {identical}/{len(ok)} byte-identical to the same "
          f"request made alone, while 'other' was loaded {cycles['load']} and unloaded {cycles['unload']} times")
    print(f"latency p50 {summary['p50_latency_s']} s, p99 {summary['p99_latency_s']} s; "
          f"throughput {summary['throughput_req_s']} req/s ({summary['audio_s_per_s']} s of audio per s)")
    for error in cycles["errors"][:5]:
        print(f"churn error: {error}")
    print("BENCH " + json.dumps(summary))
    return 0 if identical == len(ok) and not unexpected and not cycles["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
