"""The Train tab's settings as the voice's ``configs/config.json`` holds them, and what the next run will do.

The file owns every setting: the tab shows `load_fields`, and on Start/Resume writes back only the fields
the user changed on the page (`changed_fields` against what was loaded, applied to the file as it is then
by `write_changes`), so a value another tab or a job wrote in the meantime is kept. `start_plan` is the
trainer's own rule (`vits.train.plan`), so "resume at step N" on the page is what the run does.
"""

from __future__ import annotations

import os
from pathlib import Path

from prep.voice_version import voice_version
from settings import Settings
from vits.config import VoiceConfig, apply_model_preset, model_preset
from vits.errors import KoeError
from vits.train.plan import BASE, RESUME, StartPlan, checkpoint_position, default_base, plan_start
from vits.voice_folder import config_path, list_checkpoints, models_dir

FREEZE = {"ZH BERT projection": "freeze_ZH_bert", "JP BERT projection": "freeze_JP_bert",
          "EN BERT projection": "freeze_EN_bert", "decoder": "freeze_decoder"}
MODEL_SIZES = {
    "full": "Bert-VITS2 2.3 (full size: real voices, base models)",
    "small": "small: for trying the workflow, not for quality (CPU-friendly, no base model)",
    "custom": "custom (config.json edited by hand)",
}
# The Train tab's fields that live in config.json, in the order of the tab's inputs.
FIELDS = ("batch_size", "epochs", "max_steps", "eval_interval", "log_interval", "learning_rate", "bf16_run",
          "freeze", "use_wavlm", "model_size")
LABELS = {"batch_size": "Batch size", "epochs": "Epochs", "max_steps": "Stop after steps",
          "eval_interval": "Eval + save every N steps", "log_interval": "Log every N steps",
          "learning_rate": "Learning rate", "bf16_run": "bf16", "freeze": "Freeze",
          "use_wavlm": "WavLM discriminator", "model_size": "Model size"}
# CPU seconds per batch item of one training step on one thread (`python -m bench.train_presets`: process
# CPU time, batch 2, 1.5-3 s clips, no WavLM); more threads are counted as 0.6 of a thread each.
CPU_S_PER_ITEM = {"full": 3.0, "small": 1.2}


def _number(name: str, value, kind=int):
    if value is None or value == "":
        raise KoeError(f"'{LABELS[name]}' is empty", fix="type a number")
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise KoeError(f"'{LABELS[name]}' is not a number: {value!r}", fix="type a number") from None


def normalize(name: str, value):
    """A field's value as config.json holds it (widgets give floats, strings, lists in any order)."""
    if name in ("batch_size", "epochs", "eval_interval", "log_interval"):
        return _number(name, value)
    if name == "max_steps":
        return _number(name, value) if value not in (None, "") else 0
    if name == "learning_rate":
        return _number(name, value, float)
    if name in ("bf16_run", "use_wavlm"):
        return bool(value)
    if name == "freeze":
        return sorted(set(value or []), key=list(FREEZE).index)
    if name == "model_size":
        found = [key for key, label in MODEL_SIZES.items() if value in (key, label)]
        return found[0] if found else "custom"
    raise KeyError(name)


def fields_of(cfg: VoiceConfig) -> dict:
    """The tab's field values from a config (model_size as "full"/"small"/"custom")."""
    t = cfg.train
    return {"batch_size": t.batch_size, "epochs": t.epochs, "max_steps": t.max_steps or 0,
            "eval_interval": t.eval_interval, "log_interval": t.log_interval, "learning_rate": t.learning_rate,
            "bf16_run": t.bf16_run, "freeze": [label for label, key in FREEZE.items() if getattr(t, key)],
            "use_wavlm": t.use_wavlm, "model_size": model_preset(cfg)}


def load_fields(voice_dir: Path) -> dict | None:
    """The field values of the voice's config.json, or None when it has none yet. Raises KoeError when broken."""
    path = config_path(voice_dir)
    return fields_of(VoiceConfig.load(path)) if path.is_file() else None


def changed_fields(loaded: dict, shown: dict) -> dict:
    """{field: new value} for the fields whose page value differs from the loaded one (both normalized)."""
    out = {}
    for name in FIELDS:
        new = normalize(name, shown[name])
        if name == "model_size" and new == "custom":
            continue  # "custom" is what the file holds, not something to write
        if name not in loaded or normalize(name, loaded[name]) != new:
            out[name] = new
    return out


def check_changes(voice_dir: Path, changes: dict) -> None:
    """Refuse changes that would break the voice. Raises KoeError."""
    for name in ("batch_size", "epochs", "eval_interval", "log_interval"):
        if name in changes and changes[name] < 1:
            raise KoeError(f"'{LABELS[name]}' must be at least 1 (it is {changes[name]})", fix="type 1 or more")
    if "learning_rate" in changes and not changes["learning_rate"] > 0:
        raise KoeError("'Learning rate' must be above 0", fix="e.g. 0.0002 (Bert-VITS2's default)")
    if changes.get("model_size") in ("full", "small"):
        trained = sorted(s for s in list_checkpoints(models_dir(voice_dir))["G"] if s > 0)
        if trained:
            raise KoeError(f"the voice has checkpoints up to step {trained[-1]} of the current model size; "
                           f"the {changes['model_size']} model cannot resume them",
                           where=str(models_dir(voice_dir)),
                           fix="keep the model size, or move the G_/D_/DUR_/WD_ files out of models/ to "
                               "train the new size from scratch")


def write_changes(voice_dir: Path, changes: dict) -> None:
    """Apply `changes` to config.json as it is on disk now (other keys untouched). Raises KoeError."""
    if not changes:
        return
    path = config_path(voice_dir)
    cfg = VoiceConfig.load(path)
    t = cfg.train
    for name, value in changes.items():
        if name == "freeze":
            for label, key in FREEZE.items():
                setattr(t, key, label in value)
        elif name == "max_steps":
            t.max_steps = value if value > 0 else None
        elif name == "model_size":
            if value != "custom":
                apply_model_preset(cfg, value)
        else:
            setattr(t, name, value)
    cfg.save(path)


def stamp(voice_dir: Path) -> list:
    """What the tab's view depends on: config.json's mtime and the G checkpoint steps (changes on any write)."""
    try:
        mtime = os.stat(config_path(voice_dir)).st_mtime_ns
    except OSError:
        mtime = None
    return [mtime, sorted(list_checkpoints(models_dir(voice_dir))["G"])]


def start_plan(voice_dir: Path, settings: Settings, base: Path | None, no_base: bool = False) -> StartPlan:
    """What `pipeline.train` will do with this base choice (None: automatic; `no_base`: from scratch)."""
    folder = models_dir(voice_dir)
    # `pipeline.train --no-base` skips config.yml's base model; a models/G_0.pth the user put there still counts.
    configured = settings.base_model_folder_for(voice_version(voice_dir))  # the same rule as pipeline.train
    chosen = base if base is not None or no_base else default_base(folder, configured)
    return plan_start(folder, chosen)


def plan_line(plan: StartPlan, model_size: str, max_steps: int = 0) -> str:
    """The plan for the page, with a warning when a full-size base model meets the small model or the
    checkpoint is already at "Stop after steps" (`max_steps`; 0 = epochs decide)."""
    text = f"**Start / Resume will:** {plan.describe()}"
    if plan.kind == RESUME and max_steps and plan.step >= max_steps:
        text += (f". ⚠️ That is already at Stop after steps = {max_steps}: the run would end at once; raise it "
                 "(or set 0) to train on.")
    elif plan.kind == RESUME:
        text += ". To train from scratch instead, move the G_/D_/DUR_/WD_ files out of `models/`."
    if plan.kind == BASE and model_size == "small":
        text += (" ⚠️ The base model has the full 2.3 shapes: the small model takes few of its tensors. Pick "
                 "'from scratch' under Start from.")
    return text


def resume_gpus(plan: StartPlan) -> int | None:
    """The number of processes the checkpoint a resume continues was trained with (None: not recorded)."""
    if plan.kind != RESUME:
        return None
    world = checkpoint_position(plan.files["G"]).get("world_size")
    return int(world) if world else None


def device_line(device: str, gpus: int, batch_size: int, bf16: bool, model_size: str,
                last_s_per_step: float | None = None) -> str:
    """Where training runs and what to expect: the CPU with its threads and a time per step, or the GPU with
    its name, memory and a memory estimate. `device` is config.yml's device resolved ("cpu", "cuda", "cuda:1")."""
    import torch

    batch_size, gpus = max(int(batch_size or 1), 1), max(int(gpus or 1), 1)
    procs = f"; {gpus} processes (torchrun)" if gpus > 1 else ""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return (f"❌ config.yml asks for device `{device}`, but this PyTorch sees no CUDA GPU: training would "
                    "fail. Set `device: auto` or `cpu` in config.yml, or install the CUDA build of PyTorch.")
        index = int(device.split(":")[1]) if ":" in device else 0
        props = torch.cuda.get_device_properties(index)
        total = props.total_memory / 2**30
        # GB per batch item of the 2.3 model, WavLM disc included (Bert-VITS2 practice); the small model's share
        # is its CPU-time ratio (CPU_S_PER_ITEM), not a GPU measurement: `bench.train_presets` prints both.
        scale = CPU_S_PER_ITEM["small"] / CPU_S_PER_ITEM["full"] if model_size == "small" else 1.0
        per_item = (1.1 if bf16 else 1.6) * scale
        need = 3.0 * scale + per_item * batch_size
        warn = " — lower the batch size" if need > total * 0.95 else ""
        per = " per GPU" if gpus > 1 else ""
        speed = f"; last run {last_s_per_step:.2g} s/step" if last_s_per_step else ""
        return (f"Runs on CUDA: {props.name}, {total:.1f} GB{procs}. Needs ≈ {need:.0f} GB{per} at batch size "
                f"{batch_size} (rough estimate){warn}; out of memory halves the batch size by itself{speed}.")
    threads = torch.get_num_threads()
    if last_s_per_step:
        speed = f"expect ~{last_s_per_step:.2g} s/step (measured by the last run)"
    elif model_size in CPU_S_PER_ITEM:
        guess = CPU_S_PER_ITEM[model_size] * batch_size / (1 + 0.6 * (min(threads, 16) - 1))
        speed = f"expect ~{guess:.2g} s/step (rough estimate; the first log lines measure it)"
    else:
        speed = "the first log lines show the time per step"
    ratio = CPU_S_PER_ITEM["full"] / CPU_S_PER_ITEM["small"]
    hint = f" Model size → small is about {ratio:.1f}× faster." if model_size == "full" else ""
    return f"Runs on the CPU ({threads} thread{'s' if threads != 1 else ''}{procs}) — {speed}.{hint}"
