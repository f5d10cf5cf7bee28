"""Merging voices: blend the generator weights of voices A, B (and C) into a new voice.

Methods (per tensor, in float32):
  weighted        (1 − w)·A + w·B                 w = 0 gives A, w = 1 gives B
  add_difference  A + w·(B − C)                   adds what B learned on top of C (e.g. a base model) to A
  weighted_sum    a·A + b·B + c·C                 the three weights as given (they need not sum to 1)
`slerp` (weighted only): spherical interpolation of each tensor, flattened to one vector:
  θ = angle(A, B); out = sin((1 − w)θ)/sin θ · A + sin(wθ)/sin θ · B; w = 0 gives A, w = 1 gives B, and for
  tensors of equal norm the result keeps that norm (a plain average shrinks it). Nearly parallel tensors
  (sin θ < 1e-4) and all-zero ones fall back to the linear formula, where slerp and lerp agree.

Each component group has its own weight, chosen by the state_dict key prefix (spec §3.2):
  timbre = ``dec.`` (the decoder), pitch = ``flow.`` (pitch/prosody), style = ``enc_p.`` (the text encoder,
  speaking style), rhythm = ``sdp.`` and ``dp.`` (the duration predictors). Everything else (the posterior
  encoder ``enc_q.``, used only for fine-tuning, and the speaker embedding ``emb_g.weight``) takes the overall
  weight. Weight-normed layers are merged on their effective weight g·v/‖v‖ (what the layer computes) and
  written back in the legacy weight_g/weight_v form. Buffers and integer tensors are copied from A.

Speakers: the merged voice has A's speakers (A's spk2id and speaker table size). Its speaker embedding rows
(`speakers` rule): "match" (default) blends each of A's speakers with B's (and C's) speaker of the same name,
or with B's (C's) first speaker when it has no speaker of that name (two one-speaker voices: A's speaker
with B's); "a" keeps A's rows unchanged; "id" blends row i with row i (the tables must have the same size).
Voices of different architectures (2.3 vs 2.2, other sizes or symbol tables) are refused with the key.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vits import voice_folder as vf
from vits.checkpoints.format import _strip_module, read_checkpoint, save_checkpoint
from vits.checkpoints.integrity import nonfinite_tensors
from vits.checkpoints.loading import _explain_shape, generator_version
from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.fileio import write_json

METHODS = ("weighted", "add_difference", "weighted_sum")
GROUPS = {"timbre": ("dec.",), "pitch": ("flow.",), "style": ("enc_p.",), "rhythm": ("sdp.", "dp.")}
GROUP_LABELS = {"timbre": "timbre (decoder, dec.)", "pitch": "pitch/prosody (flow, flow.)",
                "style": "speaking style (text encoder, enc_p.)", "rhythm": "rhythm (duration predictors, sdp./dp.)"}
SPEAKER_RULES = ("match", "a", "id")
SPEAKER_TABLE = "emb_g.weight"
ROLES = ("a", "b", "c")
_PARALLEL = 1e-4
# config.json fields that change the network or its audio without changing any tensor shape
_SAME_DATA = ("sampling_rate", "hop_length", "filter_length", "win_length", "n_mel_channels", "add_blank")
_SAME_MODEL = ("resblock", "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
               "upsample_kernel_sizes", "n_heads", "kernel_size", "use_transformer_flow", "flow_share_parameter",
               "n_flow_layer", "n_layers_trans_flow", "num_languages")


@dataclass
class Source:
    """One voice going into a merge: its files, config and generator weights (weight norm folded)."""

    role: str
    g_path: Path
    config_path: Path
    config: VoiceConfig
    version: str
    state: dict[str, torch.Tensor]
    norms: set[str]  # keys whose tensor is a folded weight-normed weight (written back as weight_g/weight_v)
    step: int | None
    sha256: str
    voice: str = ""

    @property
    def where(self) -> str:
        return f"voice {self.role.upper()} ({self.g_path})"

    def speakers(self) -> dict[str, int]:
        spk2id = dict(self.config.data.spk2id)
        return spk2id or {str(i): i for i in range(self.config.data.n_speakers)}


@dataclass
class Recipe:
    """How to merge: the method, one weight per group (a float, or (a, b, c) for weighted_sum), the overall
    weight for keys outside the groups, slerp, and the speaker rule."""

    method: str = "weighted"
    weight: float | tuple[float, float, float] = 0.5
    groups: dict[str, float | tuple[float, float, float]] = field(default_factory=dict)
    slerp: bool = False
    speakers: str = "match"

    def check(self) -> None:
        """Raises KoeError for an unknown method/group/rule or weights of the wrong form."""
        if self.method not in METHODS:
            raise KoeError(f"unknown merge method {self.method!r}", fix=f"use one of {', '.join(METHODS)}")
        if self.speakers not in SPEAKER_RULES:
            raise KoeError(f"unknown speaker rule {self.speakers!r}", fix=f"use one of {', '.join(SPEAKER_RULES)}")
        unknown = set(self.groups) - set(GROUPS)
        if unknown:
            raise KoeError(f"unknown component group(s) {', '.join(sorted(unknown))}",
                           fix=f"use {', '.join(GROUPS)}")
        if self.slerp and self.method != "weighted":
            raise KoeError(f"slerp works between two voices; {self.method} is not a two-voice blend",
                           fix="use --method weighted with --slerp, or leave slerp off")
        for name, value in [("weight", self.weight), *self.groups.items()]:
            triple = isinstance(value, (tuple, list))
            if triple != (self.method == "weighted_sum") or (triple and len(value) != 3):
                need = "three weights a,b,c" if self.method == "weighted_sum" else "one number"
                raise KoeError(f"the {name} weight {value!r} does not fit {self.method}: it takes {need}",
                               fix="e.g. --weights 0.5,0.3,0.2 for weighted_sum, --weight 0.5 otherwise")
            if any(not math.isfinite(float(v)) for v in (value if triple else [value])):
                raise KoeError(f"the {name} weight {value!r} is not a finite number", fix="use numbers such as 0.5")

    def weight_for(self, key: str):
        """The weight of a state_dict key: its group's, else the overall weight."""
        return self.groups.get(group_of(key), self.weight) if group_of(key) else self.weight

    def describe(self) -> dict:
        return {"method": self.method, "weight": _plain(self.weight), "slerp": self.slerp,
                "speakers": self.speakers,
                "groups": {g: _plain(self.groups.get(g, self.weight)) for g in GROUPS}}


def _plain(value):
    return [float(v) for v in value] if isinstance(value, (tuple, list)) else float(value)


def group_of(key: str) -> str | None:
    """"timbre", "pitch", "style" or "rhythm" for a generator key by its prefix; None for the other keys."""
    for name, prefixes in GROUPS.items():
        if key.startswith(prefixes):
            return name
    return None


# ---------------------------------------------------------------------------------------------------
# sources


def load_source(role: str, voice: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Source:
    """Read voice `role` ("a", "b", "c"): a voice folder (newest G, or `checkpoint`) or a G file.

    Raises KoeError for missing files, a file that is not a 2.3/2.2 generator, or NaN/inf weights.
    """
    from vits.synthesis import find_voice_files

    g_path, config_path = find_voice_files(voice, checkpoint=checkpoint)
    config = VoiceConfig.load(config_path)
    ckpt = read_checkpoint(g_path)
    version = generator_version(ckpt)
    where = f"voice {role.upper()} ({g_path})"
    if version is None:
        raise KoeError("not a Bert-VITS2 2.3 or 2.2 generator", where=where, fix="pick a G_<step>.pth file")
    bad = nonfinite_tensors({"model": ckpt["model"]})
    if bad:
        raise KoeError(f"the weights hold NaN/inf values ({', '.join(bad)})", where=where,
                       fix="pick an older checkpoint of this voice")
    state, norms = fold_weight_norm({_strip_module(k): v for k, v in ckpt["model"].items()})
    step = vf.generator_step(g_path)
    step = ckpt.get("koe_step") if step is None else step
    name = Path(voice).name if Path(voice).is_dir() else g_path.parent.parent.name
    return Source(role, g_path, config_path, config, version, state, norms, step, file_sha256(g_path), name)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fold_weight_norm(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], set[str]]:
    """(state with every weight_g/weight_v pair replaced by its effective ``weight``, those weight keys)."""
    out, norms = {}, set()
    for key, value in state.items():
        if key.endswith(".weight_v") and key[:-2] + "_g" in state:
            stem = key[: -len(".weight_v")]
            g, v = state[stem + ".weight_g"].float(), value.float()
            out[stem + ".weight"] = g * v / v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
            norms.add(stem + ".weight")
        elif key.endswith(".weight_g") and key[:-2] + "_v" in state:
            continue
        else:
            out[key] = value
    return out, norms


def unfold_weight_norm(state: Mapping[str, torch.Tensor], norms: set[str]) -> dict[str, torch.Tensor]:
    """Back to Bert-VITS2's legacy names: weight_v = the weight, weight_g = its norm over every dim but 0."""
    out = {}
    for key, value in state.items():
        if key not in norms:
            out[key] = value
            continue
        stem = key[: -len(".weight")]
        g = value.norm(dim=tuple(range(1, value.dim())), keepdim=True)
        # an all-zero filter: any direction with g = 0 gives 0 (a zero v would divide by zero)
        v = torch.where(g == 0, torch.ones_like(value), value)
        out[stem + ".weight_g"], out[stem + ".weight_v"] = g, v
    return out


# ---------------------------------------------------------------------------------------------------
# checks


def check_compatible(sources: list[Source], rule: str) -> None:
    """Raise KoeError (which voice, which key, the shapes, the fix) unless every source fits voice A."""
    a = sources[0]
    fix = ("merge voices of one architecture: the same Bert-VITS2 version, config.json model sizes and symbol "
           "table (e.g. voices fine-tuned from the same base model)")
    for other in sources[1:]:
        if other.version != a.version:
            raise KoeError(f"{other.where} is Bert-VITS2 {other.version}, voice A is {a.version}", where=str(other.g_path),
                           fix=fix)
        for key in sorted(set(a.state) ^ set(other.state)):
            if key.startswith("enc_q."):
                continue  # a release file has no enc_q: the merge leaves it out (merge_states)
            holder, lacker = (a, other) if key in a.state else (other, a)
            raise KoeError(f"{holder.where} has the tensor {key} but {lacker.where} does not",
                           where=str(lacker.g_path), fix=fix)
        for key, value in a.state.items():
            theirs = other.state.get(key)
            if theirs is None or tuple(theirs.shape) == tuple(value.shape):
                continue
            if key == SPEAKER_TABLE and rule != "id" and theirs.shape[1:] == value.shape[1:]:
                continue  # speakers are matched by name: the table sizes may differ
            why = _explain_shape(key, tuple(theirs.shape), tuple(value.shape), f"file of voice {other.role.upper()}",
                                 "voice A")
            extra = (" (speaker rule 'id' blends row by row: use 'match' to pair speakers by name)"
                     if key == SPEAKER_TABLE else "")
            raise KoeError(f"{key} is {list(theirs.shape)} in {other.where} but {list(value.shape)} in voice A: "
                           f"{why}{extra}", where=str(other.g_path), fix=fix)
        for section, names in (("data", _SAME_DATA), ("model", _SAME_MODEL)):
            mine, theirs = getattr(a.config, section), getattr(other.config, section)
            for name in names:
                if getattr(mine, name, None) != getattr(theirs, name, None):
                    raise KoeError(f"{section}.{name} is {getattr(theirs, name, None)!r} in {other.config_path} but "
                                   f"{getattr(mine, name, None)!r} in voice A's {a.config_path}",
                                   where=str(other.config_path), fix=fix)


def speaker_pairs(sources: list[Source], rule: str) -> dict[str, dict[str, str]]:
    """{A's speaker: {"b": B's speaker, "c": C's}} whose embedding rows are blended ({} for rule "a")."""
    if rule == "a":
        return {}
    a = sources[0]
    pairs = {}
    for name, row in sorted(a.speakers().items(), key=lambda item: item[1]):
        pairs[name] = {}
        for other in sources[1:]:
            theirs = other.speakers()
            if rule == "id":
                by_id = {i: n for n, i in theirs.items()}
                pairs[name][other.role] = by_id.get(row, str(row))
            else:
                first = min(theirs.items(), key=lambda item: item[1])[0]
                pairs[name][other.role] = name if name in theirs else first
    return pairs


# ---------------------------------------------------------------------------------------------------
# the math


def blend(recipe: Recipe, w, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """One tensor merged with `recipe`'s method at weight `w` (float32)."""
    a, b = a.float(), b.float()
    if recipe.method == "weighted":
        return slerp(a, b, float(w)) if recipe.slerp else (1 - float(w)) * a + float(w) * b
    if recipe.method == "add_difference":
        return a + float(w) * (b - c.float())
    wa, wb, wc = (float(x) for x in w)
    return wa * a + wb * b + wc * c.float()


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation of two tensors as flat vectors (lerp when nearly parallel or zero)."""
    fa, fb = a.reshape(-1).double(), b.reshape(-1).double()
    na, nb = fa.norm(), fb.norm()
    if na == 0 or nb == 0:
        return (1 - w) * a + w * b
    cos = torch.clamp(fa.dot(fb) / (na * nb), -1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    if sin < _PARALLEL:
        return (1 - w) * a + w * b
    out = (torch.sin((1 - w) * theta) / sin) * fa + (torch.sin(w * theta) / sin) * fb
    return out.reshape(a.shape).to(a.dtype)


def merge_states(sources: list[Source], recipe: Recipe, buffers: set[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The merged generator state_dict (Bert-VITS2 names) of A, B (and C) by `recipe`.

    `buffers` are keys copied from A (the network's buffers); integer/bool tensors are copied from A too.
    ``enc_q.*`` is left out when a source lacks it (a release file). Raises KoeError as `check_compatible`.
    """
    recipe.check()
    need = 3 if recipe.method in ("add_difference", "weighted_sum") else 2
    if len(sources) != need:
        raise KoeError(f"{recipe.method} merges {need} voices, {len(sources)} given",
                       fix="give voice C (--c)" if need == 3 else "leave voice C out for the weighted method")
    check_compatible(sources, recipe.speakers)
    a, b = sources[0], sources[1]
    c = sources[2] if need == 3 else None
    drop_enc_q = any(not any(k.startswith("enc_q.") for k in s.state) for s in sources)
    out: dict[str, torch.Tensor] = {}
    for key, value in a.state.items():
        if drop_enc_q and key.startswith("enc_q."):
            continue
        if key in buffers or not value.is_floating_point():
            out[key] = value.clone()
        elif key == SPEAKER_TABLE:
            out[key] = _merge_speakers(sources, recipe)
        else:
            out[key] = blend(recipe, recipe.weight_for(key), value, b.state[key], c.state[key] if c else None)
    return unfold_weight_norm(out, a.norms)


def _merge_speakers(sources: list[Source], recipe: Recipe) -> torch.Tensor:
    a = sources[0]
    table = a.state[SPEAKER_TABLE].float().clone()
    if recipe.speakers == "a":
        return table
    if recipe.speakers == "id":
        tables = [s.state[SPEAKER_TABLE] for s in sources]
        return blend(recipe, recipe.weight, tables[0], tables[1], tables[2] if len(tables) > 2 else None)
    for name, partners in speaker_pairs(sources, "match").items():
        row = a.speakers()[name]
        rows = [sources[i].state[SPEAKER_TABLE][sources[i].speakers()[partners[s.role]]]
                for i, s in enumerate(sources) if i > 0]
        table[row] = blend(recipe, recipe.weight, table[row], rows[0], rows[1] if len(rows) > 1 else None)
    return table


def buffer_keys(config: VoiceConfig, version: str) -> set[str]:
    """The buffer names (file spelling) of the generator `config` describes (2.3 has none; 2.2 its VQ state)."""
    from vits.checkpoints.format import _legacy_name
    from vits.models import build_generator

    with torch.device("meta"):
        model = build_generator(config, version=version)
    return {_legacy_name(k) for k, _ in model.named_buffers()}


def merge(sources: list[Source], recipe: Recipe) -> dict[str, torch.Tensor]:
    """`merge_states` with the buffers of A's network copied from A."""
    return merge_states(sources, recipe, buffer_keys(sources[0].config, sources[0].version))


# ---------------------------------------------------------------------------------------------------
# the output voice


def recipe_record(sources: list[Source], recipe: Recipe) -> dict:
    """The merge recipe written beside the merged voice (vits.voice_folder.MERGE_RECIPE)."""
    return {"koe_merge": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **recipe.describe(),
            "group_prefixes": {g: list(p) for g, p in GROUPS.items()},
            "speaker_pairs": speaker_pairs(sources, recipe.speakers),
            "sources": {s.role: {"voice": s.voice, "file": str(s.g_path), "step": s.step, "sha256": s.sha256,
                                 "config": str(s.config_path), "version": s.version} for s in sources}}


def check_output(out_dir: Path, overwrite: bool = False) -> None:
    """Refuse to write over a voice that is not an earlier merge (or any voice without `overwrite`)."""
    out_dir = Path(out_dir)
    has_voice = vf.config_path(out_dir).is_file() or bool(vf.generator_files(out_dir))
    if not has_voice:
        return
    merged_before = (out_dir / vf.MERGE_RECIPE).is_file()
    trained = [p for step, p in vf.generator_files(out_dir) if step > 0]
    if not overwrite or not merged_before or trained:
        why = ("it holds trained checkpoints (" + ", ".join(p.name for p in trained[:3]) + ")" if trained
               else "it is a voice that was not made by a merge" if not merged_before else "it already holds a voice")
        raise KoeError(f"will not write the merged voice there: {why}", where=str(out_dir),
                       fix="pick a new voice name" + ("" if trained or not merged_before
                                                      else ", or pass --overwrite to replace the earlier merge"))


def save_voice(out_dir: str | os.PathLike, sources: list[Source], recipe: Recipe, state: Mapping[str, torch.Tensor],
               overwrite: bool = False) -> Path:
    """Write a normal voice folder: configs/config.json (A's), models/G_0.pth, A's userdict.txt and the recipe.

    G is step 0: the merged voice synthesizes with it, and training the folder fine-tunes from it (a G_0 is a
    base model). The recipe is written last, so its presence means the folder is complete. Returns the G path.
    """
    out_dir = Path(out_dir)
    check_output(out_dir, overwrite)
    a = sources[0]
    g_path = vf.models_dir(out_dir) / "G_0.pth"
    save_checkpoint(g_path, dict(state), epoch=0, step=0, learning_rate=float(a.config.train.learning_rate))
    a.config.save(vf.config_path(out_dir))
    userdict = vf.userdict_for(a.g_path)
    if userdict is not None:
        shutil.copyfile(userdict, out_dir / vf.USERDICT)
    write_json(out_dir / vf.MERGE_RECIPE, recipe_record(sources, recipe))
    return g_path
