"""Training-step speed and peak memory: ``python -m bench.train_step [--steps N] [--gpu-only|--cpu-only]``.

(a) a tiny config on the CPU (16 kHz, 32-channel networks, batch 2, no WavLM);
(b) the default Bert-VITS2 2.3 config on a GPU at batch 8 and 16, fp32+TF32 and bf16, with a WavLM of the
    wavlm-base-plus size (random weights: same compute, no download). Prints "skipped: no GPU" without CUDA.

Each case builds a synthetic voice folder (sine clips, random BERT features) in a temp dir and times the
real `vits.train.Trainer.train_step` on pre-collated batches (data loading is not part of the figure).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from vits.config import VoiceConfig
from vits.train import Runtime, StopRequest, Trainer, TrainOptions
from vits.voice_folder import config_path

PHONES = "_ n i h ao sh ir j ie . _ d a j ia h ao , _".split()


def tiny_config() -> VoiceConfig:
    cfg = VoiceConfig()
    d, m = cfg.data, cfg.model
    d.sampling_rate, d.filter_length, d.win_length, d.hop_length, d.n_mel_channels = 16000, 512, 512, 128, 40
    cfg.train.segment_size = 2048
    m.inter_channels = m.hidden_channels = 32
    m.filter_channels, m.n_layers, m.gin_channels, m.upsample_initial_channel = 64, 3, 16, 32
    m.resblock_kernel_sizes, m.resblock_dilation_sizes = [3], [[1, 3, 5]]
    m.upsample_rates, m.upsample_kernel_sizes = [4, 4, 4, 2], [8, 8, 8, 4]
    return cfg


def write_voice(root: Path, cfg: VoiceConfig, n_clips: int, seconds: tuple[float, float]) -> Path:
    """A synthetic voice: `n_clips` sine clips of random length, random .bert.pt, lists and config."""
    rng = np.random.default_rng(0)
    voice = root / "voice"
    sr = cfg.data.sampling_rate
    cfg.data.n_speakers, cfg.data.spk2id = 1, {"spk": 0}
    lines = []
    for i in range(n_clips):
        n = int(rng.uniform(*seconds) * sr)
        t = np.arange(n) / sr
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.01 * rng.standard_normal(n)
        rel = f"wavs/clip_{i:03d}.wav"
        (voice / "wavs").mkdir(parents=True, exist_ok=True)
        soundfile.write(voice / rel, audio.astype(np.float32), sr, subtype="PCM_16")
        # About 12 phones per second of audio, as in real speech.
        phones = (PHONES * 100)[: max(3, int(12 * n / sr))]
        phones[0] = phones[-1] = "_"
        torch.save(torch.randn(1024, 2 * len(phones) + 1), voice / rel.replace(".wav", ".bert.pt"))
        lines.append(f"{rel}|spk|ZH|x|{' '.join(phones)}|{' '.join('0' for _ in phones)}|"
                     f"{' '.join('1' for _ in phones)}")
    (voice / "filelists").mkdir(parents=True)
    (voice / "filelists" / "train.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (voice / "filelists" / "val.list").write_text(lines[0] + "\n", encoding="utf-8")
    cfg.save(config_path(voice))
    return voice


def write_wavlm(folder: Path) -> Path:
    """A randomly initialised WavLM with the wavlm-base-plus architecture (12 layers, hidden 768)."""
    from transformers import WavLMConfig, WavLMModel

    WavLMModel(WavLMConfig()).save_pretrained(folder)
    return folder


def measure(cfg: VoiceConfig, device: str, batch: int, steps: int, warmup: int, wavlm: Path | None,
            seconds: tuple[float, float]) -> dict:
    """Steps/s and peak memory of `steps` timed training steps after `warmup` ones."""
    cfg.train.batch_size = batch
    with tempfile.TemporaryDirectory() as tmp:
        voice = write_voice(Path(tmp), cfg, n_clips=max(2 * batch, 8), seconds=seconds)
        opts = TrainOptions(voice_dir=voice, wavlm=wavlm, use_wavlm=wavlm is not None, device=device,
                            num_workers=0)
        rt = Runtime(device=torch.device(device))
        trainer = Trainer(opts, rt, lambda _line: None, StopRequest())
        trainer.setup()
        trainer.data.sampler.set_epoch(1)
        batches = list(trainer.data.loader)
        for i in range(warmup):
            trainer.train_step(batches[i % len(batches)])
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for i in range(steps):
            trainer.train_step(batches[i % len(batches)])
        trainer.losses.sums.tolist()  # wait for the device
        elapsed = time.perf_counter() - t0
        if rt.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**30
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    return {"steps_per_s": steps / elapsed, "peak_gib": peak}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cpu-only", action="store_true")
    p.add_argument("--gpu-only", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    if not args.gpu_only:
        r = measure(tiny_config(), "cpu", 2, args.steps, args.warmup, None, (1.0, 2.0))
        print(f"(a) tiny config, CPU, batch 2, fp32, no WavLM: {r['steps_per_s']:.2f} steps/s, "
              f"peak RSS {r['peak_gib']:.2f} GiB", flush=True)
    if args.cpu_only:
        return 0
    if not torch.cuda.is_available():
        print("(b) default 2.3 config on GPU: skipped: no GPU")
        return 0
    print(f"GPU: {torch.cuda.get_device_name()}")
    with tempfile.TemporaryDirectory() as tmp:
        wavlm = write_wavlm(Path(tmp) / "wavlm")
        for bf16 in (False, True):
            for batch in (8, 16):
                cfg = VoiceConfig()
                cfg.train.bf16_run = bf16
                try:
                    r = measure(cfg, "cuda", batch, args.steps, args.warmup, wavlm, (2.0, 10.0))
                    line = f"{r['steps_per_s']:.2f} steps/s, peak {r['peak_gib']:.1f} GiB"
                except torch.OutOfMemoryError:
                    line = "out of memory"
                    torch.cuda.empty_cache()
                print(f"(b) default config, batch {batch}, {'bf16' if bf16 else 'fp32+TF32'}: {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
