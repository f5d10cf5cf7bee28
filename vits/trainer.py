"""The Bert-VITS2 2.3 training loop: one process or torchrun DDP, resume, fine-tuning, graceful stop.

Reads a prepared voice folder ``Data/<voice>/`` (configs/config.json, filelists/train.list + val.list,
wavs with ``.bert.pt`` next to them) and writes:

* ``models/G_<step>.pth``, ``D_<step>.pth``, ``DUR_<step>.pth``, ``WD_<step>.pth`` every ``eval_interval``
  steps, at ``--max-steps``, at the last epoch and when stopped by SIGTERM/SIGINT (Bert-VITS2 format plus
  our ``koe_*`` resume fields; the step in the name is the number of optimizer steps done). ``keep_ckpts``
  newest are kept; ``*_0.pth`` (the base model) is never deleted. No checkpoint is written at step 0.
* ``logs/tensorboard/``: TensorBoard events, scalars named in `TB_SCALARS`, eval audio and mel images.
* ``logs/eval/step_<step>/``: the eval clips as 16-bit wav files (``<i>_sdp0.wav``, ``<i>_sdp1.wav``,
  ``<i>_gt.wav``) and ``index.json`` (step, items with text, speaker and file names), for the studio.

Progress: one line per ``log_interval`` steps on stdout (rank 0), format of `vits.progress`::

    KOE_PROGRESS {"stage":"train","step":200,"total":10000,"it_s":3.1,"eta_s":3161.3,"epoch":4,
                  "losses":{"g/total":..,"g/mel":..,"g/kl":..,"g/dur":..,"g/fm":..,"g/gen":..,"g/wavlm":..,
                            "d/total":..,"d/dur":..,"d/wavlm":..},"lr":0.0002,"skipped":0}

``losses`` are means over the steps since the previous line (non-finite steps left out, counted in
``skipped``). ``g/gen`` = MPD + duration-discriminator adversarial terms, ``g/wavlm`` = WavLM feature +
adversarial terms, ``d/total`` = MPD + duration + WavLM discriminator losses. Other events print one
progress line with a ``message`` (``"checkpoint saved"`` with ``checkpoint``, ``"eval"`` with ``eval_dir``).

Step order per batch follows spec §5.4: MAS noise update → G forward → duration discriminator step →
MPD step → WavLM discriminator step → G step → scaler update. Non-finite steps are skipped by the
GradScaler (which also carries the bf16 path) without a per-step host sync; ten in a row stop training.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F

from vits import checkpoints as ckpts
from vits.config import VoiceConfig
from vits.data import (
    DistributedBucketSampler,
    TextAudioDataset,
    collate,
    loader_settings,
    validate_lists,
)
from vits.errors import KoeError
from vits.progress import ProgressMeter, format_progress

TB_SCALARS = (
    "loss/g/total", "loss/g/mel", "loss/g/kl", "loss/g/dur", "loss/g/fm", "loss/g/gen", "loss/g/wavlm",
    "loss/d/total", "loss/d/dur", "loss/d/wavlm", "grad_norm/g", "grad_norm/d",
)
EXTRA_SCALARS = ("learning_rate", "perf/steps_per_second", "perf/gpu_mem_gb")
NONFINITE_LIMIT = 10
EVAL_ITEMS = 4
KEEP_EVAL_DIRS = 10
# bf16 runs clip as Bert-VITS2 does (D 200, G 500); fp32 only measures the norm.
CLIP_D, CLIP_G = 200.0, 500.0


class DataProblems(KoeError):
    """The list files have problems; `problems` holds one `file:line: problem → fix` string each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the training lists:\n" + "\n".join(problems),
                         fix="fix the lines above (or re-run the text stage) and start training again")

    def __str__(self) -> str:
        return f"{len(self.problems)} problem(s) in the training lists:\n" + "\n".join(self.problems)


@dataclass
class TrainOptions:
    """What the user asked for; None means "from config.json / config.yml"."""

    voice_dir: Path
    max_steps: int | None = None
    batch_size: int | None = None
    base: Path | None = None
    wavlm: Path | None = None
    use_wavlm: bool = True
    device: str | None = None
    num_workers: int | None = None


@dataclass
class TrainResult:
    step: int
    epoch: int
    reason: str  # "max_steps", "epochs", "signal", "already_done"
    checkpoint: Path | None


@dataclass
class Runtime:
    """Where this process runs: rank, world size, device and process groups."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    distributed: bool = False
    control_group: object = None  # a gloo group for cheap CPU-side flags (stop requests)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_runtime(device: str | None = None) -> Runtime:
    """Set up the device and, under torchrun (WORLD_SIZE set), the process group.

    NCCL on CUDA (not Windows), gloo on CPU and Windows. Returns a Runtime.
    Raises KoeError when CUDA is asked for but not available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise KoeError(f"device {device!r} requested but CUDA is not available",
                           fix="use --device cpu, or install a CUDA build of PyTorch")
        dev = torch.device("cuda", local_rank) if (world > 1 or device == "cuda") else torch.device(device)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    rt = Runtime(rank, world, local_rank, local_world, dev, world > 1)
    if rt.distributed and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" and sys.platform != "win32" else "gloo"
        # A rank that dies makes torchrun stop the others; the timeout only bounds a true deadlock.
        dist.init_process_group(backend, timeout=timedelta(minutes=30),
                                device_id=dev if backend == "nccl" else None)
        rt.control_group = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD
    return rt


def shutdown_runtime(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, saves and exits. A second SIGINT aborts."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def _handle(self, signum, _frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a UI worker): no signal handling
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class PairedMPD(torch.nn.Module):
    """The MPD run once per sub-discriminator on [real; fake] stacked along the batch axis.

    Same outputs as `MultiPeriodDiscriminator.forward(y, y_hat)` (convolutions are per item), with half
    the weight-norm work and kernel launches. Holds the MPD as `.mpd`; checkpoints save that.
    """

    def __init__(self, mpd: torch.nn.Module):
        super().__init__()
        self.mpd = mpd

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        b = y.shape[0]
        both = torch.cat([y, y_hat.to(y.dtype)], dim=0)
        real, fake, fmap_real, fmap_fake = [], [], [], []
        for disc in self.mpd.discriminators:
            out, fmaps = disc(both)
            real.append(out[:b])
            fake.append(out[b:])
            fmap_real.append([f[:b] for f in fmaps])
            fmap_fake.append([f[b:] for f in fmaps])
        return real, fake, fmap_real, fmap_fake


def _duration_probabilities(dur_disc, hidden_x, x_mask, logw_, logw, logw_sdp, g):
    """(p_real, p_fake) [B,T_x,1]: the (logw_, logw) and (logw_, logw_sdp) runs added, done as one batch."""
    b = hidden_x.shape[0]
    p_r, p_g = dur_disc(torch.cat([hidden_x, hidden_x]), torch.cat([x_mask, x_mask]), torch.cat([logw_, logw_]),
                        torch.cat([logw, logw_sdp]), torch.cat([g, g]))
    p_r, p_g = p_r.float(), p_g.float()
    return p_r[:b] + p_r[b:], p_g[:b] + p_g[b:]


def _set_requires_grad(module: torch.nn.Module | None, flag: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


def _unwrap(module):
    return module.module if hasattr(module, "module") else module


def _grad_norm(params: list[torch.Tensor], clip: float | None) -> torch.Tensor:
    """Total L2 grad norm (a device tensor, no sync); clips to `clip` when given."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    return torch.nn.utils.get_total_norm(grads, foreach=True)


def _make_optimizer(params: list[torch.Tensor], cfg: VoiceConfig, device: torch.device) -> torch.optim.AdamW:
    t = cfg.train
    # fused: one kernel per step and, with the GradScaler, a skipped step needs no host sync.
    return torch.optim.AdamW(params, t.learning_rate, betas=tuple(t.betas), eps=t.eps, weight_decay=0.01,
                             fused=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict | None, names_now: list[str],
                         names_saved: list[str] | None, params_now: list[torch.Tensor]) -> str | None:
    """Restore AdamW state, matched by parameter name when the file recorded names.

    Toggling a freeze_* option changes which parameters the optimizer holds: state is then moved by name,
    and parameters new to the optimizer start fresh. Returns a warning string when (part of) the state
    was skipped, else None. Never raises for a state that does not fit.
    """
    if not saved or not isinstance(saved.get("state"), dict):
        return "no optimizer state in the checkpoint: the optimizer starts fresh"
    state = saved["state"]
    groups = saved.get("param_groups") or [{}]
    old_group = groups[0] if groups else {}
    if names_saved:
        index_of = {n: i for i, n in enumerate(names_saved)}
        mapping = {i: index_of.get(n) for i, n in enumerate(names_now)}
    else:
        if len(old_group.get("params", [])) != len(params_now):
            return ("the optimizer state was saved for a different set of parameters (a freeze_* option "
                    "changed?): the optimizer starts fresh")
        mapping = {i: i for i in range(len(params_now))}
    new_state, fresh = {}, 0
    for i, p in enumerate(params_now):
        j = mapping.get(i)
        entry = state.get(j, state.get(str(j))) if j is not None else None
        if entry is None:
            fresh += 1
            continue
        avg = entry.get("exp_avg")
        if avg is None or tuple(avg.shape) != tuple(p.shape):
            return "the optimizer state does not fit the network's parameters: the optimizer starts fresh"
        new_state[i] = entry
    group = dict(optimizer.state_dict()["param_groups"][0])
    for key in ("lr", "initial_lr"):
        if key in old_group:
            group[key] = old_group[key]
    try:
        optimizer.load_state_dict({"state": new_state, "param_groups": [group]})
    except (ValueError, KeyError, RuntimeError) as exc:
        return f"the optimizer state could not be restored ({exc}): the optimizer starts fresh"
    if fresh:
        return f"optimizer state for {fresh} parameter(s) not in the checkpoint (freeze_* changed?): those start fresh"
    return None


class Trainer:
    """One training run. Use `train()`; the class holds the state the loop needs."""

    def __init__(self, opts: TrainOptions, rt: Runtime, log: Callable[[str], None], stop: StopRequest):
        self.opts, self.rt, self.stop = opts, rt, stop
        self._log = log if rt.is_main else (lambda _line: None)
        self.voice_dir = Path(opts.voice_dir)
        self.models_dir = self.voice_dir / "models"
        self.logs_dir = self.voice_dir / "logs"
        self.cfg = VoiceConfig.load(self.voice_dir / "configs" / "config.json")
        t = self.cfg.train
        if opts.batch_size:
            t.batch_size = int(opts.batch_size)
        if opts.max_steps is not None:
            t.max_steps = int(opts.max_steps)
        self.bf16 = bool(t.bf16_run)
        self.device = rt.device
        self.global_step = 0
        self.epoch = 1
        self.skip_batches = 0
        self.batches_done = 0
        self._gt_logged = False

    def log(self, line: str) -> None:
        self._log(line)

    def event(self, message: str, **fields) -> None:
        self._log(format_progress("train", step=self.global_step, epoch=self.epoch, message=message, **fields))

    # ------------------------------------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, rt = self.cfg, self.rt
        problems = validate_lists(self.voice_dir, cfg)
        if problems:
            raise DataProblems(problems)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.train.seed)
        self._build_networks()
        self._build_data()
        self._build_optimizers()
        if not self._resume():
            self._load_base()
        if rt.distributed:
            self._wrap_ddp()
        # Different ranks (and a resumed run) draw different slices and noise.
        torch.manual_seed(cfg.train.seed + 1000 * rt.rank + self.global_step)

    def _build_networks(self) -> None:
        from vits.discriminators import build_discriminators
        from vits.models import build_generator

        cfg, dev = self.cfg, self.device
        self.net_g = build_generator(cfg).to(dev)
        self.wavlm = None
        if self.opts.use_wavlm:
            from vits.wavlm import WavLMFeatures, WavLMLoss

            if self.opts.wavlm is None:
                raise KoeError("no WavLM folder given", fix="pass --wavlm DIR, set wavlm in config.yml, "
                               "or train without the WavLM discriminator (--no-wavlm)")
            self.wavlm = WavLMLoss(WavLMFeatures(self.opts.wavlm, dev, cfg.data.sampling_rate, cfg.model.slm.sr))
            feats = self.wavlm.features
            if feats.channels != cfg.model.slm.hidden * cfg.model.slm.nlayers:
                raise KoeError(f"the WavLM model gives {feats.num_states} states of {feats.hidden_size} channels, "
                               f"config.json says slm.nlayers={cfg.model.slm.nlayers}, "
                               f"slm.hidden={cfg.model.slm.hidden}", where=str(self.opts.wavlm),
                               fix="use microsoft/wavlm-base-plus or set model.slm.hidden/nlayers to match")
            self.log(f"WavLM discriminator on ({self.opts.wavlm})")
        else:
            self.log("WavLM discriminator off (--no-wavlm): no WavLM losses, no WD_*.pth written")
        mpd, self.dur_disc, self.wd = build_discriminators(cfg)
        self.mpd = PairedMPD(mpd.to(dev))
        self.dur_disc = self.dur_disc.to(dev) if self.dur_disc is not None else None
        self.wd = self.wd.to(dev) if self.opts.use_wavlm else None
        t = cfg.train
        frozen = []
        for flag, prefix in ((t.freeze_ZH_bert, "enc_p.bert_proj"), (t.freeze_JP_bert, "enc_p.ja_bert_proj"),
                             (t.freeze_EN_bert, "enc_p.en_bert_proj"), (t.freeze_decoder, "dec.")):
            if flag:
                frozen.append(prefix.rstrip("."))
                for name, p in self.net_g.named_parameters():
                    if name.startswith(prefix):
                        p.requires_grad_(False)
        if frozen:
            self.log(f"frozen: {', '.join(frozen)}")

    def _build_data(self) -> None:
        cfg, rt = self.cfg, self.rt
        self.train_set = TextAudioDataset(self.voice_dir, cfg.data.training_files, cfg)
        self.val_set = TextAudioDataset(self.voice_dir, cfg.data.validation_files, cfg, shuffle=False)
        self.sampler = DistributedBucketSampler(self.train_set.lengths, cfg.train.batch_size,
                                                num_replicas=rt.world_size, rank=rt.rank)
        if self.sampler.dropped:
            self.log(f"{self.sampler.dropped} clip(s) outside 0.4-11.6 s left out of training")
        requested = self.opts.num_workers
        if requested is None:
            requested = getattr(cfg.train, "num_workers", None)
        kwargs = loader_settings(self.device, rt.local_world_size, requested)
        self.loader = torch.utils.data.DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate,
                                                  **kwargs)
        self.batches_per_epoch = self.sampler.num_batches
        self.log(f"data: {len(self.train_set)} training clips, {self.batches_per_epoch} batches of "
                 f"{cfg.train.batch_size} per epoch per process, {rt.world_size} process(es), "
                 f"{kwargs['num_workers']} loader worker(s)")

    def _g_params(self) -> tuple[list[str], list[torch.Tensor]]:
        named = [(n, p) for n, p in self.net_g.named_parameters() if p.requires_grad]
        return [n for n, _ in named], [p for _, p in named]

    def _build_optimizers(self) -> None:
        cfg, dev = self.cfg, self.device
        self.g_names, self.g_params = self._g_params()
        self.nets = {"G": self.net_g, "D": self.mpd.mpd, "DUR": self.dur_disc, "WD": self.wd}
        self.optims = {"G": _make_optimizer(self.g_params, cfg, dev)}
        for kind in ("D", "DUR", "WD"):
            if self.nets[kind] is not None:
                self.optims[kind] = _make_optimizer(list(self.nets[kind].parameters()), cfg, dev)
        self.schedulers = {k: torch.optim.lr_scheduler.ExponentialLR(o, cfg.train.lr_decay)
                           for k, o in self.optims.items()}
        # Scale stays 1.0 (it only halves after a non-finite step); the scaler is our sync-free step skipper.
        self.scaler = torch.amp.GradScaler(dev.type, init_scale=1.0, growth_interval=1 << 30)

    def _resume(self) -> bool:
        """Load the newest complete checkpoint set above step 0. Returns False when there is none."""
        found = ckpts.latest_checkpoints(self.models_dir)
        if found is None or found[0] == 0:
            return False
        step, paths = found
        ckpt_g = ckpts.read_checkpoint(paths["G"])
        ckpts.load_weights(self.net_g, ckpt_g, kind="G")
        epoch, step = ckpts.checkpoint_epoch_step(ckpt_g, paths["G"])
        extra = ckpt_g.get("koe_extra") or {}
        skip_opt = ckpt_g.get("koe_step") is None and self.cfg.train.skip_optimizer
        notes = []
        for kind, net in self.nets.items():
            if net is None:
                continue
            if kind == "G":
                ckpt = ckpt_g
            elif paths.get(kind) is None:
                notes.append(f"no {kind}_{step}.pth: the {kind} network starts from scratch")
                continue
            else:
                ckpt = ckpts.read_checkpoint(paths[kind])
                ckpts.load_weights(net, ckpt, kind=kind)
            if skip_opt:
                continue
            names_now = self.g_names if kind == "G" else [n for n, _ in net.named_parameters()]
            params_now = self.g_params if kind == "G" else list(net.parameters())
            names_saved = (ckpt.get("koe_extra") or {}).get("param_names")
            warn = load_optimizer_state(self.optims[kind], ckpt.get("optimizer"), names_now, names_saved,
                                        params_now)
            if warn:
                notes.append(f"{kind}: {warn}")
            if ckpt.get("koe_scheduler") is not None:
                try:
                    self.schedulers[kind].load_state_dict(ckpt["koe_scheduler"])
                except (KeyError, ValueError, TypeError):
                    notes.append(f"{kind}: learning-rate schedule not restored; recomputed from the epoch")
        if ckpt_g.get("koe_scaler"):
            try:
                self.scaler.load_state_dict(ckpt_g["koe_scaler"])
            except (KeyError, ValueError, RuntimeError):
                notes.append("GradScaler state not restored")
        self._set_epoch_lr(epoch)
        for w in notes:
            self.log(f"warning: {w}")
        self.global_step, self.epoch = step, epoch
        same_shape = (extra.get("batch_size") == self.cfg.train.batch_size
                      and extra.get("world_size") == self.rt.world_size)
        # Mid-epoch resume skips the batches already seen, but only when the batching is unchanged.
        self.skip_batches = int(extra.get("batches_done", 0)) if same_shape else 0
        if self.opts.base is not None:
            self.log("warning: resuming this voice's own checkpoints; --base is only used for a fresh start")
        self.log(f"resumed from {paths['G'].name}: step {step}, epoch {epoch}"
                 + (f", {self.skip_batches} batch(es) of this epoch already done" if self.skip_batches else ""))
        return True

    def _set_epoch_lr(self, epoch: int) -> None:
        """lr(epoch) = lr0 · gamma^(epoch-1) (spec §5.4), whatever state the optimizer file had."""
        t = self.cfg.train
        for kind, opt in self.optims.items():
            sched = self.schedulers[kind]
            gamma = getattr(sched, "gamma", t.lr_decay)
            for group in opt.param_groups:
                group["initial_lr"] = t.learning_rate
                group["lr"] = t.learning_rate * gamma ** (epoch - 1)
            sched.base_lrs = [t.learning_rate for _ in opt.param_groups]
            sched.last_epoch = epoch - 1
            sched._last_lr = [g["lr"] for g in opt.param_groups]

    def _base_files(self) -> tuple[Path, dict[str, Path | None]] | None:
        """Base model files: --base (folder or G file), else models/*_0.pth. None when there are none."""
        base = self.opts.base
        if base is None:
            found = ckpts.latest_checkpoints(self.models_dir)
            if found is None:
                return None
            return self.models_dir, found[1]
        base = Path(base)
        if base.is_file():
            step = ckpts.checkpoint_step(base)
            return base.parent, {k: (base.parent / f"{k}_{step}.pth") if (base.parent / f"{k}_{step}.pth").is_file()
                                 else None for k in ckpts.KINDS} | {"G": base}
        found = ckpts.latest_checkpoints(base)
        if found is None:
            raise KoeError("no G_*.pth base model in this folder", where=str(base),
                           fix="put the base model files (G_0.pth, D_0.pth, DUR_0.pth, WD_0.pth) there")
        return base, found[1]

    def _load_base(self) -> None:
        files = self._base_files()
        if files is None:
            self.log("no base model: training from scratch")
            return
        folder, paths = files
        parts, notes = [], []
        for kind in ("G", "D", "DUR", "WD"):
            net = self.nets[kind]
            if net is None:
                continue
            path = paths.get(kind)
            if path is None:
                parts.append(f"0 of {len(net.state_dict())} for {kind}")
                notes.append(f"no {kind} file in the base model: {kind} trained from scratch")
                continue
            report = ckpts.load_weights(net, path, kind=kind, partial=True)
            parts.append(f"{report.loaded} of {report.total} for {kind}")
            notes.extend(f"{kind}: {m}" for m in report.messages)
        first = parts[0].replace(" for ", " tensors for ", 1)
        self.log(f"base model: loaded {', '.join([first] + parts[1:])} (from {folder})")
        for note in notes:
            self.log(f"  {note}")

    def _wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.net_g = DDP(self.net_g, device_ids=ids)
        self.mpd = DDP(self.mpd, device_ids=ids)
        if self.dur_disc is not None:
            self.dur_disc = DDP(self.dur_disc, device_ids=ids)
        if self.wd is not None:
            self.wd = DDP(self.wd, device_ids=ids)

    # --------------------------------------------------------------------------------------- the loop

    def run(self) -> TrainResult:
        self.setup()
        t = self.cfg.train
        max_steps = t.max_steps
        if max_steps is not None and self.global_step >= max_steps:
            self.log(f"already at step {self.global_step} >= max_steps {max_steps}: nothing to do")
            return TrainResult(self.global_step, self.epoch, "already_done", None)
        start_step = self.global_step
        total = max_steps or (self.global_step + (t.epochs - self.epoch + 1) * self.batches_per_epoch
                              - self.skip_batches)
        self.meter = ProgressMeter("train", total=total, start=self.global_step)
        self.writer = None
        if self.rt.is_main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run wrote after the checkpoint we resume from.
            self.writer = SummaryWriter(str(self.logs_dir / "tensorboard"),
                                        purge_step=self.global_step + 1 if self.global_step else None)
        self._reset_accumulators()
        self._last_log_time, self._last_log_step = time.monotonic(), self.global_step
        self._streak = torch.zeros((), device=self.device)
        self._worst = torch.zeros((), device=self.device)
        last_saved = None
        reason = "epochs"
        try:
            for model in self.nets.values():
                if model is not None:
                    model.train()
            while self.epoch <= t.epochs:
                self.sampler.set_epoch(self.epoch, self.skip_batches)
                self.batches_done = self.sampler.skip_batches
                self.skip_batches = 0
                stop = None
                for batch in self.loader:
                    self.train_step(batch)
                    self.global_step += 1
                    self.batches_done += 1
                    step = self.global_step
                    if step % t.log_interval == 0:
                        self._log_step()
                    elif step % NONFINITE_LIMIT == 0:
                        self._check_nonfinite()
                    if step % t.eval_interval == 0:
                        self._check_nonfinite()
                        last_saved = self._save()
                        self._evaluate()
                    if max_steps is not None and step >= max_steps:
                        stop = "max_steps"
                    elif self._stop_requested():
                        stop = "signal"
                    if stop:
                        break
                if stop:
                    reason = stop
                    break
                with warnings.catch_warnings():
                    # An epoch resumed at its very end has no optimizer step before this one; that is fine.
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                    for sched in self.schedulers.values():
                        sched.step()
                self.epoch += 1
            self.epoch = min(self.epoch, t.epochs)
            if self.global_step > start_step and (last_saved is None
                                                  or ckpts.checkpoint_step(last_saved) != self.global_step):
                self._check_nonfinite()
                last_saved = self._save()
            if reason == "signal":
                self.event("stopped by signal", checkpoint=str(last_saved) if last_saved else None)
        finally:
            if self.writer is not None:
                self.writer.close()
        return TrainResult(self.global_step, self.epoch, reason, last_saved)

    def _stop_requested(self) -> bool:
        """True on every rank once any rank got SIGTERM/SIGINT (one tiny CPU all-reduce per step)."""
        if not self.rt.distributed:
            return self.stop.requested
        flag = torch.tensor([1 if self.stop.requested else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.rt.control_group)
        return bool(flag.item())

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _optimizer_step(self, kind: str, loss: torch.Tensor, params, clip: float) -> torch.Tensor:
        opt = self.optims[kind]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        norm = _grad_norm(params, clip if self.bf16 else None)
        self.scaler.step(opt)
        return norm

    def train_step(self, batch) -> None:
        """One batch in the spec §5.4 order. Leaves detached loss values in the accumulators (no sync)."""
        cfg, d = self.cfg, self.cfg.data
        dev = self.device
        (x, x_len, spec, spec_len, wav, _wav_len, sid, tone, lang, bert, ja_bert, en_bert) = (
            t.to(dev, non_blocking=True) for t in batch)
        g_model = _unwrap(self.net_g)
        if g_model.use_noise_scaled_mas:
            g_model.current_mas_noise_scale = max(
                g_model.mas_noise_scale_initial - g_model.noise_scale_delta * self.global_step, 0.0)
        with self._autocast():
            (y_hat, l_length, _attn, ids_slice, x_mask, z_mask, (_z, z_p, m_p, logs_p, _m_q, logs_q),
             (hidden_x, logw, logw_, logw_sdp), g) = self.net_g(x, x_len, spec, spec_len, sid, tone, lang,
                                                                 bert, ja_bert, en_bert)
        from vits.commons import slice_segments
        from vits.losses import (
            discriminator_loss,
            duration_discriminator_loss,
            duration_generator_loss,
            feature_loss,
            generator_loss,
            kl_loss,
        )
        from vits.mel import mel_spectrogram, spec_to_mel

        frames = cfg.segment_frames
        # The mel is frame-wise, so slicing the spectrogram first gives the same y_mel for less work.
        y_mel = spec_to_mel(slice_segments(spec, ids_slice, frames), d.filter_length, d.n_mel_channels,
                            d.sampling_rate, d.mel_fmin, d.mel_fmax)
        y_hat = y_hat.float()
        y_hat_mel = mel_spectrogram(y_hat.squeeze(1), d.filter_length, d.n_mel_channels, d.sampling_rate,
                                    d.hop_length, d.win_length, d.mel_fmin, d.mel_fmax)
        y = slice_segments(wav, ids_slice * d.hop_length, cfg.train.segment_size)
        zero = torch.zeros((), device=dev)

        h_real = h_fake = None
        if self.wavlm is not None:
            with self._autocast():
                h_real = self.wavlm.hidden_real(y)
                h_fake = self.wavlm.hidden_fake(y_hat)

        # Discriminators: duration, MPD, WavLM (each on detached generator outputs).
        loss_dur_disc = zero
        if self.dur_disc is not None:
            with self._autocast():
                p_r, p_g = _duration_probabilities(self.dur_disc, hidden_x.detach(), x_mask.detach(),
                                                   logw_.detach(), logw.detach(), logw_sdp.detach(), g.detach())
            loss_dur_disc = duration_discriminator_loss(p_r, p_g)[0]
            self._optimizer_step("DUR", loss_dur_disc, list(self.dur_disc.parameters()), CLIP_D)
        with self._autocast():
            y_d_r, y_d_g, _, _ = self.mpd(y, y_hat.detach())
        loss_disc = discriminator_loss(y_d_r, y_d_g)[0]
        grad_norm_d = self._optimizer_step("D", loss_disc, list(self.mpd.parameters()), CLIP_D)
        loss_wd = zero
        if self.wavlm is not None:
            with self._autocast():
                loss_wd = self.wavlm.discriminator(self.wd, h_real, h_fake)
            self._optimizer_step("WD", loss_wd.float(), list(self.wd.parameters()), CLIP_D)

        # Generator: discriminators frozen (their grads are not needed) and called without DDP hooks.
        mpd, dur_disc, wd = _unwrap(self.mpd), _unwrap(self.dur_disc), _unwrap(self.wd)
        for net in (mpd, dur_disc, wd):
            _set_requires_grad(net, False)
        try:
            with self._autocast():
                _, y_d_g, fmap_r, fmap_g = mpd(y, y_hat)
                loss_dur_gen = zero
                if dur_disc is not None:
                    _, p_g = _duration_probabilities(dur_disc, hidden_x, x_mask, logw_, logw, logw_sdp, g)
                loss_lm = loss_lm_gen = zero
                if self.wavlm is not None:
                    loss_lm, loss_lm_gen = self.wavlm.generator(wd, h_real, h_fake)
            if dur_disc is not None:
                loss_dur_gen = duration_generator_loss(p_g)[0]
            t = cfg.train
            loss_dur = torch.sum(l_length.float())
            loss_mel = F.l1_loss(y_mel, y_hat_mel) * t.c_mel
            loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * t.c_kl
            loss_fm = feature_loss(fmap_r, fmap_g)
            loss_gen = generator_loss(y_d_g)[0]
            loss_g = loss_gen + loss_fm + loss_mel + loss_dur + loss_kl + loss_lm + loss_lm_gen + loss_dur_gen
            grad_norm_g = self._optimizer_step("G", loss_g, self.g_params, CLIP_G)
        finally:
            for net in (mpd, dur_disc, wd):
                _set_requires_grad(net, True)
        self.scaler.update()

        loss_d = loss_disc + loss_dur_disc + loss_wd
        values = torch.stack([loss_g, loss_mel, loss_kl, loss_dur, loss_fm, loss_gen + loss_dur_gen,
                              loss_lm + loss_lm_gen, loss_d, loss_dur_disc, loss_wd,
                              grad_norm_g.to(dev), grad_norm_d.to(dev)]).detach().float()
        finite = torch.isfinite(values).all()
        self._acc += torch.where(finite, values, torch.zeros_like(values))
        self._acc_n += finite.float()
        self._acc_steps += 1
        self._streak = (self._streak + 1) * (~finite).float()
        self._worst = torch.maximum(self._worst, self._streak)

    # -------------------------------------------------------------------------------- logging & saving

    def _reset_accumulators(self) -> None:
        self._acc = torch.zeros(len(TB_SCALARS), device=self.device)
        self._acc_n = torch.zeros((), device=self.device)
        self._acc_steps = 0

    def _check_nonfinite(self) -> None:
        """Stop when NONFINITE_LIMIT steps in a row were skipped (one sync, every few steps)."""
        if self._worst.item() >= NONFINITE_LIMIT:
            raise KoeError(f"{NONFINITE_LIMIT} training steps in a row had NaN/inf losses or gradients; "
                           f"training stopped at step {self.global_step} (the last checkpoint is intact)",
                           fix="lower train.learning_rate, turn off train.bf16_run, or check the clips "
                               "(silence, clipping) and resume")

    def _log_step(self) -> None:
        self._check_nonfinite()
        stats = torch.cat([self._acc, self._acc_n.view(1)]).tolist()
        n_ok = stats[-1]
        values = [v / n_ok if n_ok else float("nan") for v in stats[:-1]]
        skipped = self._acc_steps - int(round(n_ok))
        now = time.monotonic()
        steps = self.global_step - self._last_log_step
        it_s = steps / max(now - self._last_log_time, 1e-9)
        self._last_log_time, self._last_log_step = now, self.global_step
        lr = self.optims["G"].param_groups[0]["lr"]
        gpu_gb = 0.0
        if self.device.type == "cuda":
            gpu_gb = torch.cuda.max_memory_allocated(self.device) / 1e9
            torch.cuda.reset_peak_memory_stats(self.device)
        self._reset_accumulators()
        if not self.rt.is_main:
            return
        scalars = dict(zip(TB_SCALARS, values))
        scalars.update({"learning_rate": lr, "perf/steps_per_second": it_s, "perf/gpu_mem_gb": gpu_gb})
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
        step, t = self.global_step, self.cfg.train
        self.writer.flush()  # the events up to this step are as durable as the checkpoint
        g_path = None
        for kind in ("D", "DUR", "WD", "G"):
            net = self.nets[kind]
            if net is None:
                continue
            names = self.g_names if kind == "G" else [n for n, _ in _unwrap(net).named_parameters()]
            extra = {"param_names": names, "batches_done": self.batches_done, "batch_size": t.batch_size,
                     "world_size": self.rt.world_size}
            path = ckpts.save_checkpoint(self.models_dir / f"{kind}_{step}.pth", _unwrap(net), self.optims[kind],
                                         epoch=self.epoch, step=step, learning_rate=t.learning_rate,
                                         scheduler=self.schedulers[kind],
                                         scaler=self.scaler if kind == "G" else None, extra=extra)
            if kind == "G":
                g_path = path
        ckpts.rotate_checkpoints(self.models_dir, t.keep_ckpts)
        self.event("checkpoint saved", checkpoint=str(g_path))
        return g_path

    def _evaluate(self) -> None:
        """Eval on rank 0; a failure is logged, not fatal (the checkpoint is already saved)."""
        if not self.rt.is_main:
            return
        try:
            self._synthesize_eval()
        except (RuntimeError, OSError, KoeError) as exc:
            self.log(f"warning: eval at step {self.global_step} failed: {type(exc).__name__}: {exc}")
            _unwrap(self.net_g).train()

    @torch.no_grad()
    def _synthesize_eval(self) -> None:
        """Rank 0 synthesizes the first val clips (sdp_ratio 0 and 1) into TensorBoard and logs/eval/."""
        if not self.rt.is_main or len(self.val_set) == 0:
            return
        import soundfile

        from vits.mel import mel_spectrogram, spec_to_mel

        d = self.cfg.data
        model = _unwrap(self.net_g)
        model.eval()
        step = self.global_step
        eval_root = self.logs_dir / "eval"
        eval_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=eval_root, prefix=f".step_{step:08d}."))
        index = {"step": step, "sampling_rate": d.sampling_rate, "items": []}
        try:
            for i in range(min(EVAL_ITEMS, len(self.val_set))):
                utt = self.val_set.items[i]
                (x, x_len, spec, _spec_len, wav, wav_len, sid, tone, lang, bert, ja_bert, en_bert) = (
                    t.to(self.device) for t in collate([self.val_set[i]]))
                files = {}
                gt = wav[0, 0, : int(wav_len[0])].cpu().numpy()
                soundfile.write(tmp / f"{i:02d}_gt.wav", gt, d.sampling_rate, subtype="PCM_16")
                files["gt"] = f"{i:02d}_gt.wav"
                if not self._gt_logged:
                    self.writer.add_audio(f"eval/{i}/gt", torch.from_numpy(gt)[None], step, d.sampling_rate)
                    gt_mel = spec_to_mel(spec, d.filter_length, d.n_mel_channels, d.sampling_rate, d.mel_fmin,
                                         d.mel_fmax)[0]
                    self.writer.add_image(f"eval/{i}/mel_gt", _mel_image(gt_mel), step, dataformats="HWC")
                for ratio in (0.0, 1.0):
                    o = model.infer(x, x_len, sid, tone, lang, bert, ja_bert, en_bert, y=spec, max_len=1000,
                                    sdp_ratio=ratio)[0]
                    audio = o[0, 0].float().clamp(-1, 1).cpu()
                    tag = f"sdp{int(ratio)}"
                    name = f"{i:02d}_{tag}.wav"
                    soundfile.write(tmp / name, audio.numpy(), d.sampling_rate, subtype="PCM_16")
                    files[tag] = name
                    self.writer.add_audio(f"eval/{i}/{tag}", audio[None], step, d.sampling_rate)
                    mel = mel_spectrogram(audio[None].to(self.device), d.filter_length, d.n_mel_channels,
                                          d.sampling_rate, d.hop_length, d.win_length, d.mel_fmin, d.mel_fmax)[0]
                    self.writer.add_image(f"eval/{i}/mel_{tag}", _mel_image(mel), step, dataformats="HWC")
                index["items"].append({"speaker": utt.speaker, "language": utt.language, "text": utt.text,
                                       "files": files})
            self._gt_logged = True
            (tmp / "index.json").write_text(json.dumps(index, ensure_ascii=False, indent=1), encoding="utf-8")
            final = eval_root / f"step_{step:08d}"
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            model.train()
        old = sorted(p for p in eval_root.glob("step_*") if p.is_dir())
        for p in old[:-KEEP_EVAL_DIRS]:
            shutil.rmtree(p, ignore_errors=True)
        self.writer.flush()
        self.event("eval", eval_dir=str(final))


def _mel_image(mel: torch.Tensor) -> np.ndarray:
    """A log-mel [n_mels, T] as an RGB uint8 image (low frequencies at the bottom), no matplotlib needed."""
    m = mel.float().cpu().numpy()
    lo, hi = float(m.min()), float(m.max())
    v = (m - lo) / (hi - lo + 1e-9)
    v = v[::-1]
    # A small dark-blue -> yellow ramp.
    r = np.clip(1.5 * v - 0.25, 0, 1)
    g = np.clip(1.2 * v - 0.1, 0, 1) ** 1.2
    b = np.clip(0.6 - 0.8 * np.abs(v - 0.35), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def train(opts: TrainOptions, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train the voice in `opts.voice_dir` (one process, or one rank of a torchrun job).

    Takes TrainOptions and a `log` callback receiving text lines (progress lines included; only rank 0
    logs). Returns a TrainResult. Raises DataProblems (all bad list lines at once) before the first step,
    KoeError for other problems the user can fix (missing WavLM folder, checkpoint not fitting the config,
    10 non-finite steps in a row).
    """
    log = log or (lambda _line: None)
    with StopRequest() as stop:
        rt = init_runtime(opts.device)
        result = Trainer(opts, rt, log, stop).run()
        # Only on success: after an error this rank just exits and torchrun stops the others.
        shutdown_runtime(rt)
        return result
