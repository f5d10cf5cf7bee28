"""Export a trained voice as ONNX graphs for onnxruntime.

    python -m pipeline.export_onnx Data/<voice> [--checkpoint G_x.pth] [--out DIR]

Writes emb/enc_p/sdp/dp/flow/dec graphs and koe_onnx.json (default: Data/<voice>/onnx/), then checks that
onnxruntime reproduces torch on a short random input. Re-running with the same checkpoint does nothing
(use --force to rewrite). The exported folder runs with `vits.onnx_runtime` (no torch needed) and can be
served with `python -m server --model Data/<voice>/onnx`.
Exit status: 0 written or up to date, 1 failed (including a failed onnxruntime check), 2 usage.
"""

from __future__ import annotations

import sys

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


def export(args) -> int:
    """Export the voice with the command line's options; returns 0. Raises KoeError."""
    import torch

    from vits.onnx_export import GRAPHS, export_voice
    from vits.progress import format_progress

    def progress(step: int, **fields) -> None:
        print(format_progress(STAGE, step=step, total=len(GRAPHS), **fields), flush=True)

    torch.set_num_threads(max(1, args.threads))
    export_voice(cli.voice_path(args.voice, must_exist=False), args.checkpoint, args.out, opset=args.opset,
                 force=args.force, verify=not args.no_verify, progress=progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Export; returns 0 on success, 1 on a failure (message on stderr), 2 on a usage error."""
    args = build_parser().parse_args(argv)
    return cli.run(STAGE, lambda: export(args))


if __name__ == "__main__":
    sys.exit(main())
