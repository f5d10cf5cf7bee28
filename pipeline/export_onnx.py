"""Export a trained voice as ONNX graphs for onnxruntime.

    python -m pipeline.export_onnx Data/<voice> [--checkpoint G_x.pth] [--out DIR]

Writes emb/enc_p/sdp/dp/flow/dec graphs and koe_onnx.json (default: Data/<voice>/onnx/), then checks that
onnxruntime reproduces torch on a short random input. Re-running with the same checkpoint does nothing
(use --force to rewrite). The exported folder runs with `vits.onnx_runtime` (no torch needed) and can be
served with `python -m server --model Data/<voice>/onnx`.
Exit status: 0 written or up to date, 1 failed (including a failed onnxruntime check), 2 usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline import cli

STAGE = "export_onnx"


def build_parser():
    parser = cli.parser(STAGE, __doc__)
    parser.add_argument("voice", help=cli.VOICE_HELP + ", or a G_<step>.pth file")
    parser.add_argument("--checkpoint", default=None, help="G file to export (default: the newest in models/)")
    parser.add_argument("--out", default=None, help="output folder (default: <voice>/onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--force", action="store_true", help="export even if the folder is up to date")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return parser


def _verify(model, out_dir: Path, n_speakers: int) -> float:
    """Max |onnx - torch| audio difference on a random 15-token input with all noise off."""
    import numpy as np
    import torch

    from vits.onnx_runtime import OnnxSynthesizer

    gen = torch.Generator().manual_seed(1234)
    t = 15
    x = torch.randint(1, 100, (1, t), generator=gen)
    tone = torch.randint(0, 12, (1, t), generator=gen)
    lang = torch.randint(0, 3, (1, t), generator=gen)
    berts = [torch.randn(1, 1024, t, generator=gen) for _ in range(3)]
    sid = torch.tensor([n_speakers - 1])
    with torch.no_grad():
        ref = model.infer(x, torch.tensor([t]), sid, tone, lang, *berts, noise_scale=0.0, noise_scale_w=0.0,
                          sdp_ratio=0.5)[0][0, 0].numpy()
    synth = OnnxSynthesizer(out_dir)
    got = synth.infer(x[0], tone[0], lang[0], *(b[0] for b in berts), speaker=int(sid[0]), sdp_ratio=0.5,
                      noise_scale=0.0, noise_scale_w=0.0)
    if got.shape != ref.shape:
        return float("inf")
    return float(np.abs(got - ref).max())


def _up_to_date(out_dir: Path, sha: str) -> bool:
    from vits.onnx_export import GRAPHS, METADATA_NAME

    meta_path = out_dir / METADATA_NAME
    if not meta_path.is_file():
        return False
    try:
        old = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    complete = all((out_dir / f"{name}.onnx").is_file() for name in GRAPHS)
    return old.get("source", {}).get("sha256") == sha and complete


def export(args) -> int:
    """Find the voice's G file, export it, check it; returns the exit status. Raises KoeError."""
    import torch

    from vits.checkpoints import checkpoint_step
    from vits.config import VoiceConfig
    from vits.errors import KoeError
    from vits.onnx_export import GRAPHS, export_onnx, file_sha256, load_generator
    from vits.progress import format_progress
    from vits.synthesis import find_voice_files
    from vits.voice_folder import MODELS, ONNX

    def progress(step: int, **fields) -> None:
        print(format_progress(STAGE, step=step, total=len(GRAPHS), **fields), flush=True)

    torch.set_num_threads(max(1, args.threads))
    voice = cli.voice_path(args.voice, must_exist=False)
    g_path, config_path = find_voice_files(voice, args.checkpoint)
    if args.out:
        out_dir = Path(args.out)
    elif voice.is_dir():
        out_dir = voice / ONNX
    else:  # Data/<voice>/models/G_x.pth -> Data/<voice>/onnx
        out_dir = (g_path.parent.parent if g_path.parent.name == MODELS else g_path.parent) / ONNX
    sha = file_sha256(g_path)
    if not args.force and _up_to_date(out_dir, sha):
        progress(len(GRAPHS), message=f"up to date: {out_dir} (use --force to export again)")
        return 0
    cfg = VoiceConfig.load(config_path)
    progress(0, message=f"loading {g_path.name}")
    model = load_generator(g_path, cfg)
    try:
        step = checkpoint_step(g_path)
    except KoeError:
        step = None
    done = []

    def on_graph(name):
        done.append(name)
        progress(len(done), item=f"{name}.onnx")

    source = {"checkpoint": str(g_path), "sha256": sha, "step": step, "config": str(config_path)}
    meta_path = export_onnx(model, cfg, out_dir, source=source, opset=args.opset, on_graph=on_graph)
    if not args.no_verify:
        diff = _verify(model, out_dir, cfg.data.n_speakers)
        progress(len(GRAPHS), message=f"onnxruntime vs torch: max abs diff {diff:.2e}")
        if not diff < 1e-3:
            return cli.error(STAGE, f"the ONNX graphs differ from torch by {diff:.3g} (limit 1e-3) → report "
                                    "this with the checkpoint's config.json")
    progress(len(GRAPHS), message=f"wrote {meta_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Export; returns 0 on success, 1 on a failure (message on stderr), 2 on a usage error."""
    args = build_parser().parse_args(argv)
    return cli.run(STAGE, lambda: export(args))


if __name__ == "__main__":
    sys.exit(main())
