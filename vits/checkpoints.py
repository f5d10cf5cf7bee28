"""Bert-VITS2-compatible checkpoint files: read, write, load into networks, find, rotate, export (spec §9).

File format (what Bert-VITS2 reads): `torch.save` of a dict with the keys ``model`` (state_dict),
``iteration`` (the *epoch*), ``optimizer`` (AdamW state_dict or None) and ``learning_rate``; the global
step lives only in the file name (``G_1000.pth``). We add our own keys in the same dict so a resume is
exact: ``koe_step``, ``koe_epoch``, ``koe_scheduler``, ``koe_scaler`` and ``koe_extra``. Bert-VITS2
ignores them, and we fall back to its fields when they are absent.

Files are read with ``torch.load(weights_only=True)``: a file that needs arbitrary Python objects is
refused (it could run code); `convert_trusted_checkpoint` rewrites such a file once, if you trust it.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vits.errors import KoeError
from vits.fileio import atomic_path

KINDS = ("G", "D", "DUR", "WD")
_NAME_RE = re.compile(r"^(G|D|DUR|WD)_(\d+)\.pth$")
_STEP_RE = re.compile(r"(\d+)(?=\D*$)")
_KOE_FIELDS = ("koe_step", "koe_epoch", "koe_scheduler", "koe_scaler", "koe_extra")

# What identify_checkpoint() can return, in the user's words.
KIND_DESCRIPTIONS = {
    "G": "a Bert-VITS2 2.3 generator (G_*.pth)",
    "D": "a multi-period discriminator (D_*.pth)",
    "DUR": "a Bert-VITS2 2.3 duration discriminator (DUR_*.pth)",
    "WD": "a WavLM discriminator (WD_*.pth)",
    "G-2.2": "a Bert-VITS2 2.2 generator with the CLAP emotion quantiser (enc_p.emo_vq keys); 2.3 removed it",
    "G-emotion": "an older Bert-VITS2 generator with an emotion input (enc_p.emo_* keys, 2.1 era)",
    "G-old": "an older Bert-VITS2 generator without the English BERT projection (no enc_p.en_bert_proj)",
    "G-vits": "a plain VITS/VITS2 generator without BERT inputs (no enc_p.bert_proj)",
    "DUR-2.2": "a Bert-VITS2 2.2 duration discriminator (convolutional, no LSTM)",
    "empty": "an empty state dict",
    "unknown": "not a Bert-VITS2 network (none of the G/D/DUR/WD key patterns)",
}

_KIND_FIX = {
    "G": "pick the generator file G_<step>.pth (or a *_release.pth made from one)",
    "D": "pick the discriminator file D_<step>.pth",
    "DUR": "pick the duration discriminator file DUR_<step>.pth",
    "WD": "pick the WavLM discriminator file WD_<step>.pth",
}


# ----------------------------------------------------------------------------------------------------
# reading and writing files


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file into a dict with at least the key ``model`` (a state_dict).

    Takes a Bert-VITS2 ``.pth`` (4-key dict), a bare state_dict ``.pth`` or a ``.safetensors`` file
    written by `export_release` (metadata fields come back as ``iteration``/``learning_rate``/...).
    Returns the dict as stored (tensors on the CPU). Raises KoeError when the file is missing, corrupt,
    not a checkpoint, or holds Python objects that ``weights_only`` loading refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise KoeError("checkpoint file not found", where=str(path),
                       fix="check the path; trained checkpoints are in Data/<voice>/models/G_<step>.pth")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
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
    text = str(exc)
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    if found:
        return KoeError(
            f"the file stores Python objects besides tensors ({found.group(1)}); loading it could run code "
            "from the file, so it was refused",
            where=str(path),
            fix="if you trust where the file came from, convert it once: python -c \"from vits.checkpoints "
                f"import convert_trusted_checkpoint as c; c('{path}', '{path.with_suffix('.safe.pth')}')\" "
                "and use the new file",
        )
    size = path.stat().st_size
    return KoeError(
        f"cannot read the checkpoint ({size} bytes): it is truncated or not a PyTorch file "
        f"({type(exc).__name__}: {text.splitlines()[0][:160] if text else 'no details'})",
        where=str(path),
        fix="copy or download the file again; if training was interrupted while saving, use an older step",
    )


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
    named = _NAME_RE.match(path.name)
    if named and int(named.group(2)) != int(step):
        raise ValueError(f"file name {path.name} says step {named.group(2)} but step={step}")
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
    """torch.save via a temp file in the same folder, fsync, rename (a crash never leaves half a file)."""
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as fh:
        torch.save(data, fh)


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
    found = _NAME_RE.match(name) or None
    if found:
        return int(found.group(2))
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


# ----------------------------------------------------------------------------------------------------
# loading weights into networks


@dataclass
class LoadReport:
    """What `load_weights` did: tensors loaded (fully or by leading rows) out of the model's total."""

    loaded: int
    total: int
    messages: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)


def _explain_shape(key: str, old: tuple, new: tuple, theirs: str = "base model", ours: str = "this voice") -> str:
    """Plain words for a shape difference between a base-model tensor `old` and ours `new`."""
    if key.endswith("emb_g.weight"):
        if old[1:] == new[1:]:
            return f"{theirs} has {old[0]} speakers, {ours} has {new[0]}"
        return f"speaker embedding size (gin_channels) is {old[1]} in the {theirs}, {new[1]} in {ours}"
    if key.endswith("enc_p.emb.weight"):
        if old[1:] == new[1:]:
            return f"{theirs} has {old[0]} phone symbols, {ours} has {new[0]}"
        return f"hidden size is {old[1]} in the {theirs}, {new[1]} in {ours}"
    if key.endswith("tone_emb.weight") and old[1:] == new[1:]:
        return f"{theirs} has {old[0]} tones, {ours} has {new[0]}"
    if key.endswith("language_emb.weight") and old[1:] == new[1:]:
        return f"{theirs} has {old[0]} languages, {ours} has {new[0]}"
    if "spk_emb_linear" in key or key.endswith(("cond.weight", "cond_layer.weight_v", "cond_layer.weight")):
        return "speaker-conditioning size (gin_channels) differs"
    return "layer size differs (hidden/filter/inter channels or kernel sizes in config.json)"


_ROW_TABLES = ("emb_g.weight", "enc_p.emb.weight", "enc_p.tone_emb.weight", "enc_p.language_emb.weight")
_ROW_NAMES = {"emb_g.weight": ("speaker", "speaker embedding"), "enc_p.emb.weight": ("symbol", "phone embedding"),
              "enc_p.tone_emb.weight": ("tone", "tone embedding"),
              "enc_p.language_emb.weight": ("language", "language embedding")}


def _group(keys: Iterable[str], limit: int = 6) -> str:
    """Compact list: module prefixes with counts, at most `limit` entries."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        groups.setdefault(".".join(parts[:2]) if len(parts) > 2 else key, []).append(key)
    items = [f"{p}.* ({len(ks)})" if len(ks) > 1 else ks[0] for p, ks in groups.items()]
    text = ", ".join(items[:limit])
    if len(items) > limit:
        text += f", … {len(items) - limit} more groups"
    return text


def _fold_weight(weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
    # w = g * v / ||v|| with the norm over every dim but 0 (legacy weight_norm, dim=0)
    dims = tuple(range(1, weight_v.dim()))
    return weight_g * weight_v / weight_v.norm(dim=dims, keepdim=True)


def load_weights(model: nn.Module, path_or_state, *, kind: str = "G", partial: bool = False,
                 log: Callable[[str], None] | None = None) -> LoadReport:
    """Load checkpoint weights into `model` (a G, D, DUR or WD network, optionally DDP-wrapped).

    Takes a file path, a checkpoint dict (with ``model``) or a bare state_dict; `kind` is the network
    the caller expects. Strict (default): every model tensor must be in the file with the same shape,
    except that a generator may lack ``enc_q.*`` (release files; fine for synthesis). float16 files
    are cast to the model's dtype. Partial (fine-tuning from a base model): copies every tensor that
    fits, the leading rows of the speaker/symbol/tone/language tables when only their row count
    differs, re-initialises nothing else but leaves the rest as the model initialised it, and reports
    one message per differing tensor in plain words. Nothing is zeroed.
    `log` receives each message line. Returns a LoadReport.
    Raises KoeError when the file is another network than `kind`, when strict loading finds missing,
    unexpected or differently-shaped tensors, or when partial loading matches no tensor at all.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    where = str(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else "the given state dict"
    ckpt = read_checkpoint(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else path_or_state
    state = {_strip_module(k): v for k, v in _state_of(ckpt).items()}

    found = identify_checkpoint(state)
    if found != kind:
        raise KoeError(f"this file is {KIND_DESCRIPTIONS[found]}, but {KIND_DESCRIPTIONS[kind]} was expected",
                       where=where, fix=_KIND_FIX[kind] if found in KINDS or found == "empty" else
                       "Koe Studio loads Bert-VITS2 2.3 networks only; train a 2.3 voice or use a 2.3 base model")

    net = _unwrap(model)
    own = net.state_dict()
    by_file_name = {_legacy_name(k): k for k in own}  # file name -> our key (parametrized weight norm)
    messages: list[str] = []
    missing, mismatched, reinit = [], [], []
    updates: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    half = False
    for file_key, our_key in by_file_name.items():
        target = own[our_key]
        source = state.get(file_key)
        if source is None and file_key.endswith(".weight"):
            stem = file_key[: -len(".weight")]
            if f"{stem}.weight_g" in state and f"{stem}.weight_v" in state:  # our model is folded
                source = _fold_weight(state[f"{stem}.weight_g"].float(), state[f"{stem}.weight_v"].float())
                used.update({f"{stem}.weight_g", f"{stem}.weight_v"})
        if source is None:
            missing.append(file_key)
            continue
        used.add(file_key)
        if not isinstance(source, torch.Tensor):
            mismatched.append((file_key, "not a tensor", tuple(target.shape)))
            continue
        half |= source.dtype in (torch.float16, torch.bfloat16) and target.dtype == torch.float32
        if tuple(source.shape) == tuple(target.shape):
            updates[our_key] = source.to(target.dtype)
            continue
        mismatched.append((file_key, tuple(source.shape), tuple(target.shape)))
        if partial:
            old, new = tuple(source.shape), tuple(target.shape)
            what = _explain_shape(file_key, old, new)
            if file_key in _ROW_TABLES and old[1:] == new[1:]:
                rows = min(old[0], new[0])
                merged = target.detach().clone()
                merged[:rows] = source[:rows].to(target.dtype)
                updates[our_key] = merged
                unit, table = _ROW_NAMES[file_key]
                rest = (f"{new[0] - rows} new {unit} rows re-initialised" if new[0] > rows
                        else f"the other {old[0] - rows} dropped")
                messages.append(f"{file_key}: {list(old)} in the base model, {list(new)} here: {what}: "
                                f"{table} copied for the first {rows} {unit}s, {rest}")
            else:
                reinit.append(file_key)
                messages.append(f"{file_key}: {list(old)} in the base model, {list(new)} here: {what}: "
                                "re-initialised")
    unexpected = [k for k in state if k not in used]
    if kind == "G" and not partial:
        enc_q_missing = [k for k in missing if k.startswith("enc_q.")]
        if enc_q_missing and len(enc_q_missing) == len(missing) and not any(k.startswith("enc_q.") for k in state):
            messages.append(f"enc_q: not in the file (release checkpoint): {len(enc_q_missing)} posterior-encoder "
                            "tensors left as initialised; fine for synthesis, not for resuming training")
            missing = []
            reinit.extend(enc_q_missing)
    if not partial and (missing or unexpected or mismatched):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_group(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_group(unexpected)}")
        if mismatched:
            shown = "; ".join(f"{k} {list(o) if isinstance(o, tuple) else o} in the file vs {list(n)} in the "
                              f"model ({_explain_shape(k, o, n, 'file', 'the config') if isinstance(o, tuple) else 'bad entry'})"
                              for k, o, n in mismatched[:4])
            more = f"; … {len(mismatched) - 4} more" if len(mismatched) > 4 else ""
            parts.append(f"different shape {len(mismatched)}: {shown}{more}")
        raise KoeError(f"the checkpoint does not fit the network built from the config ({' | '.join(parts)})",
                       where=where,
                       fix="use the config.json the checkpoint was trained with (hidden/gin channels, n_speakers, "
                           "layers); to fine-tune a different voice from it, load it as a base model (partial)")
    if partial:
        if not updates:
            raise KoeError(f"none of the {len(own)} tensors of this network fit the file", where=where,
                           fix="pick a base model of the same architecture (same config.json sizes)")
        if missing:
            messages.append(f"not in the base model, initialised fresh: {len(missing)} tensors ({_group(missing)})")
            reinit.extend(missing)
        if unexpected:
            messages.append(f"in the base model but not used by this network: {len(unexpected)} tensors "
                            f"({_group(unexpected)})")
    if half:
        messages.insert(0, "the file stores float16 weights; converted to float32")
    with torch.no_grad():
        for key, value in updates.items():
            own[key].copy_(value)
    report = LoadReport(loaded=len(updates), total=len(own), messages=messages, missing=missing,
                        unexpected=unexpected, reinitialised=reinit)
    if log is not None:
        for line in messages:
            log(line)
    return report


def restore_training_state(ckpt_or_path, *, optimizer=None, scheduler=None, scaler=None,
                           model: nn.Module | None = None) -> tuple[int, int]:
    """Put optimizer / LR scheduler / GradScaler state back from a checkpoint; returns (epoch, step).

    Takes a path or a checkpoint dict. Files from Bert-VITS2 have no scheduler/scaler fields: those
    stay as they are. When `model` is given, the optimizer state is checked against its parameter
    shapes (a mismatch means the parameter order differs) and skipped with a KoeError.
    Raises KoeError for unreadable files or an optimizer state that does not fit.
    """
    path = ckpt_or_path if isinstance(ckpt_or_path, (str, os.PathLike)) else None
    ckpt = read_checkpoint(path) if path is not None else ckpt_or_path
    where = str(path) if path is not None else "checkpoint"
    opt_state = ckpt.get("optimizer")
    if optimizer is not None and opt_state is not None and opt_state.get("state") is not None:
        if model is not None:
            params = list(_unwrap(model).parameters())
            for index, entry in opt_state["state"].items():
                avg = entry.get("exp_avg") if isinstance(entry, Mapping) else None
                if avg is None:
                    continue
                if int(index) >= len(params) or tuple(avg.shape) != tuple(params[int(index)].shape):
                    raise KoeError("the optimizer state does not fit this network's parameters", where=where,
                                   fix="set train.skip_optimizer to true in config.json to start the optimizer fresh")
        try:
            optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise KoeError(f"the optimizer state does not fit ({exc})", where=where,
                           fix="set train.skip_optimizer to true in config.json to start the optimizer fresh") from None
    if scheduler is not None and ckpt.get("koe_scheduler") is not None:
        scheduler.load_state_dict(ckpt["koe_scheduler"])
    if scaler is not None and ckpt.get("koe_scaler"):
        scaler.load_state_dict(ckpt["koe_scaler"])
    return checkpoint_epoch_step(ckpt, path)


# ----------------------------------------------------------------------------------------------------
# finding, rotating and exporting files


def list_checkpoints(models_dir: str | os.PathLike) -> dict[str, dict[int, Path]]:
    """{"G": {step: path}, "D": ..., "DUR": ..., "WD": ...} for the ``<KIND>_<step>.pth`` files in a folder."""
    found: dict[str, dict[int, Path]] = {k: {} for k in KINDS}
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return found
    for entry in models_dir.iterdir():
        named = _NAME_RE.match(entry.name)
        if named and entry.is_file():
            found[named.group(1)][int(named.group(2))] = entry
    return found


def _looks_complete(path: Path) -> bool:
    """Cheap check that a file was written completely (torch zip archive with its central directory)."""
    try:
        if path.stat().st_size == 0:
            return False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith("data.pkl") for name in archive.namelist())
        read_checkpoint(path)  # legacy (non-zip) torch format: read it fully
        return True
    except (OSError, zipfile.BadZipFile, KoeError):
        return False


def latest_checkpoints(models_dir: str | os.PathLike) -> tuple[int, dict[str, Path | None]] | None:
    """The newest step with a complete G file, and the files of that step.

    Returns ``(step, {"G": path, "D": path|None, "DUR": path|None, "WD": path|None})`` where the other
    networks are taken from the same step only (None when that step has no such file), or None when
    the folder holds no usable G file.
    """
    found = list_checkpoints(models_dir)
    for step in sorted(found["G"], reverse=True):
        g_path = found["G"][step]
        if _looks_complete(g_path):
            return step, {kind: found[kind].get(step) for kind in KINDS}
    return None


def rotate_checkpoints(models_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete old checkpoints, keeping the newest `keep` steps of each network separately.

    Unlike Bert-VITS2 (which sorts by modification time and lets D_ and DUR_ share one list), files are
    ordered by the step in their name and G, D, DUR and WD each keep their own `keep` newest.
    ``*_0.pth`` (the base model) is never deleted; `keep` <= 0 deletes nothing. Returns the deleted paths.
    """
    if keep <= 0:
        return []
    deleted = []
    for files in list_checkpoints(models_dir).values():
        steps = sorted((s for s in files if s != 0), reverse=True)
        for step in steps[keep:]:
            try:
                files[step].unlink()
                deleted.append(files[step])
            except FileNotFoundError:
                pass
    return deleted


def export_release(g_path: str | os.PathLike, out_path: str | os.PathLike, fp16: bool = False,
                   safetensors: bool = False) -> Path:
    """Write a release generator: no ``enc_q`` (training-only), no optimizer; optionally float16.

    The ``.pth`` output is the Bert-VITS2 release format (``iteration`` 0, ``optimizer`` None,
    ``learning_rate`` 1e-4) which Bert-VITS2 and Koe Studio both load for synthesis. With
    ``safetensors=True`` the file is a safetensors file instead (suffix forced to ``.safetensors``),
    whose metadata notes the format (``koe_format``: "bert-vits2-2.3-G-release") and source step;
    Koe Studio reads it, Bert-VITS2 itself does not. Returns the written path.
    Raises KoeError when `g_path` is not a 2.3 generator.
    """
    g_path, out_path = Path(g_path), Path(out_path)
    ckpt = read_checkpoint(g_path)
    kind = identify_checkpoint(ckpt)
    if kind != "G":
        raise KoeError(f"this file is {KIND_DESCRIPTIONS[kind]}, not a generator", where=str(g_path),
                       fix=_KIND_FIX["G"])
    state = {}
    for key, value in ckpt["model"].items():
        key = _strip_module(key)
        if "enc_q" in key:
            continue
        if fp16 and value.is_floating_point():
            value = value.half()
        state[key] = value.contiguous()
    try:
        step = checkpoint_epoch_step(ckpt, g_path)[1]
    except KoeError:
        step = 0
    if safetensors:
        from safetensors.torch import save

        out_path = out_path.with_suffix(".safetensors")
        meta = {"format": "pt", "koe_format": "bert-vits2-2.3-G-release", "iteration": "0",
                "learning_rate": "0.0001", "koe_step": str(step), "source": g_path.name,
                "dtype": "float16" if fp16 else "float32"}
        blob = save(state, metadata=meta)
        with atomic_path(out_path, durable=True) as tmp:
            tmp.write_bytes(blob)
        return out_path
    _torch_save_atomic({"model": state, "iteration": 0, "optimizer": None, "learning_rate": 0.0001,
                        "koe_step": step, "koe_release": True}, out_path)
    return out_path


def parameter_count(state: Mapping) -> int:
    """Total number of elements in a state_dict's tensors."""
    return sum(math.prod(v.shape) for v in _state_of(state).values() if isinstance(v, torch.Tensor))
