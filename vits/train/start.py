"""Where a run starts: resume this voice's newest checkpoint set, else fine-tune from a base model, else scratch.

This is the one place that decides what comes back on a resume (spec §5.4, docs/training.md):

* weights of G, D, DUR, WD from the newest intact set above step 0 (every file CRC-checked and free of
  NaN/inf, else the next older set, with a warning naming the bad file; strict: they must fit the config);
* optimizer state matched by parameter name (``koe_extra.param_names``), so toggling a freeze_* option
  never crashes: parameters new to an optimizer start fresh, and a state that does not fit is dropped
  with a warning instead of stopping the run; Bert-VITS2's own files (no ``koe_step``) skip it when
  ``train.skip_optimizer`` is true;
* the LR schedule and the GradScaler from our ``koe_*`` fields when present, then the learning rate set
  from the epoch (lr0 · gamma^(epoch-1)) whatever the file held;
* step, epoch, and the batches of a half-done epoch to skip (only when batch size and world size are
  unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from vits import checkpoints as ckpts
from vits.config import VoiceConfig
from vits.train.plan import RESUME, base_files, plan_start
from vits.train.setup import Networks


@dataclass
class StartPoint:
    """Global step and epoch the run continues from, and the batches of that epoch already done."""

    step: int = 0
    epoch: int = 1
    skip_batches: int = 0


def find_start(nets: Networks, models_dir: Path, base: Path | None, cfg: VoiceConfig, world_size: int,
               log: Callable[[str], None]) -> StartPoint:
    """Resume from `models_dir`, else load the base model (`base`, or ``models/*_0.pth``), else from scratch.

    Logs what it did (one line, plus one per warning). Raises KoeError when a checkpoint does not fit the
    networks, or `base` is a folder without a G file.
    """
    plan = plan_start(models_dir, base)  # the same rule the Train tab shows (vits/train/plan.py)
    if plan.kind == RESUME:
        return resume(nets, models_dir, cfg, world_size, log, base=base)
    load_base(nets, models_dir, base, log)
    return StartPoint()


def resume(nets: Networks, models_dir: Path, cfg: VoiceConfig, world_size: int, log: Callable[[str], None],
           base: Path | None = None) -> StartPoint | None:
    """Load the newest intact checkpoint set above step 0. Returns None when there is none.

    Every file of the set is verified first (CRC-32, NaN/inf: `checkpoints.newest_intact_set`); a newer
    set with a damaged file is passed over, named in a warning, for the next older one. `base` only makes
    it warn that a given base model is not used. Raises DamagedCheckpoint when no set is intact.
    """
    plan = plan_start(models_dir, None)
    if plan.kind != RESUME:
        return None
    found = ckpts.newest_intact_set(models_dir, [kind for kind, net in nets.by_kind.items() if net is not None])
    if found is None:
        return None
    paths = found.paths
    for path, why in found.damaged:
        log(f"warning: {path} is damaged and was not loaded: {why}")
    if found.damaged:
        log(f"warning: loaded the older set {paths['G'].name} (step {found.step}) instead; the damaged files "
            "are left in models/ (delete them, or restore them from a backup)")
    ckpt_g = found.checkpoints["G"]
    ckpts.load_weights(nets.by_kind["G"], ckpt_g, kind="G")
    epoch, step = ckpts.checkpoint_epoch_step(ckpt_g, paths["G"])
    extra = ckpt_g.get("koe_extra") or {}
    skip_opt = ckpt_g.get("koe_step") is None and cfg.train.skip_optimizer
    notes = []
    for kind, net in nets.by_kind.items():
        if net is None:
            continue
        if kind == "G":
            ckpt = ckpt_g
        elif paths.get(kind) is None:
            notes.append(f"no {kind}_{step}.pth: the {kind} network starts from scratch")
            continue
        else:
            ckpt = found.checkpoints[kind]
            ckpts.load_weights(net, ckpt, kind=kind)
        if skip_opt:
            continue
        notes += [f"{kind}: {w}" for w in restore_optimizer(nets.optims[kind], nets.schedulers[kind], ckpt,
                                                            nets.param_names(kind), nets.params(kind))]
    notes += restore_scaler(nets.scaler, ckpt_g)
    set_epoch_lr(nets, cfg, epoch)
    for w in notes:
        log(f"warning: {w}")
    same_shape = extra.get("batch_size") == cfg.train.batch_size and extra.get("world_size") == world_size
    # Mid-epoch resume skips the batches already seen, but only when the batching is unchanged.
    skip_batches = int(extra.get("batches_done", 0)) if same_shape else 0
    if base is not None:
        log("warning: resuming this voice's own checkpoints; --base is only used for a fresh start")
    log(f"resumed from {paths['G'].name}: step {step}, epoch {epoch}"
        + (f", {skip_batches} batch(es) of this epoch already done" if skip_batches else ""))
    return StartPoint(step, epoch, skip_batches)


def restore_optimizer(optimizer: torch.optim.Optimizer, scheduler, ckpt: Mapping, names_now: list[str],
                      params_now: list[torch.Tensor]) -> list[str]:
    """Put one network's optimizer state (by parameter name) and LR-scheduler state back from `ckpt`.

    Returns the warnings (empty when everything came back). Never raises for a state that does not fit.
    """
    notes = []
    names_saved = (ckpt.get("koe_extra") or {}).get("param_names")
    warn = load_optimizer_state(optimizer, ckpt.get("optimizer"), names_now, names_saved, params_now)
    if warn:
        notes.append(warn)
    if scheduler is not None and ckpt.get("koe_scheduler") is not None:
        try:
            scheduler.load_state_dict(ckpt["koe_scheduler"])
        except (KeyError, ValueError, TypeError):
            notes.append("learning-rate schedule not restored; recomputed from the epoch")
    return notes


def restore_scaler(scaler: torch.amp.GradScaler | None, ckpt: Mapping) -> list[str]:
    """Put the GradScaler state back from a G checkpoint's ``koe_scaler``; returns the warnings."""
    if scaler is None or not ckpt.get("koe_scaler"):
        return []
    try:
        scaler.load_state_dict(ckpt["koe_scaler"])
    except (KeyError, ValueError, RuntimeError):
        return ["GradScaler state not restored"]
    return []


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


def set_epoch_lr(nets: Networks, cfg: VoiceConfig, epoch: int) -> None:
    """lr(epoch) = lr0 · gamma^(epoch-1) (spec §5.4), whatever state the optimizer file had."""
    t = cfg.train
    for kind, opt in nets.optims.items():
        sched = nets.schedulers[kind]
        gamma = getattr(sched, "gamma", t.lr_decay)
        for group in opt.param_groups:
            group["initial_lr"] = t.learning_rate
            group["lr"] = t.learning_rate * gamma ** (epoch - 1)
        sched.base_lrs = [t.learning_rate for _ in opt.param_groups]
        sched.last_epoch = epoch - 1
        sched._last_lr = [g["lr"] for g in opt.param_groups]


def load_base(nets: Networks, models_dir: Path, base: Path | None, log: Callable[[str], None]) -> None:
    """Fine-tune start: partial-load every base-model file that exists (logged per network and tensor)."""
    files = base_files(models_dir, base)
    if files is None:
        log("no base model: training from scratch")
        return
    folder, paths = files
    parts, notes = [], []
    for kind in ckpts.KINDS:
        net = nets.by_kind[kind]
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
    log(f"base model: loaded {', '.join([first] + parts[1:])} (from {folder})")
    for note in notes:
        log(f"  {note}")
