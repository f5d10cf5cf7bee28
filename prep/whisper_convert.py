"""Turn a hub-hosted Whisper (the transformers-format repos `openai/whisper-<name>`: config.json +
model.safetensors) into openai-whisper's checkpoint format, so mirror users get Whisper from the hub.

openai-whisper's `.pt` is a torch file `{"dims": ModelDimensions fields, "model_state_dict": ...}`; the
weights are the same numbers under other names (the mapping below), except the output projection, which
both tie to the token embedding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vits.errors import KoeError

# openai-whisper names whose hub repo is not simply openai/whisper-<name>.
HUB_REPOS = {"large": "openai/whisper-large-v3", "large-v1": "openai/whisper-large",
             "turbo": "openai/whisper-large-v3-turbo"}
HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]

# transformers sub-module name -> openai-whisper sub-module name, inside one encoder/decoder layer.
_LAYER_PARTS = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
                "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
                "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
                "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
                "encoder_attn_layer_norm": "cross_attn_ln", "fc1": "mlp.0", "fc2": "mlp.2",
                "final_layer_norm": "mlp_ln"}
_TOP = {"encoder.conv1": "encoder.conv1", "encoder.conv2": "encoder.conv2",
        "encoder.embed_positions.weight": "encoder.positional_embedding", "encoder.layer_norm": "encoder.ln_post",
        "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
        "decoder.embed_positions.weight": "decoder.positional_embedding", "decoder.layer_norm": "decoder.ln"}
_SKIPPED = ("proj_out.weight",)  # tied to decoder.embed_tokens; openai-whisper reuses the embedding too


def hub_repo(name: str) -> str:
    """The hub repository holding the transformers weights of the openai-whisper model `name`."""
    return HUB_REPOS.get(name, f"openai/whisper-{name}")


def dims_from_config(config: dict, where: str) -> dict:
    """openai-whisper's ModelDimensions (as a dict) from a transformers WhisperConfig dict.

    Raises KoeError when the config is not a Whisper config."""
    try:
        return {"n_mels": config["num_mel_bins"], "n_audio_ctx": config["max_source_positions"],
                "n_audio_state": config["d_model"], "n_audio_head": config["encoder_attention_heads"],
                "n_audio_layer": config["encoder_layers"], "n_vocab": config["vocab_size"],
                "n_text_ctx": config["max_target_positions"], "n_text_state": config["d_model"],
                "n_text_head": config["decoder_attention_heads"], "n_text_layer": config["decoder_layers"]}
    except KeyError as exc:
        raise KoeError(f"not a Whisper config.json (no {exc.args[0]!r})", where=where,
                       fix="download the repository again (python -m pipeline.download whisper --source hub)") from None


def openai_key(key: str) -> str | None:
    """The openai-whisper state_dict key of a transformers key (None: a key openai-whisper has no use for).

    Raises KeyError for a key that is neither mapped nor known to be skipped."""
    key = key.removeprefix("model.")
    if key in _SKIPPED:
        return None
    for hf, ours in _TOP.items():
        if key == hf or key.startswith(hf + "."):
            return ours + key[len(hf):]
    side, layers, index, rest = key.split(".", 3)  # e.g. encoder.layers.3.self_attn.q_proj.weight
    if side not in ("encoder", "decoder") or layers != "layers":
        raise KeyError(key)
    part, _, param = rest.rpartition(".")
    return f"{side}.blocks.{index}.{_LAYER_PARTS[part]}.{param}"


def _read_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    single = folder / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        weights: dict = {}
        for shard in shards:
            weights.update(load_file(str(folder / shard)))
        return weights
    raise KoeError("no model.safetensors in the downloaded Whisper repository", where=str(folder),
                   fix="download it again (python -m pipeline.download whisper --source hub)")


def convert(folder: str | Path, target: str | Path) -> Path:
    """Write the openai-whisper checkpoint of the transformers Whisper in `folder` (config.json +
    model.safetensors, or shards with their index) to `target` (atomically). Returns `target`.

    Raises KoeError for a missing or foreign config, missing weights or weights that do not fit."""
    import torch

    folder, target = Path(folder), Path(target)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise KoeError("no config.json in the downloaded Whisper repository", where=str(folder),
                       fix="download it again (python -m pipeline.download whisper --source hub)")
    dims = dims_from_config(json.loads(config_path.read_text(encoding="utf-8")), str(config_path))
    state: dict = {}
    for key, tensor in _read_weights(folder).items():
        try:
            ours = openai_key(key)
        except (KeyError, ValueError):
            raise KoeError(f"unexpected tensor {key!r} in the Whisper weights", where=str(folder),
                           fix="use a repository of openai/whisper-* (transformers format)") from None
        if ours is not None:
            state[ours] = tensor.contiguous()
    _check_complete(state, dims, folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    torch.save({"dims": dims, "model_state_dict": state}, partial)
    os.replace(partial, target)
    return target


def expected_shapes(dims: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of openai-whisper's model (its state_dict) and its shape, for the given ModelDimensions."""
    shapes: dict[str, tuple[int, ...]] = {}
    for side, state, layers, cross in (("encoder", dims["n_audio_state"], dims["n_audio_layer"], False),
                                       ("decoder", dims["n_text_state"], dims["n_text_layer"], True)):
        for i in range(layers):
            block = f"{side}.blocks.{i}"
            for attn in ("attn", "cross_attn") if cross else ("attn",):
                for proj in ("query", "key", "value", "out"):
                    shapes[f"{block}.{attn}.{proj}.weight"] = (state, state)
                    if proj != "key":  # openai-whisper's key projection has no bias
                        shapes[f"{block}.{attn}.{proj}.bias"] = (state,)
                shapes[f"{block}.{attn}_ln.weight"] = shapes[f"{block}.{attn}_ln.bias"] = (state,)
            shapes[f"{block}.mlp.0.weight"], shapes[f"{block}.mlp.0.bias"] = (4 * state, state), (4 * state,)
            shapes[f"{block}.mlp.2.weight"], shapes[f"{block}.mlp.2.bias"] = (state, 4 * state), (state,)
            shapes[f"{block}.mlp_ln.weight"] = shapes[f"{block}.mlp_ln.bias"] = (state,)
    audio, text = dims["n_audio_state"], dims["n_text_state"]
    shapes.update({"encoder.conv1.weight": (audio, dims["n_mels"], 3), "encoder.conv1.bias": (audio,),
                   "encoder.conv2.weight": (audio, audio, 3), "encoder.conv2.bias": (audio,),
                   "encoder.positional_embedding": (dims["n_audio_ctx"], audio),
                   "encoder.ln_post.weight": (audio,), "encoder.ln_post.bias": (audio,),
                   "decoder.token_embedding.weight": (dims["n_vocab"], text),
                   "decoder.positional_embedding": (dims["n_text_ctx"], text),
                   "decoder.ln.weight": (text,), "decoder.ln.bias": (text,)})
    return shapes


def _check_complete(state: dict, dims: dict, folder: Path) -> None:
    """Every tensor openai-whisper's model needs is present with its shape, and nothing else."""
    expected = expected_shapes(dims)
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    extra = [k for k in state if k not in expected]
    if missing or wrong or extra:
        problem = "; ".join(f"{what} {', '.join(keys[:3])}" for what, keys in (
            ("missing", missing), ("wrong shape of", wrong), ("unexpected", extra)) if keys)
        raise KoeError(f"the Whisper weights do not fit the model their config.json describes ({problem})",
                       where=str(folder), fix="download the repository again (python -m pipeline.download whisper "
                                              "--source hub)")
