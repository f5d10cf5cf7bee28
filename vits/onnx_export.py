"""Export a Bert-VITS2 2.3 or 2.2 generator as six ONNX graphs plus a metadata JSON (spec §6, §11).

The synthesizer is split where randomness or data-dependent sizes sit, so the graphs are plain tensor
programs and the caller (vits.onnx_runtime, numpy only) does the rest:

    emb    sid [1] int64                                   -> g [1, gin, 1]
    enc_p  x, x_lengths, tone, language [1,T]/[1] int64,
           bert, ja_bert, en_bert [1, 1024, T], g          -> hidden [1,H,T], m_p, logs_p [1,C,T], x_mask [1,1,T]
    sdp    hidden, x_mask, zin [1,2,T] (noise·noise_scale_w), g -> logw [1,1,T]   (reverse; skips sdp.flows.1)
    dp     hidden, x_mask, g                               -> logw [1,1,T]
    flow   z_p [1,C,T_y], y_mask [1,1,T_y], g              -> z [1,C,T_y]      (reverse)
    dec    z [1,C,T_y], g                                  -> audio [1,1,hop·T_y]

A 2.2 (CLAP emotion) voice's enc_p graph has one more input, `emo` [1, 512] (the CLAP embedding), and
holds the emotion path with the eval-mode quantiser as plain nearest-code ops (2.2 spec §11); the
metadata then says `"version": "2.2"` and `"Clap": true`.

Durations (exp, ceil), the alignment path and the prior noise are computed by the runtime.

The decoder is written with 2-D convolutions over [B, C, 1, T] (metadata `"conv_layout": "2d"`): onnxruntime's
NCHWc layout and its Conv+activation fusions apply to 2-D Conv only, which takes ~15-25% off the decoder's CPU
time (~90% of the path's). The flow gained nothing measurable that way and stays 1-D. Inputs and outputs are
those of 1-D exports (`conv_layout` absent or "1d"), so every reader runs both; `conv_layout="1d"` still
writes the old decoder.
The files are written with the legacy TorchScript exporter (`dynamo=False`): torch 2.13 still ships it,
and the dynamo exporter needs onnxscript, which is not a dependency.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from vits.config import VoiceConfig
from vits.errors import KoeError
from vits.fileio import atomic_path, write_text_atomic
from vits.symbols import LANGUAGE_ID, LANGUAGE_TONE_START, SYMBOLS
from vits.voice_folder import ONNX_METADATA as METADATA_NAME

GRAPHS = ("emb", "enc_p", "sdp", "dp", "flow", "dec")
CONV_LAYOUTS = ("2d", "1d")
FORMAT_VERSION = 1
OPSET = 17
BERT_MODELS = {"ZH": "chinese-roberta-wwm-ext-large", "JP": "deberta-v2-large-japanese-char-wwm",
               "EN": "deberta-v3-large"}


class _Emb(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.emb_g = model.emb_g

    def forward(self, sid):
        return self.emb_g(sid).unsqueeze(-1)


class _EncP(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.enc_p = model.enc_p

    def forward(self, x, x_lengths, tone, language, bert, ja_bert, en_bert, g):
        return self.enc_p(x, x_lengths, tone, language, bert, ja_bert, en_bert, g=g)


class _EncP22(nn.Module):
    """The 2.2 text encoder with the emotion vector as an input (commitment loss dropped)."""

    def __init__(self, model):
        super().__init__()
        self.enc_p = model.enc_p

    def forward(self, x, x_lengths, tone, language, bert, ja_bert, en_bert, g, emo):
        return self.enc_p(x, x_lengths, tone, language, bert, ja_bert, en_bert, g=g, emo=emo, plain_vq=True)[:4]


class _SdpReverse(nn.Module):
    """The SDP sampling path with its noise as an input (the torch module draws its own)."""

    def __init__(self, model):
        super().__init__()
        self.sdp = model.sdp

    def forward(self, x, x_mask, zin, g):
        sdp = self.sdp
        x = sdp.pre(x)
        if hasattr(sdp, "cond"):
            x = x + sdp.cond(g)
        x = sdp.proj(sdp.convs(x, x_mask)) * x_mask
        flows = list(reversed(sdp.flows))
        flows = flows[:-2] + [flows[-1]]  # sdp.flows.1 is skipped when sampling (spec §4.10)
        z = zin
        for flow in flows:
            z = flow(z, x_mask, g=x, reverse=True)
        return z[:, :1]


class _Dp(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.dp = model.dp

    def forward(self, x, x_mask, g):
        return self.dp(x, x_mask, g=g)


class _FlowReverse(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.flow = model.flow

    def forward(self, z_p, y_mask, g):
        return self.flow(z_p, y_mask, g=g, reverse=True)


class _Dec(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.dec = model.dec

    def forward(self, z, g):
        return self.dec(z, g=g)


def _conv2d(conv: nn.Module) -> nn.Module:
    """A folded Conv1d / ConvTranspose1d as the same convolution over [B, C, 1, T] (weights copied)."""
    one = {"kernel_size": (1, conv.kernel_size[0]), "stride": (1, conv.stride[0]), "padding": (0, conv.padding[0]),
           "dilation": (1, conv.dilation[0]), "groups": conv.groups, "bias": conv.bias is not None}
    if isinstance(conv, nn.ConvTranspose1d):
        new = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, output_padding=(0, conv.output_padding[0]), **one)
    else:
        new = nn.Conv2d(conv.in_channels, conv.out_channels, **one)
    with torch.no_grad():
        new.weight.copy_(conv.weight.unsqueeze(2))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class _Dec2d(nn.Module):
    """`Generator.forward` (vits.models) on [B, C, 1, T] throughout: z [B,C,T], g -> audio [B,1,L], same order of
    operations (the first leaky ReLU of a stage is computed once for its parallel resblocks, as vits.fast_infer)."""

    def __init__(self, model):
        super().__init__()
        from vits.models import LRELU_SLOPE, ResBlock1

        dec = model.dec
        self.slope = LRELU_SLOPE
        self.num_kernels = dec.num_kernels
        self.pre = _conv2d(dec.conv_pre)
        self.cond = _conv2d(dec.cond) if hasattr(dec, "cond") else None
        self.ups = nn.ModuleList(_conv2d(up) for up in dec.ups)
        # Per resblock its steps: (first conv or None for ResBlock2, second conv).
        self.blocks = nn.ModuleList()
        for block in dec.resblocks:
            pairs = zip(block.convs1, block.convs2) if isinstance(block, ResBlock1) else ((None, c) for c in block.convs)
            self.blocks.append(nn.ModuleList(
                nn.ModuleList([_conv2d(c2)] if c1 is None else [_conv2d(c1), _conv2d(c2)]) for c1, c2 in pairs))
        self.post = _conv2d(dec.conv_post)

    def forward(self, z, g):
        x = self.pre(z.unsqueeze(2))
        if self.cond is not None:
            x = x + self.cond(g.unsqueeze(2))
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, self.slope))
            first = F.leaky_relu(x, self.slope)
            xs = None
            for steps in self.blocks[i * self.num_kernels:(i + 1) * self.num_kernels]:
                y = x
                for k, convs in enumerate(steps):
                    act = first if k == 0 else F.leaky_relu(y, self.slope)
                    if len(convs) == 2:
                        act = F.leaky_relu(convs[0](act), self.slope)
                    y = convs[-1](act) + y
                xs = y if xs is None else xs + y
            x = xs / self.num_kernels
        x = self.post(F.leaky_relu(x))  # default slope 0.01 here, as upstream
        return torch.tanh(x).squeeze(2)


def _example_inputs(model, t_x: int, t_y: int, conv_layout: str = "2d") -> dict[str, tuple]:
    """(wrapper, args, input names, output names, dynamic axes) per graph, with random example tensors.

    `conv_layout` "2d" writes the decoder with 2-D convolutions (see the module docstring)."""
    if conv_layout not in CONV_LAYOUTS:
        raise ValueError(f"conv_layout must be one of {CONV_LAYOUTS}, got {conv_layout!r}")
    gen = torch.Generator().manual_seed(0)
    hidden = model.enc_p.hidden_channels
    inter = model.inter_channels
    gin = model.gin_channels
    x = torch.randint(1, len(SYMBOLS), (1, t_x), generator=gen)
    tone = torch.randint(0, 12, (1, t_x), generator=gen)
    language = torch.randint(0, 3, (1, t_x), generator=gen)
    bert = [torch.randn(1, 1024, t_x, generator=gen) for _ in range(3)]
    g = torch.randn(1, gin, 1, generator=gen)
    h = torch.randn(1, hidden, t_x, generator=gen)
    x_mask = torch.ones(1, 1, t_x)
    t_dyn, y_dyn = {1: "T"}, {2: "T"}
    enc_p_args = (x, torch.tensor([t_x]), tone, language, *bert, g)
    enc_p_inputs = ["x", "x_lengths", "tone", "language", "bert", "ja_bert", "en_bert", "g"]
    enc_p = _EncP(model)
    if getattr(model, "emotion", False):
        emo = torch.randn(1, 512, generator=gen)
        enc_p, enc_p_args, enc_p_inputs = _EncP22(model), (*enc_p_args, emo / emo.norm()), [*enc_p_inputs, "emo"]
    dec = _Dec2d(model) if conv_layout == "2d" else _Dec(model)
    return {
        "emb": (_Emb(model), (torch.zeros(1, dtype=torch.long),), ["sid"], ["g"], None),
        "enc_p": (enc_p, enc_p_args, enc_p_inputs, ["hidden", "m_p", "logs_p", "x_mask"],
                  {"x": t_dyn, "tone": t_dyn, "language": t_dyn, "bert": y_dyn, "ja_bert": y_dyn,
                   "en_bert": y_dyn, "hidden": y_dyn, "m_p": y_dyn, "logs_p": y_dyn, "x_mask": y_dyn}),
        "sdp": (_SdpReverse(model), (h, x_mask, torch.randn(1, 2, t_x, generator=gen), g),
                ["hidden", "x_mask", "zin", "g"], ["logw"],
                {"hidden": y_dyn, "x_mask": y_dyn, "zin": y_dyn, "logw": y_dyn}),
        "dp": (_Dp(model), (h, x_mask, g), ["hidden", "x_mask", "g"], ["logw"],
               {"hidden": y_dyn, "x_mask": y_dyn, "logw": y_dyn}),
        "flow": (_FlowReverse(model), (torch.randn(1, inter, t_y, generator=gen), torch.ones(1, 1, t_y), g),
                 ["z_p", "y_mask", "g"], ["z"], {"z_p": y_dyn, "y_mask": y_dyn, "z": y_dyn}),
        "dec": (dec, (torch.randn(1, inter, t_y, generator=gen), g), ["z", "g"], ["audio"],
                {"z": y_dyn, "audio": y_dyn}),
    }


def _export_graph(wrapper: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes,
                  opset: int) -> None:
    """One graph to `path`, written to a temp file first so a crash never leaves a half file."""
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter warns about its deprecation and about traced Python ints; both are expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper.eval(), args, str(tmp), dynamo=False, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, opset_version=opset,
                          do_constant_folding=True)


def metadata_for(cfg: VoiceConfig, model, *, source: dict | None = None, opset: int = OPSET,
                 conv_layout: str = "2d") -> dict:
    """The metadata JSON written beside the graphs: symbols, speakers, tone/language maps, audio settings."""
    spk2id = dict(cfg.data.spk2id) or {str(i): i for i in range(cfg.data.n_speakers)}
    return {
        "format": "koe-onnx",
        "format_version": FORMAT_VERSION,
        "version": getattr(model, "version", "2.3"),
        "graphs": {name: f"{name}.onnx" for name in GRAPHS},
        "symbols": list(SYMBOLS),
        "spk2id": spk2id,
        "speakers": [name for name, _ in sorted(spk2id.items(), key=lambda kv: kv[1])],
        "n_speakers": cfg.data.n_speakers,
        # Bert-VITS2's exporter key: language -> [language id, tone offset].
        "LanguageMap": {lang: [LANGUAGE_ID[lang], LANGUAGE_TONE_START[lang]] for lang in ("ZH", "JP", "EN")},
        "sampling_rate": cfg.data.sampling_rate,
        "hop_length": cfg.data.hop_length,
        "add_blank": cfg.data.add_blank,
        "inter_channels": model.inter_channels,
        "hidden_channels": model.hidden_channels,
        "gin_channels": model.gin_channels,
        "BertSize": 1024,
        "bert_models": dict(BERT_MODELS),
        "Clap": bool(getattr(model, "emotion", False)),
        "opset": opset,
        "conv_layout": conv_layout,  # "2d": the decoder's convolutions over [B, C, 1, T]; same inputs/outputs
        "source": source or {},
    }


def export_onnx(model, cfg: VoiceConfig, out_dir: str | os.PathLike, *, source: dict | None = None,
                opset: int = OPSET, example_lengths: tuple[int, int] = (17, 40), graphs=GRAPHS,
                on_graph=None, conv_layout: str = "2d") -> Path:
    """Write the six graphs and `koe_onnx.json` into `out_dir` (metadata last: its presence means complete).

    Args:
        model: a SynthesizerTrn, ideally after `prepare_for_inference` (eval, weight norm folded).
        cfg: the voice's VoiceConfig (speakers, audio settings).
        source: provenance stored in the metadata (checkpoint path, step, sha256).
        example_lengths: (T_x, T_y) of the tracing examples; any length works at run time.
        graphs: the subset of GRAPHS to write (metadata is written only for the full set).
        on_graph: optional callback(name) after each graph (progress).
        conv_layout: "2d" (default, faster on onnxruntime's CPU provider) or "1d" (the graphs of earlier exports).
    Returns:
        the metadata path (or the folder when only some graphs were asked for).
    Raises:
        KoeError when the model cannot be traced.
    """
    out = Path(out_dir)
    if getattr(model, "korean", False):  # its enc_p has a fourth BERT input the graphs do not have yet
        raise KoeError("ONNX export of a Korean-enabled voice is not supported yet", where=str(out),
                       fix="synthesize this voice with PyTorch (python -m pipeline.synthesize, the studio, the API)")
    model = model.eval()
    specs = _example_inputs(model, *example_lengths, conv_layout=conv_layout)
    for name in graphs:
        wrapper, args, inputs, outputs, axes = specs[name]
        try:
            _export_graph(wrapper, args, out / f"{name}.onnx", inputs, outputs, axes, opset)
        except Exception as exc:  # the exporter raises many types; say which graph failed
            raise KoeError(f"ONNX export of the '{name}' graph failed: {type(exc).__name__}: {exc}",
                           where=str(out / f"{name}.onnx"),
                           fix="check that the checkpoint matches its config.json; report the error") from exc
        if on_graph is not None:
            on_graph(name)
    if set(graphs) != set(GRAPHS):
        return out
    meta_path = out / METADATA_NAME
    write_text_atomic(meta_path, json.dumps(metadata_for(cfg, model, source=source, opset=opset, conv_layout=conv_layout),
                                            ensure_ascii=False, indent=2) + "\n")
    return meta_path


def export_decoder(model, path: str | os.PathLike, opset: int = OPSET, conv_layout: str = "2d") -> Path:
    """Write only the decoder graph (z, g -> audio), for `attach_onnx_decoder`. Returns the path."""
    path = Path(path)
    wrapper, args, inputs, outputs, axes = _example_inputs(model.eval(), 17, 40, conv_layout)["dec"]
    _export_graph(wrapper, args, path, inputs, outputs, axes, opset)
    return path


class OnnxDecoderModule(nn.Module):
    """A drop-in for `SynthesizerTrn.dec` that runs the decoder graph on onnxruntime (CPU by default).

    `forward(z, g=None)` takes and returns torch tensors like the Generator. No parameters: use it only
    for inference, after the weights were loaded.
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None):
        super().__init__()
        from vits.onnx_runtime import OnnxDecoder

        self.session = OnnxDecoder(path, providers=providers, threads=threads)

    def forward(self, z: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if g is None:
            raise KoeError("the ONNX decoder needs the speaker embedding g", where="OnnxDecoderModule",
                           fix="call it as dec(z, g=g) like SynthesizerTrn.infer does")
        return self.session(z, g)


def attach_onnx_decoder(model, path: str | os.PathLike, providers: list[str] | None = None,
                        threads: int | None = None):
    """Replace `model.dec` by the ONNX decoder at `path` (export it first with `export_decoder`).

    Returns the same model; `model.infer(...)` then decodes with onnxruntime.
    """
    model.dec = OnnxDecoderModule(path, providers=providers, threads=threads)
    return model


# ----------------------------------------------------------------------------------------------------------
# Loading the checkpoint of a voice (find it with vits.synthesis.find_voice_files)


def load_generator(g_path: str | os.PathLike, cfg: VoiceConfig):
    """Build G from `cfg` (2.3 or 2.2 as the file's keys say), load `g_path` strictly and prepare it for
    inference. Raises KoeError."""
    from vits.checkpoints import generator_version, load_weights, read_checkpoint
    from vits.models import build_generator, prepare_for_inference

    ckpt = read_checkpoint(g_path)
    model = build_generator(cfg, version=generator_version(ckpt))
    load_weights(model, ckpt, kind="G", where=str(g_path))
    return prepare_for_inference(model)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (provenance in the metadata)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_up_to_date(out_dir: str | os.PathLike, sha256: str) -> bool:
    """True when `out_dir` holds every graph and metadata exported from the G file with this SHA-256."""
    out_dir = Path(out_dir)
    meta_path = out_dir / METADATA_NAME
    if not meta_path.is_file():
        return False
    try:
        old = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    complete = all((out_dir / f"{name}.onnx").is_file() for name in GRAPHS)
    # An export of the same checkpoint in the older 1-D layout is re-exported (it still loads meanwhile).
    current = old.get("conv_layout", "1d") == CONV_LAYOUTS[0]
    return old.get("source", {}).get("sha256") == sha256 and complete and current


def verify_export(model, out_dir: str | os.PathLike, n_speakers: int) -> float:
    """Max |onnxruntime - torch| audio difference on a random 15-token input with all noise off."""
    import numpy as np

    from vits.onnx_runtime import OnnxSynthesizer

    gen = torch.Generator().manual_seed(1234)
    t = 15
    x = torch.randint(1, 100, (1, t), generator=gen)
    tone = torch.randint(0, 12, (1, t), generator=gen)
    lang = torch.randint(0, 3, (1, t), generator=gen)
    berts = [torch.randn(1, 1024, t, generator=gen) for _ in range(3)]
    sid = torch.tensor([n_speakers - 1])
    emo = None
    if getattr(model, "emotion", False):
        emo = torch.randn(1, 512, generator=gen)
        emo = emo / emo.norm()
    with torch.no_grad():
        ref = model.infer(x, torch.tensor([t]), sid, tone, lang, *berts, noise_scale=0.0, noise_scale_w=0.0,
                          sdp_ratio=0.5, emo=emo)[0][0, 0].numpy()
    synth = OnnxSynthesizer(out_dir)
    got = synth.infer(x[0], tone[0], lang[0], *(b[0] for b in berts), speaker=int(sid[0]), sdp_ratio=0.5,
                      noise_scale=0.0, noise_scale_w=0.0, emo=None if emo is None else emo[0].numpy())
    if got.shape != ref.shape:
        return float("inf")
    return float(np.abs(got - ref).max())


VERIFY_LIMIT = 1e-3  # max abs audio difference onnxruntime may show against torch


def export_voice(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None, *, opset: int = OPSET, force: bool = False,
                 verify: bool = True, progress=None) -> tuple[Path, float | None]:
    """Export a voice (folder or G file) to ONNX and check the result against torch.

    Takes the voice folder or G file, an optional checkpoint name/path, the output folder (default:
    ``<voice>/onnx``), and `progress(step, **fields)` called as graphs are written (step = graphs done).
    Re-exporting the same G file into a complete folder does nothing unless `force`.
    Returns (output folder, max abs difference or None when not verified / already up to date).
    Raises KoeError for missing files, a checkpoint that does not fit, or graphs that differ from torch by
    more than VERIFY_LIMIT.
    """
    from vits.checkpoints import checkpoint_step
    from vits.synthesis import find_voice_files
    from vits.voice_folder import MODELS, ONNX

    def report(step: int, **fields) -> None:
        if progress is not None:
            progress(step, **fields)

    path = Path(path)
    g_path, config_path = find_voice_files(path, checkpoint)
    if out_dir is not None:
        out_dir = Path(out_dir)
    elif path.is_dir():
        out_dir = path / ONNX
    else:  # Data/<voice>/models/G_x.pth -> Data/<voice>/onnx
        out_dir = (g_path.parent.parent if g_path.parent.name == MODELS else g_path.parent) / ONNX
    sha = file_sha256(g_path)
    if not force and is_up_to_date(out_dir, sha):
        report(len(GRAPHS), message=f"up to date: {out_dir} (use --force to export again)")
        return out_dir, None
    cfg = VoiceConfig.load(config_path)
    report(0, message=f"loading {g_path.name}")
    model = load_generator(g_path, cfg)
    try:
        step = checkpoint_step(g_path)
    except KoeError:
        step = None
    done = []

    def on_graph(name):
        done.append(name)
        report(len(done), item=f"{name}.onnx")

    source = {"checkpoint": str(g_path), "sha256": sha, "step": step, "config": str(config_path)}
    meta_path = export_onnx(model, cfg, out_dir, source=source, opset=opset, on_graph=on_graph)
    diff = None
    if verify:
        diff = verify_export(model, out_dir, cfg.data.n_speakers)
        report(len(GRAPHS), message=f"onnxruntime vs torch: max abs diff {diff:.2e}")
        if not diff < VERIFY_LIMIT:
            raise KoeError(f"the ONNX graphs differ from torch by {diff:.3g} (limit {VERIFY_LIMIT:g})",
                           where=str(out_dir), fix="report this with the checkpoint's config.json")
    report(len(GRAPHS), message=f"wrote {meta_path}")
    return out_dir, diff
