"""The Train tab's figures: ``python -m bench.train_presets [--cpu-only|--gpu-only] [--oom]``.

(a) CPU seconds per step of the full Bert-VITS2 2.3 model and the "small" preset (`vits.config.SMALL_MODEL`)
    at batch 2 (``--threads``, default 1): the basis of `studio.train_state.CPU_S_PER_ITEM`. The process CPU
    time is printed besides the wall time: on a busy machine it is the figure to trust (one thread; with
    more, OpenMP's spin-waiting inflates it);
(b) GPU peak memory and speed of both at batch 8 and 16 (fp32 + TF32, WavLM discriminator of the
    wavlm-base-plus size, random weights): the basis of the memory estimate in `studio.train_state.device_line`;
(c) ``--oom``: a real CUDA out-of-memory retry. Two steps at batch 4 write G_2; then the process is limited
    (`torch.cuda.set_per_process_memory_fraction`) to less than batch 16 needs and resumed at batch 32:
    `vits.train.train` must retry at 16, then 8, and reach step 6 counting from G_2.

Synthetic voices (sine clips, random BERT features) as in `bench.train_step`; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.train_step import measure, write_voice, write_wavlm
from vits.config import VoiceConfig, apply_model_preset


def preset_config(name: str) -> VoiceConfig:
    cfg = VoiceConfig()
    apply_model_preset(cfg, name)
    return cfg


def cpu_step_time(cfg: VoiceConfig, batch: int, steps: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per training step on the CPU, after one warm-up step.

    CPU time is the figure to trust on a busy machine: wall time there includes waiting for other programs.
    """
    from vits.train import Runtime, StopRequest, Trainer, TrainOptions

    cfg.train.batch_size = batch
    with tempfile.TemporaryDirectory() as tmp:
        voice = write_voice(Path(tmp), cfg, n_clips=max(2 * batch, 8), seconds=(1.5, 3.0))
        trainer = Trainer(TrainOptions(voice_dir=voice, use_wavlm=False, device="cpu", num_workers=0),
                          Runtime(), lambda _line: None, StopRequest())
        trainer.setup()
        trainer.data.sampler.set_epoch(1)
        batches = list(trainer.data.loader)
        trainer.train_step(batches[0])
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(steps):
            trainer.train_step(batches[(i + 1) % len(batches)])
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def cpu_figures(steps: int, threads: int) -> None:
    torch.set_num_threads(threads)
    for name in ("small", "full"):
        wall, cpu = cpu_step_time(preset_config(name), 2, steps)
        print(f"cpu {threads} thread(s) {name:5s} batch 2: {wall:.2f} s/step wall, {cpu:.2f} s/step of CPU time "
              f"({cpu / 2:.2f} CPU s per batch item)", flush=True)


def gpu_figures(wavlm: Path, steps: int) -> dict:
    peaks = {}
    for name in ("small", "full"):
        for batch in (8, 16):
            r = measure(preset_config(name), "cuda", batch, steps, 2, wavlm, (3.0, 8.0))
            peaks[(name, batch)] = r["peak_gib"]
            print(f"cuda {name:5s} batch {batch:2d}: {r['steps_per_s']:.2f} steps/s, peak {r['peak_gib']:.1f} GiB",
                  flush=True)
            torch.cuda.empty_cache()
    for name in ("small", "full"):
        per_item = (peaks[(name, 16)] - peaks[(name, 8)]) / 8
        print(f"cuda {name}: {per_item:.2f} GiB per batch item, {peaks[(name, 8)] - 8 * per_item:.1f} GiB fixed",
              flush=True)
    return peaks


def oom_retry(wavlm: Path, limit_gib: float) -> None:
    from vits.train import TrainOptions, train

    cfg = VoiceConfig()
    cfg.train.batch_size, cfg.train.eval_interval, cfg.train.log_interval = 4, 2, 1
    with tempfile.TemporaryDirectory() as tmp:
        voice = write_voice(Path(tmp), cfg, n_clips=64, seconds=(3.0, 8.0))
        opts = TrainOptions(voice_dir=voice, wavlm=wavlm, use_wavlm=True, device="cuda", num_workers=2)
        train(TrainOptions(**{**vars(opts), "max_steps": 2}))
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(limit_gib / total)
        t0 = time.perf_counter()

        def log(line: str) -> None:
            if "out of memory" in line or "resumed from" in line or "training" in line and "step" in line:
                print(f"  {time.perf_counter() - t0:6.1f}s {line[:220]}", flush=True)

        result = train(TrainOptions(**{**vars(opts), "max_steps": 6, "batch_size": 32}), log=log)
        print(f"oom retry under a {limit_gib:.1f} GiB limit: ended at step {result.step} with batch size "
              f"{result.batch_size} ({result.reason}) in {time.perf_counter() - t0:.1f}s", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_presets", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3, help="timed steps per case")
    p.add_argument("--cpu-only", action="store_true")
    p.add_argument("--gpu-only", action="store_true")
    p.add_argument("--oom", action="store_true", help="also run the real out-of-memory retry (GPU)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for (a)")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}", flush=True)
    if not args.gpu_only:
        cpu_figures(args.steps, args.threads)
    if args.cpu_only:
        return 0
    if not torch.cuda.is_available():
        print("skipped: no GPU")
        return 0
    print(f"GPU: {torch.cuda.get_device_name(0)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        wavlm = write_wavlm(Path(tmp) / "wavlm")
        peaks = gpu_figures(wavlm, args.steps)
        if args.oom:
            # Between batch 8 and batch 16 of the full model: 32 and 16 fail, 8 fits.
            oom_retry(wavlm, (peaks[("full", 8)] + peaks[("full", 16)]) / 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
