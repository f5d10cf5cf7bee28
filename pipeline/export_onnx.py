"""Export a trained voice as ONNX graphs for onnxruntime.

    python -m pipeline.export_onnx Data/<voice> [--checkpoint G_x.pth] [--out DIR] [--bert [--int8]]

Writes emb/enc_p/sdp/dp/flow/dec graphs and koe_onnx.json (default: Data/<voice>/onnx/), then checks that
onnxruntime reproduces torch on a short random input. Re-running with the same checkpoint does nothing
(use --force to rewrite). The exported folder runs with `vits.onnx_runtime` (no torch needed) and can be
served with `python -m server --model Data/<voice>/onnx`.

--bert also exports the BERT models the voice reads (the languages of its train/val lists, or
--bert-languages; model folders from config.yml `bert:`) into <out>/bert/, each checked against torch, so
that text -> audio needs no torch at all; --int8 adds an int8-quantised copy of each and prints its measured
feature error against fp32 (also in <out>/bert/koe_bert.json). An existing complete BERT export with the
same languages is kept unless --force.
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
    parser.add_argument("--bert", action="store_true", help="export the voice's BERT models too (torch-free text)")
    parser.add_argument("--int8", action="store_true", help="with --bert: add int8-quantised BERT graphs")
    parser.add_argument("--bert-languages", default=None,
                        help="with --bert: comma-separated languages, e.g. ZH,JP (default: the voice's languages)")
    return parser


def voice_languages(voice) -> list[str]:
    """The languages of a voice's train/val lists (ZH/JP/EN order); empty when it has no lists."""
    from vits.lists import read_cleaned_list
    from vits.voice_folder import TRAIN_LIST, VAL_LIST

    found: set[str] = set()
    folder = voice if voice.is_dir() else voice.parent.parent
    for name in (TRAIN_LIST, VAL_LIST):
        if (folder / name).is_file():
            found |= {line.language for _, line in read_cleaned_list(folder / name)}
    return [lang for lang in ("ZH", "JP", "EN", "KO") if lang in found]


def export_bert(args, out_dir, progress) -> None:
    """Export the BERT graphs into `out_dir`/bert. Raises KoeError (no languages, a missing model folder)."""
    import json

    from settings import load_settings
    from vits.errors import KoeError
    from vits.onnx_bert_export import describe, export_berts
    from vits.text.bert import BertFeatures
    from vits.voice_folder import ONNX_BERT, ONNX_BERT_METADATA

    voice = cli.voice_path(args.voice, must_exist=False)
    if args.bert_languages:
        languages = [x.strip().upper() for x in args.bert_languages.split(",") if x.strip()]
    else:
        languages = voice_languages(voice)
    if not languages:
        raise KoeError("which BERT models to export? the voice has no train/val lists to tell its languages",
                       where=str(voice), fix="pass --bert-languages ZH,JP,EN (the languages it speaks)")
    target = out_dir / ONNX_BERT
    meta_path = target / ONNX_BERT_METADATA
    if meta_path.is_file() and not args.force:
        old = json.loads(meta_path.read_text(encoding="utf-8")).get("languages", {})
        if set(old) == set(languages) and all("int8" in e.get("graphs", {}) or not args.int8 for e in old.values()):
            for lang, entry in old.items():
                progress(len(languages), item=lang, message=describe(lang, entry) + " (up to date)")
            return
    settings = load_settings()
    bert = BertFeatures({lang: settings.bert[lang] for lang in languages if lang in settings.bert})
    export_berts(bert, languages, target, int8=args.int8, opset=args.opset, progress=progress)


def export(args) -> int:
    """Export the voice with the command line's options; returns 0. Raises KoeError."""
    import torch

    from vits.onnx_export import GRAPHS, export_voice
    from vits.progress import format_progress

    def progress(step: int, **fields) -> None:
        print(format_progress(STAGE, step=step, total=len(GRAPHS), **fields), flush=True)

    torch.set_num_threads(max(1, args.threads))
    out_dir, _diff = export_voice(cli.voice_path(args.voice, must_exist=False), args.checkpoint, args.out,
                                  opset=args.opset, force=args.force, verify=not args.no_verify, progress=progress)
    if args.bert:
        export_bert(args, out_dir, lambda step, **fields: print(format_progress(STAGE, step=step, **fields),
                                                                 flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Export; returns 0 on success, 1 on a failure (message on stderr), 2 on a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.int8 and not args.bert:
        parser.error("--int8 quantises the BERT graphs: use it with --bert")
    return cli.run(STAGE, lambda: export(args))


if __name__ == "__main__":
    sys.exit(main())
