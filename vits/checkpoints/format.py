"""The Bert-VITS2 checkpoint file format (spec §9): read, write, identify, step and epoch.

File format (what Bert-VITS2 reads): `torch.save` of a dict with the keys ``model`` (state_dict),
``iteration`` (the *epoch*), ``optimizer`` (AdamW state_dict or None) and ``learning_rate``; the global
step lives only in the file name (``G_1000.pth``). We add our own keys in the same dict so a resume is
exact: ``koe_step``, ``koe_epoch``, ``koe_scheduler``, ``koe_scaler`` and ``koe_extra``. Bert-VITS2
ignores them, and we fall back to its fields when they are absent.

Files are read with ``torch.load(weights_only=True)``: a file that needs arbitrary Python objects is
refused (it could run code); `convert_trusted_checkpoint` rewrites such a file once, if you trust it.
Before loading, the CRC-32 that `torch.save` records for every record of the file is checked
(`vits.checkpoints.integrity`): a file damaged after saving is named (`DamagedCheckpoint`) instead of
loading garbage. Saves check the free disk space first, and a full disk is one line saying what is safe.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from vits import voice_folder
from vits.checkpoints.integrity import crc_problem, refused_globals, runs_code
from vits.errors import KoeError
from vits.fileio import atomic_path

# The file-name rule (<KIND>_<step>.pth) is voice_folder's; a step-like number anywhere else is the fallback.
_STEP_RE = re.compile(r"(\d+)(?=\D*$)")

# What identify_checkpoint() can return, in the user's words.
KIND_DESCRIPTIONS = {
    "G": "a Bert-VITS2 2.3 generator (G_*.pth)",
    "D": "a multi-period discriminator (D_*.pth)",
    "DUR": "a Bert-VITS2 2.3 duration discriminator (DUR_*.pth)",
    "WD": "a WavLM discriminator (WD_*.pth)",
    "G-2.2": "a Bert-VITS2 2.2 generator with the CLAP emotion input (enc_p.emo_vq keys, G_*.pth)",
    "G-emotion": "an older Bert-VITS2 generator with an emotion input (enc_p.emo_* keys, 2.1 era)",
    "G-old": "an older Bert-VITS2 generator without the English BERT projection (no enc_p.en_bert_proj)",
    "G-vits": "a plain VITS/VITS2 generator without BERT inputs (no enc_p.bert_proj)",
    "DUR-2.2": "a Bert-VITS2 2.2 duration discriminator (convolutional, no LSTM, DUR_*.pth)",
    "empty": "an empty state dict",
    "unknown": "not a Bert-VITS2 network (none of the G/D/DUR/WD key patterns)",
}

_KIND_FIX = {
    "G": "pick the generator file G_<step>.pth (or a *_release.pth made from one)",
    "D": "pick the discriminator file D_<step>.pth",
    "DUR": "pick the duration discriminator file DUR_<step>.pth",
    "WD": "pick the WavLM discriminator file WD_<step>.pth",
}


class DamagedCheckpoint(KoeError):
    """A checkpoint file that is damaged, truncated or unreadable (not one that merely does not fit)."""


class CheckpointWarning(UserWarning):
    """A checkpoint file was passed over (damaged or incomplete) and an older one used instead."""


# ----------------------------------------------------------------------------------------------------
# reading and writing files


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file into a dict with at least the key ``model`` (a state_dict).

    Takes a Bert-VITS2 ``.pth`` (4-key dict), a bare state_dict ``.pth`` or a ``.safetensors`` file
    written by `export_release` (metadata fields come back as ``iteration``/``learning_rate``/...).
    Returns the dict as stored (tensors on the CPU). Raises DamagedCheckpoint (a KoeError) when a record
    does not match the CRC-32 written when it was saved, or the file is truncated or garbage; KoeError
    when it is missing, holds no model, or is not a weights-only file (its pickle needs Python objects,
    named, which ``weights_only`` loading refuses; nothing from the file runs).
    """
    path = Path(path)
    if not path.is_file():
        raise KoeError("checkpoint file not found", where=str(path),
                       fix="check the path; trained checkpoints are in Data/<voice>/models/G_<step>.pth")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    damage = crc_problem(path)
    if damage:
        raise DamagedCheckpoint(f"the checkpoint is damaged: {damage}", where=str(path),
                                fix="copy or download the file again; a training checkpoint can be moved out "
                                    "of models/ (training then resumes from the newest older set)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError/EOFError/... for bad files
        raise _load_error(path, exc) from None
    if isinstance(data, Mapping) and "model" in data and isinstance(data["model"], Mapping):
        return dict(data)
    if isinstance(data, Mapping) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return {"model": dict(data)}  # a bare state_dict (e.g. saved by other tools)
    raise KoeError("not a model checkpoint (no 'model' state dict inside)", where=str(path),
                   fix="pick a G_/D_/DUR_/WD_<step>.pth file written by Bert-VITS2 or Koe Studio")


def _load_error(path: Path, exc: Exception) -> KoeError:
    """Why torch.load refused `path`: a pickle that needs code from the file, or a truncated/garbage file.

    Decided from the pickle's own opcodes (nothing runs), not from torch's wording, which changes.
    """
    refused = refused_globals(path)
    if refused:
        shown = ", ".join(refused[:4]) + (f", … {len(refused) - 4} more" if len(refused) > 4 else "")
        code = [g for g in refused if runs_code(g)]
        if code:
            return KoeError(
                f"not a weights-only file: its pickle would call {', '.join(code[:3])} when loaded, which runs "
                "commands or code; this looks like a malicious file. It was refused and nothing from it ran",
                where=str(path),
                fix="delete it and get the model from a source you trust; do not convert this one")
        return KoeError(
            f"not a weights-only file: besides tensors it stores Python objects ({shown}); loading those "
            "could run code from the file, so it was refused (nothing from it ran)",
            where=str(path),
            fix="if you trust where the file came from, convert it once: python -c \"from vits.checkpoints "
                f"import convert_trusted_checkpoint as c; c('{path}', '{path.with_suffix('.safe.pth')}')\" "
                "and use the new file")
    return DamagedCheckpoint(
        f"cannot read the checkpoint ({path.stat().st_size} bytes): it is truncated or not a PyTorch file "
        f"({_short_reason(exc)})",
        where=str(path),
        fix="copy or download the file again; if training was interrupted while saving, use an older step",
    )


_TORCH_BOILERPLATE = ("weights only load failed", "weights_only", "pytorch 2.6", "documentation", "trusted source",
                      "please file an issue", "do those steps only")


def _short_reason(exc: Exception) -> str:
    """torch's reason without its advice to load with weights_only=False (which could run code)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not any(b in line.lower() for b in _TORCH_BOILERPLATE)]
    return f"{type(exc).__name__}: {useful[0][:160]}" if useful else type(exc).__name__


def _read_safetensors(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open has no iter)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise KoeError(f"cannot read the safetensors file ({exc})", where=str(path),
                       fix="copy or export the file again") from None
    out: dict = {"model": state, "iteration": int(meta.get("iteration", 0)), "optimizer": None,
                 "learning_rate": float(meta.get("learning_rate", 0.0001))}
    if "koe_step" in meta:
        out["koe_step"] = int(meta["koe_step"])
    out["koe_format"] = meta.get("koe_format", "")
    return out


def _unwrap(model):
    # DistributedDataParallel / DataParallel keep the real network in `.module`.
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _legacy_name(key: str) -> str:
    """New-style weight-norm names -> the legacy `weight_g`/`weight_v` names the files use."""
    return (key.replace(".parametrizations.weight.original0", ".weight_g")
            .replace(".parametrizations.weight.original1", ".weight_v"))


def model_state(model: nn.Module | Mapping) -> dict[str, torch.Tensor]:
    """The state_dict of `model` (unwrapped from DDP) with Bert-VITS2's legacy weight-norm names."""
    state = model if isinstance(model, Mapping) else _unwrap(model).state_dict()
    return {_legacy_name(k): v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def save_checkpoint(path: str | os.PathLike, model: nn.Module | Mapping, optimizer=None, *, epoch: int,
                    step: int, learning_rate: float, scheduler=None, scaler=None,
                    extra: Mapping | None = None) -> Path:
    """Write a checkpoint Bert-VITS2 can read, plus our resume fields, atomically.

    Takes the target path (by convention ``models/G_<step>.pth``), the network or its state_dict,
    the optimizer (or None), the epoch (stored as ``iteration``, as Bert-VITS2 does), the global step,
    the configured initial learning rate, and optionally the LR scheduler, the AMP GradScaler and a
    dict of plain values (numbers, strings, lists, dicts, tensors) stored under ``koe_extra``.
    Returns the path. Raises ValueError when the step in a ``<KIND>_<step>.pth`` name differs from
    `step`, or when `extra` holds objects that ``weights_only`` loading would refuse.
    """
    path = Path(path)
    named = voice_folder.checkpoint_name(path.name)
    if named and named[1] != int(step):
        raise ValueError(f"file name {path.name} says step {named[1]} but step={step}")
    if extra is not None:
        _check_plain(extra, "extra")
    data = {
        "model": model_state(model),
        "iteration": int(epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "learning_rate": float(learning_rate),
        "koe_step": int(step),
        "koe_epoch": int(epoch),
        "koe_scheduler": scheduler.state_dict() if scheduler is not None else None,
        "koe_scaler": scaler.state_dict() if scaler is not None else None,
        "koe_extra": dict(extra) if extra is not None else None,
    }
    _torch_save_atomic(data, path)
    return path


def _check_plain(value, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise ValueError(f"{where} is a {type(value).__name__}; checkpoints only hold plain values and tensors")


def _torch_save_atomic(data, path: Path) -> None:
    """torch.save via a temp file in the same folder, fsync, rename (a crash never leaves half a file).

    The file records a CRC-32 per record (torch's option forced on for this save). Raises KoeError when
    the disk lacks the space (checked before writing) or fills up while writing; the target is untouched.
    """
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(data, fh)

    crc_before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(True)
    try:
        write_checked(path, write, _tensor_bytes(data) + (1 << 20))
    finally:
        torch.serialization.set_crc32_options(crc_before)


def write_checked(path: Path, write: Callable[[Path], None], need: int) -> None:
    """Run `write(tmp)` inside `atomic_path(path, durable=True)` after checking `need` bytes are free.

    Raises KoeError (one line: the reason and what is still safe) for a full disk, before or while writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise _disk_full_error(path, need, free, before=True)
    try:
        with atomic_path(path, durable=True) as tmp:
            write(tmp)
    except (OSError, RuntimeError) as exc:
        if _is_disk_full(exc):
            raise _disk_full_error(path, need, shutil.disk_usage(path.parent).free, before=False) from None
        raise


def _tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size() + 64  # + alignment of each record
    if isinstance(value, Mapping):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT anywhere in the chain (torch's writer wraps the OSError in a RuntimeError)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _disk_full_error(path: Path, need: int, free: int, before: bool) -> KoeError:
    generators = voice_folder.list_checkpoints(path.parent)["G"]
    steps = sorted(s for s in generators if voice_folder.checkpoint_name(path.name) != ("G", s))
    safe = (f"the newest complete checkpoint {generators[steps[-1]].name} (step {steps[-1]}) and every older "
            "file are untouched" if steps else "every file already there is untouched")
    what = (f"not enough disk space to save {path.name}: it needs about {_mb(need)}, {_mb(free)} are free"
            if before else f"the disk filled up while saving {path.name} (about {_mb(need)} needed, {_mb(free)} "
            "free now)")
    return KoeError(f"{what}; {path.name} was not written and nothing was replaced: {safe}", where=str(path),
                    fix=f"free space (delete old checkpoints or exports in {path.parent}, lower train.keep_ckpts in "
                        "config.json, or move the data folder to a larger disk), then run again: training "
                        "resumes from the newest complete checkpoint")


def convert_trusted_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Rewrite a checkpoint that needs full pickle loading into a plain, weights_only-safe file.

    Only for files you trust: `src` is loaded with ``weights_only=False`` (which can run code).
    Keeps ``model`` (a state_dict, or the state_dict of a pickled module), ``iteration`` and
    ``learning_rate``; numpy scalars become Python numbers; the optimizer state is dropped.
    Returns `dst`. Raises KoeError when `src` holds no model weights.
    """
    src, dst = Path(src), Path(dst)
    data = torch.load(src, map_location="cpu", weights_only=False)
    model = data.get("model", data) if isinstance(data, Mapping) else data
    if isinstance(model, nn.Module):
        model = model.state_dict()
    if not isinstance(model, Mapping) or not any(isinstance(v, torch.Tensor) for v in model.values()):
        raise KoeError("no model weights found in the file", where=str(src),
                       fix="pick a Bert-VITS2 G_/D_/DUR_/WD_ checkpoint")

    def plain_number(value, default):
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            return default

    out = {
        "model": {str(k): v.detach().cpu() for k, v in model.items() if isinstance(v, torch.Tensor)},
        "iteration": plain_number(data.get("iteration", 0), 0) if isinstance(data, Mapping) else 0,
        "optimizer": None,
        "learning_rate": plain_number(data.get("learning_rate", 2e-4), 2e-4) if isinstance(data, Mapping)
        else 2e-4,
    }
    _torch_save_atomic(out, dst)
    return dst


# ----------------------------------------------------------------------------------------------------
# what a file is


def _state_of(state_or_ckpt: Mapping) -> Mapping:
    if "model" in state_or_ckpt and isinstance(state_or_ckpt["model"], Mapping):
        return state_or_ckpt["model"]
    return state_or_ckpt


def identify_checkpoint(state: Mapping) -> str:
    """Say which network a state_dict (or a whole checkpoint dict) belongs to.

    Returns one of the keys of `KIND_DESCRIPTIONS`: "G", "D", "DUR", "WD" for the Bert-VITS2 2.3
    networks, or "G-2.2", "G-emotion", "G-old", "G-vits", "DUR-2.2", "empty", "unknown".
    A 2.3 generator without ``enc_q`` (a release file) is still "G".
    """
    keys = [_strip_module(k) for k in _state_of(state)]
    if not keys:
        return "empty"
    keyset = set(keys)
    if any(k.startswith(("enc_p.emo_vq.", "enc_p.in_feature_net.")) for k in keys):
        return "G-2.2"
    if any(k.startswith("enc_p.emo") for k in keys):
        return "G-emotion"
    if any(k.startswith(("enc_p.", "dec.", "flow.")) for k in keys):
        if "enc_p.bert_proj.weight" not in keyset:
            return "G-vits"
        if "enc_p.en_bert_proj.weight" not in keyset:
            return "G-old"
        return "G"
    if any(k.startswith("discriminators.") for k in keys):
        return "D"
    if "dur_proj.weight" in keyset or "conv_1.weight" in keyset:
        if any(k.startswith("LSTM.") for k in keys):
            return "DUR"
        if any(k.startswith("pre_out_conv_1.") for k in keys):
            return "DUR-2.2"
    if any(k.startswith("pre.") for k in keys) and any(k.startswith("conv_post.") for k in keys):
        return "WD"
    return "unknown"


def _strip_module(key: str) -> str:
    return key[7:] if key.startswith("module.") else key


def checkpoint_step(path: str | os.PathLike) -> int:
    """The global step in a checkpoint file name (``G_1000.pth`` -> 1000).

    Raises KoeError when the name holds no number.
    """
    name = Path(path).name
    named = voice_folder.checkpoint_name(name)
    if named:
        return named[1]
    stem = name.split(".")[0]
    found = _STEP_RE.search(stem)
    if not found:
        raise KoeError("no step number in the checkpoint file name", where=str(path),
                       fix="name checkpoints like G_1000.pth (1000 = global step)")
    return int(found.group(1))


def checkpoint_epoch_step(ckpt: Mapping, path: str | os.PathLike | None = None) -> tuple[int, int]:
    """(epoch, global step) of a checkpoint dict: our fields if present, else Bert-VITS2's.

    Bert-VITS2 stores the epoch in ``iteration`` and the step only in the file name, so `path` is
    needed for its files. Epoch is at least 1 (as Bert-VITS2's resume does).
    """
    epoch = ckpt.get("koe_epoch", ckpt.get("iteration", 1))
    step = ckpt.get("koe_step")
    if step is None:
        step = checkpoint_step(path) if path is not None else 0
    return max(int(epoch or 1), 1), int(step)
