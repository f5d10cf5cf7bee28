"""Export a voice to ONNX: `python -m pipeline.export_onnx Data/<voice> [--checkpoint G_x.pth] [--out DIR]`.

Writes emb/enc_p/sdp/dp/flow/dec graphs and koe_onnx.json (default: Data/<voice>/onnx/), then checks that
onnxruntime reproduces torch on a short random input. Re-running with the same checkpoint does nothing
(use --force to rewrite). The exported folder runs with `vits.onnx_runtime` (no torch needed) and can be
served with `python -m server --model Data/<voice>/onnx`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.export_onnx",
                                     description="Export a trained voice as ONNX graphs for onnxruntime.")
    parser.add_argument("voice", help="voice folder (Data/<voice>) or a G_<step>.pth file")
    parser.add_argument("--checkpoint", default=None, help="G file to export (default: the newest in models/)")
    parser.add_argument("--out", default=None, help="output folder (default: <voice>/onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--force", action="store_true", help="export even if the folder is up to date")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return parser.parse_args(argv)


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


def main(argv=None) -> int:
    """Export; returns 0 on success, 1 when the check fails, 2 on a user error."""
    args = parse_args(argv)
    from vits.errors import KoeError
    from vits.progress import format_progress

    try:
        import torch

        from vits.config import VoiceConfig
        from vits.onnx_export import (
            GRAPHS,
            METADATA_NAME,
            export_onnx,
            file_sha256,
            find_voice_files,
            load_generator,
        )

        torch.set_num_threads(max(1, args.threads))
        voice = Path(args.voice)
        g_path, config_path = find_voice_files(voice, args.checkpoint)
        if args.out:
            out_dir = Path(args.out)
        elif voice.is_dir():
            out_dir = voice / "onnx"
        else:  # Data/<voice>/models/G_x.pth -> Data/<voice>/onnx
            out_dir = (g_path.parent.parent if g_path.parent.name == "models" else g_path.parent) / "onnx"
        sha = file_sha256(g_path)
        meta_path = out_dir / METADATA_NAME
        if meta_path.is_file() and not args.force:
            try:
                old = json.loads(meta_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                old = {}
            complete = all((out_dir / f"{name}.onnx").is_file() for name in GRAPHS)
            if old.get("source", {}).get("sha256") == sha and complete:
                print(format_progress("export_onnx", step=len(GRAPHS), total=len(GRAPHS),
                                      message=f"up to date: {out_dir} (use --force to export again)"), flush=True)
                return 0
        cfg = VoiceConfig.load(config_path)
        print(format_progress("export_onnx", step=0, total=len(GRAPHS), message=f"loading {g_path.name}"),
              flush=True)
        model = load_generator(g_path, cfg)
        from vits.checkpoints import checkpoint_step

        try:
            step = checkpoint_step(g_path)
        except KoeError:
            step = None
        done = []

        def on_graph(name):
            done.append(name)
            print(format_progress("export_onnx", step=len(done), total=len(GRAPHS), item=f"{name}.onnx"),
                  flush=True)

        source = {"checkpoint": str(g_path), "sha256": sha, "step": step, "config": str(config_path)}
        meta_path = export_onnx(model, cfg, out_dir, source=source, opset=args.opset, on_graph=on_graph)
    except KoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.no_verify:
        diff = _verify(model, out_dir, cfg.data.n_speakers)
        print(format_progress("export_onnx", step=len(GRAPHS), total=len(GRAPHS),
                              message=f"onnxruntime vs torch: max abs diff {diff:.2e}"), flush=True)
        if not diff < 1e-3:
            print(f"error: the ONNX graphs differ from torch by {diff:.3g} (limit 1e-3) → report this with the "
                  f"checkpoint's config.json", file=sys.stderr)
            return 1
    print(format_progress("export_onnx", step=len(GRAPHS), total=len(GRAPHS), message=f"wrote {meta_path}"),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
