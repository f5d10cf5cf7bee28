"""onnxruntime vs torch synthesis time on CPU: `python bench/onnx_synthesize.py [--threads 2] [--runs 5]`.

Builds the default Bert-VITS2 2.3 generator (random weights, gin 512, 850 speakers), exports it with
vits.onnx_export, and times one utterance (51 tokens = 25 phones with blanks, about 3 s of audio) with
  torch          SynthesizerTrn.infer (weight norm folded, inference mode)
  onnx           vits.onnx_runtime.OnnxSynthesizer (numpy + onnxruntime, no torch)
  torch+onnx dec SynthesizerTrn.infer with the decoder swapped for its ONNX graph
using the same inputs and noise, checks that the audio agrees, and prints the ratio.
`--per-graph` also exports the older 1-D layout and prints each graph's CPU time (all threads, median of
--runs) for both layouts: where the ONNX path spends its time, steadier than wall time on a busy box.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _median_time(fn, runs: int) -> float:
    fn()  # warm-up (allocations, onnxruntime first-run optimisations)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _graph_cpu_ms(synth, feeds: dict, runs: int) -> dict[str, float]:
    """Median CPU milliseconds (process time: every thread) of each graph's session on the recorded feeds."""
    out = {}
    for name, feed in feeds.items():
        session = synth.sessions[name]
        session.run(None, feed)
        times = []
        for _ in range(runs):
            t0 = time.process_time()
            session.run(None, feed)
            times.append(time.process_time() - t0)
        out[name] = 1000 * statistics.median(times)
    return out


def _recorded_feeds(synth, run) -> dict[str, dict]:
    """The inputs each graph got during one `run()` (OnnxSynthesizer._run wrapped while it runs)."""
    feeds, plain_run = {}, synth._run

    def recording(name, **feed):
        feeds[name] = feed
        return plain_run(name, **feed)
    synth._run = recording
    try:
        run()
    finally:
        synth._run = plain_run
    return feeds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch and onnxruntime")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=51)
    parser.add_argument("--seconds", type=float, default=3.0, help="target audio length")
    parser.add_argument("--per-graph", action="store_true", help="CPU time per graph, 2-D vs 1-D export")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from vits.config import VoiceConfig
    from vits.defaults import SYNTHESIS
    from vits.models import build_generator, prepare_for_inference
    from vits.onnx_export import attach_onnx_decoder, export_onnx
    from vits.onnx_runtime import OnnxSynthesizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = VoiceConfig()
    model = prepare_for_inference(build_generator(cfg))
    del model.enc_q  # training-only, as vits.synthesis.Voice does
    t = args.tokens
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(1, 100, (1, t), generator=gen)
    tone = torch.randint(0, 12, (1, t), generator=gen)
    lang = torch.randint(0, 3, (1, t), generator=gen)
    berts = [torch.randn(1, 1024, t, generator=gen) for _ in range(3)]
    sid = torch.tensor([3])
    with torch.inference_mode():  # pick length_scale so random durations give about --seconds of audio
        g = model.emb_g(sid).unsqueeze(-1)
        h, _, _, x_mask = model.enc_p(x, torch.tensor([t]), tone, lang, *berts, g=g)
        frames = float(torch.exp(model.dp(h, x_mask, g=g)).sum())
    length_scale = args.seconds * cfg.data.sampling_rate / cfg.data.hop_length / frames
    sdp_noise = torch.randn(1, 2, t, generator=gen)
    knobs = dict(sdp_ratio=SYNTHESIS.sdp_ratio, noise_scale=SYNTHESIS.noise_scale,
                 noise_scale_w=SYNTHESIS.noise_scale_w, length_scale=length_scale)

    with tempfile.TemporaryDirectory(prefix="koe-bench-onnx-") as tmp:
        t0 = time.perf_counter()
        export_onnx(model, cfg, tmp)
        export_s = time.perf_counter() - t0
        synth = OnnxSynthesizer(tmp, threads=args.threads)
        _, attn = synth.infer(x[0], tone[0], lang[0], *(b[0] for b in berts), speaker=3, **knobs,
                              sdp_noise=sdp_noise[0].numpy(), seed=0, return_attn=True)
        t_y = attn.shape[0]  # frames: fixed by the SDP noise, so the prior noise can be drawn to size
        prior = torch.randn(1, t_y, cfg.model.inter_channels, generator=gen).transpose(1, 2)

        def run_torch():
            draws = iter([sdp_noise, prior])
            randn, randn_like = torch.randn, torch.randn_like
            # Feed torch the same noise as onnxruntime (infer draws the SDP noise, then the prior noise).
            torch.randn = lambda *a, **k: next(draws)
            torch.randn_like = lambda *a, **k: next(draws)
            try:
                with torch.inference_mode():
                    return model.infer(x, torch.tensor([t]), sid, tone, lang, *berts, **knobs)[0][0, 0].numpy()
            finally:
                torch.randn, torch.randn_like = randn, randn_like

        def run_onnx():
            return synth.infer(x[0], tone[0], lang[0], *(b[0] for b in berts), speaker=3, **knobs,
                               sdp_noise=sdp_noise[0].numpy(), prior_noise=prior[0].numpy())

        ref, got = run_torch(), run_onnx()
        diff = float(np.abs(ref - got).max()) if ref.shape == got.shape else float("inf")
        torch_s = _median_time(run_torch, args.runs)
        onnx_s = _median_time(run_onnx, args.runs)
        per_graph = {}
        if args.per_graph:
            feeds = _recorded_feeds(synth, run_onnx)
            per_graph["2d"] = _graph_cpu_ms(synth, feeds, args.runs)
            export_onnx(model, cfg, Path(tmp) / "1d", conv_layout="1d")
            per_graph["1d"] = _graph_cpu_ms(OnnxSynthesizer(Path(tmp) / "1d", threads=args.threads), feeds, args.runs)
        attach_onnx_decoder(model, Path(tmp) / "dec.onnx", threads=args.threads)
        hybrid_s = _median_time(run_torch, args.runs)

    audio_s = len(ref) / cfg.data.sampling_rate
    summary = {
        "config": "default 2.3 (random weights)", "tokens": t, "audio_s": round(audio_s, 2),
        "threads": args.threads, "export_s": round(export_s, 1), "max_abs_diff": diff,
        "torch_s": round(torch_s, 3), "onnx_s": round(onnx_s, 3), "torch_onnx_dec_s": round(hybrid_s, 3),
        "onnx_over_torch": round(onnx_s / torch_s, 3), "torch_rtf": round(torch_s / audio_s, 3),
        "onnx_rtf": round(onnx_s / audio_s, 3),
    }
    print(f"{t} tokens -> {audio_s:.2f} s of audio, {args.threads} CPU threads, median of {args.runs}")
    print(f"{'backend':<16}{'seconds':>9}{'RTF':>8}")
    for name, sec in (("torch", torch_s), ("onnx", onnx_s), ("torch+onnx dec", hybrid_s)):
        print(f"{name:<16}{sec:>9.3f}{sec / audio_s:>8.3f}")
    print(f"onnxruntime / torch time ratio: {onnx_s / torch_s:.2f} (max abs audio diff {diff:.1e})")
    if per_graph:
        print(f"CPU ms per graph (all threads, median of {args.runs}):  " + "  ".join(
            f"{name} 1d {per_graph['1d'][name]:.1f} / 2d {per_graph['2d'][name]:.1f}" for name in per_graph["2d"]))
        summary["graph_cpu_ms"] = {layout: {k: round(v, 1) for k, v in ms.items()} for layout, ms in per_graph.items()}
    print("BENCH " + json.dumps(summary))
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
