"""The training loop: setup, then epochs of steps with progress lines, checkpoints and eval samples.

Each batch is `vits.train.step.train_step`; `Trainer.run` around it reads like the algorithm:

    setup (check lists → networks → data → optimizers → start point → DDP)
    for each epoch: for each batch: step; log every log_interval; save + eval every eval_interval;
                    stop at max_steps or on SIGTERM/SIGINT
                    LR schedule step
    save the last step (unless just saved)

Out of memory (`torch.OutOfMemoryError`, one process): `train` starts the run again from the newest checkpoint
at half the batch size (the step count goes on from that checkpoint), and stops with a KoeError once batch
size 1 does not fit. Tests inject that error on the CPU with ``KOE_TEST_OOM=STEP[:ABOVE_BATCH]`` (every step
from global step STEP on whose batch size is above ABOVE_BATCH, default 0, raises it); it is honoured only
under pytest (``PYTEST_CURRENT_TEST`` set), so a stray variable cannot break a real run.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from vits import checkpoints as ckpts
from vits import voice_folder
from vits.config import VoiceConfig
from vits.data import validate_lists
from vits.errors import KoeError
from vits.progress import ProgressMeter, format_progress
from vits.scores import best_step
from vits.train.eval_samples import EvalSamples
from vits.train.lock import TrainingLock
from vits.train.options import DataProblems, TrainOptions, TrainResult
from vits.train.plan import plan_start
from vits.train.runtime import Runtime, StopRequest, init_runtime, shutdown_runtime, stop_requested
from vits.train.setup import build_data, build_networks, build_optimizers, unwrap, wrap_ddp
from vits.train.start import find_start
from vits.train.step import TB_SCALARS, train_step

EXTRA_SCALARS = ("learning_rate", "perf/steps_per_second", "perf/gpu_mem_gb")
NONFINITE_LIMIT = 10
TEST_OOM_ENV = "KOE_TEST_OOM"


def _test_oom() -> tuple[int, int] | None:
    """(from global step, above batch size) of an injected out-of-memory error: tests only (module docstring)."""
    value = os.environ.get(TEST_OOM_ENV, "")
    if not value or not os.environ.get("PYTEST_CURRENT_TEST"):
        return None
    step, _, above = value.partition(":")
    return int(step), int(above or 0)


class LossMeter:
    """Per-step loss values summed on the device since the last log line, and the non-finite streak.

    Nothing here syncs with the host except `check_nonfinite` and `take`.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.streak = torch.zeros((), device=device)
        self.worst = torch.zeros((), device=device)
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(TB_SCALARS), device=self.device)
        self.finite_steps = torch.zeros((), device=self.device)
        self.steps = 0

    def add(self, values: torch.Tensor) -> None:
        """One step's values; a step with any NaN/inf value is left out (and extends the streak)."""
        finite = torch.isfinite(values).all()
        self.sums += torch.where(finite, values, torch.zeros_like(values))
        self.finite_steps += finite.float()
        self.steps += 1
        self.streak = (self.streak + 1) * (~finite).float()
        self.worst = torch.maximum(self.worst, self.streak)

    def check_nonfinite(self, step: int) -> None:
        """Raise when NONFINITE_LIMIT steps in a row were skipped (one sync, every few steps)."""
        if self.worst.item() >= NONFINITE_LIMIT:
            raise KoeError(f"{NONFINITE_LIMIT} training steps in a row had NaN/inf losses or gradients; "
                           f"training stopped at step {step} (the last checkpoint is intact)",
                           fix="lower train.learning_rate, turn off train.bf16_run, or check the clips "
                               "(silence, clipping) and resume")

    def take(self) -> tuple[list[float], int]:
        """(mean of each value over the finite steps, number of skipped steps); then starts over."""
        stats = torch.cat([self.sums, self.finite_steps.view(1)]).tolist()
        n_ok = stats[-1]
        values = [v / n_ok if n_ok else float("nan") for v in stats[:-1]]
        skipped = self.steps - int(round(n_ok))
        self.reset()
        return values, skipped


class Trainer:
    """One training run. Use `train()`; the class holds what the loop needs between steps."""

    def __init__(self, opts: TrainOptions, rt: Runtime, log: Callable[[str], None], stop: StopRequest):
        self.rt, self.stop = rt, stop
        self._log = log if rt.is_main else (lambda _line: None)
        self.voice_dir = Path(opts.voice_dir)
        self.models_dir = voice_folder.models_dir(self.voice_dir)
        self.logs_dir = self.voice_dir / voice_folder.LOGS
        self.cfg = VoiceConfig.load(voice_folder.config_path(self.voice_dir))
        t = self.cfg.train
        if opts.batch_size:  # None: the config's batch size
            t.batch_size = int(opts.batch_size)
        if opts.max_steps is not None:
            t.max_steps = int(opts.max_steps)
        if opts.use_wavlm is None:  # None: the config's train.use_wavlm
            opts = dataclasses.replace(opts, use_wavlm=bool(t.use_wavlm))
        self.opts = opts
        self._oom_test = _test_oom()
        self.bf16 = bool(t.bf16_run)
        self.device = rt.device
        self.global_step = 0
        self.epoch = 1
        self.skip_batches = 0
        self.batches_done = 0
        self.losses = LossMeter(self.device)
        self.writer = None

    def log(self, line: str) -> None:
        self._log(line)

    def event(self, message: str, **fields) -> None:
        self._log(format_progress("train", step=self.global_step, epoch=self.epoch, message=message, **fields))

    def setup(self) -> None:
        """Check the lists, build everything, find the start point. Raises DataProblems / KoeError."""
        cfg, rt = self.cfg, self.rt
        problems = validate_lists(self.voice_dir, cfg)
        if problems:
            raise DataProblems(problems)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.train.seed)
        self.nets = build_networks(cfg, self.opts, self.device, self.log)
        self.data = build_data(self.voice_dir, cfg, rt, self.opts.num_workers, self.log)
        build_optimizers(self.nets, cfg, self.device)
        start = find_start(self.nets, self.models_dir, self.opts.base, cfg, rt.world_size, self.log)
        self.global_step, self.epoch, self.skip_batches = start.step, start.epoch, start.skip_batches
        if rt.distributed:
            wrap_ddp(self.nets, self.device)
        # Different ranks (and a resumed run) draw different slices and noise.
        torch.manual_seed(cfg.train.seed + 1000 * rt.rank + self.global_step)

    def train_step(self, batch) -> None:
        """One batch (spec §5.4 order); its loss values stay on the device in `losses` (no sync)."""
        if self._oom_test and self.global_step + 1 >= self._oom_test[0] and \
                self.cfg.train.batch_size > self._oom_test[1]:
            raise torch.OutOfMemoryError(f"out of memory (injected by {TEST_OOM_ENV} for a test)")
        self.losses.add(train_step(self.nets, batch, self.cfg, self.global_step, self.device, self.bf16))

    def run(self) -> TrainResult:
        self.setup()
        t = self.cfg.train
        max_steps = t.max_steps
        if max_steps is not None and self.global_step >= max_steps:
            self.log(f"already at step {self.global_step} >= max_steps {max_steps}: nothing to do")
            return TrainResult(self.global_step, self.epoch, "already_done", None, t.batch_size)
        start_step = self.global_step
        total = max_steps or (self.global_step + (t.epochs - self.epoch + 1) * self.data.batches_per_epoch
                              - self.skip_batches)
        self.meter = ProgressMeter("train", total=total, start=self.global_step)
        if self.rt.is_main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run wrote after the checkpoint we resume from.
            self.writer = SummaryWriter(str(self.logs_dir / "tensorboard"),
                                        purge_step=self.global_step + 1 if self.global_step else None)
            self.eval_samples = EvalSamples(self.data.val_set, self.cfg, self.device, self.writer,
                                            self.logs_dir / "eval")
        self.losses = LossMeter(self.device)
        self._last_log_time, self._last_log_step = time.monotonic(), self.global_step
        last_saved = None
        reason = "epochs"
        try:
            for model in self.nets.by_kind.values():
                if model is not None:
                    model.train()
            while self.epoch <= t.epochs:
                self.data.sampler.set_epoch(self.epoch, self.skip_batches)
                self.batches_done = self.data.sampler.skip_batches
                self.skip_batches = 0
                stop = None
                for batch in self.data.loader:
                    self.train_step(batch)
                    self.global_step += 1
                    self.batches_done += 1
                    step = self.global_step
                    if step % t.log_interval == 0:
                        self._log_step()
                    elif step % NONFINITE_LIMIT == 0:
                        self.losses.check_nonfinite(step)
                    if step % t.eval_interval == 0:
                        self.losses.check_nonfinite(step)
                        last_saved = self._save()
                        self._evaluate()
                        self._score(last_saved)
                    if max_steps is not None and step >= max_steps:
                        stop = "max_steps"
                    elif stop_requested(self.rt, self.stop):
                        stop = "signal"
                    if stop:
                        break
                if stop:
                    reason = stop
                    break
                with warnings.catch_warnings():
                    # An epoch resumed at its very end has no optimizer step before this one; that is fine.
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                    for sched in self.nets.schedulers.values():
                        sched.step()
                self.epoch += 1
            self.epoch = min(self.epoch, t.epochs)
            if self.global_step > start_step and (last_saved is None
                                                  or ckpts.checkpoint_step(last_saved) != self.global_step):
                self.losses.check_nonfinite(self.global_step)
                last_saved = self._save()
            if reason == "signal":
                self.event("stopped by signal", checkpoint=str(last_saved) if last_saved else None)
        finally:
            if self.writer is not None:
                self.writer.close()
        return TrainResult(self.global_step, self.epoch, reason, last_saved, t.batch_size)

    def _log_step(self) -> None:
        """The progress line and TensorBoard scalars for the steps since the last one."""
        self.losses.check_nonfinite(self.global_step)
        values, skipped = self.losses.take()
        now = time.monotonic()
        steps = self.global_step - self._last_log_step
        it_s = steps / max(now - self._last_log_time, 1e-9)
        self._last_log_time, self._last_log_step = now, self.global_step
        lr = self.nets.optims["G"].param_groups[0]["lr"]
        gpu_gb = 0.0
        if self.device.type == "cuda":
            gpu_gb = torch.cuda.max_memory_allocated(self.device) / 1e9
            torch.cuda.reset_peak_memory_stats(self.device)
        if not self.rt.is_main:
            return
        scalars = dict(zip(TB_SCALARS, values))
        scalars.update(dict(zip(EXTRA_SCALARS, (lr, it_s, gpu_gb))))
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, self.global_step)
        losses = {name[len("loss/"):]: round(v, 4) for name, v in scalars.items() if name.startswith("loss/")}
        if skipped:
            self.log(f"warning: {skipped} step(s) skipped since the last log line (NaN/inf loss or gradient)")
        self._log(self.meter.update(self.global_step, epoch=self.epoch, losses=losses, lr=lr,
                                    grad_norm={"g": round(values[10], 3), "d": round(values[11], 3)},
                                    skipped=skipped))

    def _save(self) -> Path | None:
        """Rank 0 writes D, DUR, WD, then G (a G file means its step's set is complete); rotates."""
        if not self.rt.is_main:
            return self.models_dir / f"G_{self.global_step}.pth"
        step, t, nets = self.global_step, self.cfg.train, self.nets
        self.writer.flush()  # the events up to this step are as durable as the checkpoint
        g_path = None
        for kind in ("D", "DUR", "WD", "G"):
            net = nets.by_kind[kind]
            if net is None:
                continue
            extra = {"param_names": nets.param_names(kind), "batches_done": self.batches_done,
                     "batch_size": t.batch_size, "world_size": self.rt.world_size}
            path = ckpts.save_checkpoint(self.models_dir / f"{kind}_{step}.pth", unwrap(net), nets.optims[kind],
                                         epoch=self.epoch, step=step, learning_rate=t.learning_rate,
                                         scheduler=nets.schedulers[kind],
                                         scaler=nets.scaler if kind == "G" else None, extra=extra)
            if kind == "G":
                g_path = path
        best = best_step(self.voice_dir)  # rotation never deletes the best-scored checkpoint
        ckpts.rotate_checkpoints(self.models_dir, t.keep_ckpts, protect=[best] if best is not None else [])
        self.event("checkpoint saved", checkpoint=str(g_path))
        return g_path

    def _evaluate(self) -> None:
        """Eval samples on rank 0; a failure is logged, not fatal (the checkpoint is already saved)."""
        if not self.rt.is_main:
            return
        model = unwrap(self.nets.g)
        try:
            folder = self.eval_samples.write(model, self.global_step)
        except (RuntimeError, OSError, KoeError) as exc:
            self.log(f"warning: eval at step {self.global_step} failed: {type(exc).__name__}: {exc}")
            model.train()
            return
        if folder is not None:
            self.event("eval", eval_dir=str(folder))

    def scoring_enabled(self) -> bool:
        """train.score_at_eval, where null means on when training on a GPU, off on the CPU."""
        wanted = self.cfg.train.score_at_eval
        return bool(self.device.type == "cuda" if wanted is None else wanted) and self.opts.scorer is not None

    def _score(self, g_path: Path | None) -> None:
        """Checkpoint scoring at an eval (rank 0): scores.json + score/* scalars; a failure is a warning."""
        if not self.rt.is_main or g_path is None or not self.scoring_enabled():
            return
        step = self.global_step
        try:
            result = self.opts.scorer(g_path, step)
        except KoeError as exc:  # says where and the fix
            self.log(f"warning: scoring step {step} failed: {exc} (training goes on)")
            return
        except (RuntimeError, OSError, ValueError) as exc:
            self.log(f"warning: scoring step {step} failed: {type(exc).__name__}: {exc} → run python -m "
                     "pipeline.score on the voice to see the full error, or set train.score_at_eval: false in "
                     "config.json to train without scoring (training goes on)")
            return
        for name in ("cer", "speaker_similarity", "score"):
            if result.get(name) is not None:
                self.writer.add_scalar(f"score/{name}", result[name], step)
        self.writer.flush()
        self.event("scored", score=result.get("score"), cer=result.get("cer"),
                   speaker_similarity=result.get("speaker_similarity"), best=result.get("best"))


def train(opts: TrainOptions, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train the voice in `opts.voice_dir` (one process, or one rank of a torchrun job).

    Takes TrainOptions and a `log` callback receiving text lines (progress lines included; only rank 0
    logs). Returns a TrainResult. Raises DataProblems (all bad list lines at once) before the first step,
    KoeError for other problems the user can fix (missing WavLM folder, checkpoint not fitting the config,
    10 non-finite steps in a row), VoiceBusy (a KoeError) when another run trains the voice.
    """
    log = log or (lambda _line: None)
    with StopRequest() as stop, TrainingLock(opts.voice_dir, log) as lock:
        rt = init_runtime(opts.device)
        lock.take(rt)  # one run per voice (vits/train/lock.py); raises VoiceBusy on every rank
        while True:
            trainer = Trainer(opts, rt, log, stop)
            try:
                result = trainer.run()
                break
            except torch.OutOfMemoryError:
                failed = (trainer.cfg.train.batch_size, trainer.global_step)
            # Outside the except block: the traceback (and the tensors its frames hold) is gone by now.
            del trainer
            gc.collect()
            if rt.device.type == "cuda":
                torch.cuda.empty_cache()
            opts = _half_batch_after_oom(opts, rt, *failed, log)
        # Only on success: after an error this rank just exits and torchrun stops the others.
        shutdown_runtime(rt)
        return result


def _half_batch_after_oom(opts: TrainOptions, rt: Runtime, batch_size: int, step: int,
                          log: Callable[[str], None]) -> TrainOptions:
    """The options for the retry at half the batch size; logs what happens. Raises KoeError when it cannot."""
    where = _device_name(rt.device)
    plan = plan_start(voice_folder.models_dir(Path(opts.voice_dir)), opts.base)
    restart = plan.describe()
    if batch_size <= 1:
        raise KoeError(f"{where}: out of memory at step {step + 1} even with batch size 1; training stopped "
                       f"(a new start would {restart})",
                       fix="turn off the WavLM discriminator, pick the small model preset, turn on bf16 "
                           "(Ampere or newer), close other programs on the GPU (nvidia-smi), or use a GPU "
                           "with more memory; then start the training again")
    if rt.distributed:
        raise KoeError(f"{where}: out of memory at step {step + 1} with batch size {batch_size} per process; "
                       "several processes cannot retry by themselves",
                       fix=f"set the batch size to {batch_size // 2} (Train tab or config.json train.batch_size) "
                           "and resume")
    half = batch_size // 2
    if rt.is_main:
        log(f"warning: {where}: out of memory at step {step + 1} with batch size {batch_size}; retrying at "
            f"batch size {half}: {restart}")
        log(format_progress("train", step=plan.step, message=f"out of memory: retrying at batch size {half}",
                            batch_size=half, failed_batch_size=batch_size))
    return dataclasses.replace(opts, batch_size=half)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return device.type.upper()
