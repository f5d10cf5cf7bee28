"""CPU synthesis speed of the default Bert-VITS2 2.3 generator: the Voice facade vs the plain computation.

    .venv/bin/python bench/synthesize.py [--seconds 10] [--threads 2] [--repeat 2]

Random weights (build_generator(VoiceConfig()), 61M parameters), ~10 s of audio at 44.1 kHz, the default
knobs (vits.defaults.SYNTHESIS: sdp_ratio 0.5, noise 0.6, noise_w 0.9). "plain" is what Bert-VITS2's infer.py does: eval mode, torch.no_grad,
weight norm recomputed on every call, 1-D convolutions, the C library's default malloc settings. "Voice" is
vits.synthesis.Voice: weight norm folded, torch.inference_mode, the decoder run as channels-last 2-D
convolutions, freed memory kept for reuse (keep_freed_memory). All variants draw the same random numbers in
the same order (same seed), so their audio must agree (max abs diff printed). Prints figures; never fails on
time.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length to synthesize (approx.)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per variant (best is reported)")
    args = parser.parse_args(argv)

    import torch

    from vits.config import VoiceConfig
    from vits.defaults import SYNTHESIS
    from vits.models import build_generator
    from vits.symbols import intersperse
    from vits.synthesis import Voice, keep_freed_memory

    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    cfg = VoiceConfig()
    torch.manual_seed(0)
    plain = build_generator(cfg).eval()
    torch.manual_seed(0)
    fast_model = build_generator(cfg)  # same initial weights as `plain`

    gen = torch.Generator().manual_seed(1)
    n = 120
    phones = torch.randint(1, 103, (n,), generator=gen).tolist()
    ids, tones, langs = intersperse(phones), [0] * (2 * n + 1), [0] * (2 * n + 1)
    t = len(ids)
    bert, ja_bert, en_bert = (torch.randn(1024, t, generator=gen) for _ in range(3))
    knobs = dict(sdp_ratio=SYNTHESIS.sdp_ratio, noise_scale=SYNTHESIS.noise_scale,
                 noise_scale_w=SYNTHESIS.noise_scale_w)

    def run_voice(v, length_scale, seed):
        return v.synthesize_phones(ids, tones, langs, bert, ja_bert, en_bert, speaker=0, blanked=True,
                                   length_scale=length_scale, seed=seed, **knobs)

    def run_plain(length_scale, seed):
        as_batch = [torch.tensor([seq]) for seq in (ids, tones, langs)]
        with torch.no_grad():
            torch.manual_seed(seed)
            out = plain.infer(as_batch[0], torch.tensor([t]), torch.tensor([0]), as_batch[1], as_batch[2],
                              bert[None], ja_bert[None], en_bert[None], length_scale=length_scale, **knobs)
        return out[0].reshape(-1).numpy()

    # Find the length scale that gives about --seconds of audio (random weights, random durations), with a
    # stand-in decoder that only reports the frame count, so the search costs no decoding.
    hop = cfg.data.hop_length
    voice = Voice(fast_model, cfg, "cpu", tune_malloc=False)  # malloc stays default until the plain runs are done
    voice_1d = Voice(voice.model, cfg, "cpu", fast_decoder=False, tune_malloc=False)  # folded + inference_mode
    frames_only = Voice(voice.model, cfg, "cpu", decoder=lambda z, g: torch.zeros(z.shape[-1] * hop),
                        tune_malloc=False)
    length_scale = 1.0
    for _ in range(4):
        samples = len(run_voice(frames_only, length_scale, seed=7))
        length_scale *= args.seconds * cfg.data.sampling_rate / samples
    del frames_only

    def timed(fn, repeat):
        best, best_cpu, out = float("inf"), float("inf"), None
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            out = fn()
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - start_cpu)
        return (best, best_cpu), out

    # The plain computation runs first, with the C library's default malloc settings, as in Bert-VITS2;
    # Voice then switches the process to keep freed memory (keep_freed_memory), which helps both.
    t_plain, ref = timed(lambda: run_plain(length_scale, seed=7), args.repeat)
    keep_freed_memory()  # what Voice does by default on CPU
    t_fast, out_fast = timed(lambda: run_voice(voice, length_scale, seed=7), args.repeat)
    t_1d, out_1d = timed(lambda: run_voice(voice_1d, length_scale, seed=7), 1)
    t_plain_tuned, out_plain_tuned = timed(lambda: run_plain(length_scale, seed=7), 1)
    seconds = len(ref) / cfg.data.sampling_rate
    print(f"default 2.3 generator, {seconds:.2f} s of audio ({t} tokens), {args.threads} threads, best of "
          f"{args.repeat} (1 for the middle rows); wall time (CPU time of all threads), RTF = wall / audio")
    rows = [("plain (weight norm per call, no_grad, 1-D convs)", t_plain, ref),
            ("  the same after keep_freed_memory()", t_plain_tuned, out_plain_tuned),
            ("folded + inference_mode + keep_freed_memory", t_1d, out_1d),
            ("Voice (all of that + channels-last decoder)", t_fast, out_fast)]
    worst = 0.0
    for name, (wall, cpu), out in rows:
        diff = float(abs(out - ref).max()) if out.shape == ref.shape else float("inf")
        worst = max(worst, diff)
        print(f"  {name:50s} {wall:6.2f} s ({cpu:6.2f} s CPU)  RTF {wall / seconds:.3f}  "
              f"x{t_plain[0] / wall:.2f} wall, x{t_plain[1] / cpu:.2f} CPU  max|diff| {diff:.1e}")
    if not worst < 1e-3:
        print("  WARNING: outputs differ by more than 1e-3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
