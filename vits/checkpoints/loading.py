"""Loading checkpoint weights into networks: strict (resume, synthesis) or partial (fine-tuning), with
one plain-words message per tensor that did not fit."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from vits.checkpoints.format import (
    _KIND_FIX,
    KIND_DESCRIPTIONS,
    _legacy_name,
    _state_of,
    _strip_module,
    _unwrap,
    identify_checkpoint,
    read_checkpoint,
)
from vits.errors import KoeError
from vits.voice_folder import KINDS


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


# A network's Bert-VITS2 version refines its checkpoint kind: a 2.2 generator reads only "G-2.2" files.
_VERSIONED_KINDS = {"G": "G-2.2", "DUR": "DUR-2.2"}
_VERSION_FIX = ("Koe Studio builds the network from config.json: a 2.2 voice has \"version\": \"2.2\" and no "
                "model.slm block, a 2.3 voice \"version\": \"2.3\" (Voice.load and the synthesize/export "
                "commands read the version from the G file itself); to fine-tune from a base model, create the "
                "voice with the base model's version")


def generator_version(state) -> str | None:
    """"2.2" or "2.3" for a generator state_dict / checkpoint dict (by its keys, 2.2 spec §9.3), else None."""
    found = identify_checkpoint(state)
    return {"G": "2.3", "G-2.2": "2.2"}.get(found)


def _expected_kind(net: nn.Module, kind: str) -> str:
    """The identify_checkpoint() kind a network of `kind` reads: its 2.2 variant for 2.2 networks."""
    is_22 = getattr(net, "emotion", False) if kind == "G" else hasattr(net, "pre_out_conv_1")
    return _VERSIONED_KINDS[kind] if is_22 and kind in _VERSIONED_KINDS else kind


def _same_flag(key: str, source: torch.Tensor, target: torch.Tensor) -> bool:
    # vector-quantize-pytorch >= 1.27 saves the codebook's `initted` flag as a 0-d bool, 2.2 as float [1].
    return key.endswith("_codebook.initted") and source.numel() == target.numel() == 1


def load_weights(model: nn.Module, path_or_state, *, kind: str = "G", partial: bool = False,
                 log: Callable[[str], None] | None = None, where: str | None = None) -> LoadReport:
    """Load checkpoint weights into `model` (a G, D, DUR or WD network, optionally DDP-wrapped).

    Takes a file path, a checkpoint dict (with ``model``) or a bare state_dict; `kind` is the network
    the caller expects. Strict (default): every model tensor must be in the file with the same shape,
    except that a generator may lack ``enc_q.*`` (release files; fine for synthesis). float16 files
    are cast to the model's dtype. Partial (fine-tuning from a base model): copies every tensor that
    fits, the leading rows of the speaker/symbol/tone/language tables when only their row count
    differs, re-initialises nothing else but leaves the rest as the model initialised it, and reports
    one message per differing tensor in plain words. Nothing is zeroed.
    A 2.2 generator or duration discriminator reads only 2.2 files of that network, a 2.3 one only 2.3
    files. `log` receives each message line; `where` names the source in messages (default: the path).
    Returns a LoadReport.
    Raises KoeError when the file is another network (or version) than `model`, when strict loading finds missing,
    unexpected or differently-shaped tensors, or when partial loading matches no tensor at all.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if where is None:
        where = str(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else "the given state dict"
    ckpt = read_checkpoint(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else path_or_state
    state = {_strip_module(k): v for k, v in _state_of(ckpt).items()}

    net = _unwrap(model)
    expected = _expected_kind(net, kind)
    found = identify_checkpoint(state)
    if found != expected:
        if found in (kind, _VERSIONED_KINDS.get(kind)):  # the right network, the other Bert-VITS2 version
            fix = _VERSION_FIX
        elif found in KINDS or found == "empty" or found in _VERSIONED_KINDS.values():
            fix = _KIND_FIX[kind]
        else:
            fix = "Koe Studio loads Bert-VITS2 2.3 and 2.2 networks only; train a 2.3 voice or use a 2.3 or 2.2 base model"
        raise KoeError(f"this file is {KIND_DESCRIPTIONS[found]}, but {KIND_DESCRIPTIONS[expected]} was expected",
                       where=where, fix=fix)

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
        if tuple(source.shape) == tuple(target.shape) or _same_flag(file_key, source, target):
            updates[our_key] = source.to(target.dtype).reshape(target.shape)
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
