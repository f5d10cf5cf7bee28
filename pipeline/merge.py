"""Merge voices into a new one: blend the generator weights of voices A, B (and C).

    python -m pipeline.merge --a Data/x --b Data/y --method weighted --weight 0.5 --out Data/merged
    python -m pipeline.merge --a Data/x --b Data/y --weight 0.5 --timbre 0.8 --rhythm 0.2 --slerp --out Data/m
    python -m pipeline.merge --a Data/x --b Data/y --c Data/base --method add_difference --weight 1 --out Data/m
    python -m pipeline.merge --a Data/x --b Data/y --c Data/z --method weighted_sum --weights 0.5,0.3,0.2 --out Data/m

Methods: weighted (1−w)A + wB; add_difference A + w(B − C); weighted_sum a·A + b·B + c·C. --timbre (decoder),
--pitch (flow), --style (text encoder) and --rhythm (duration predictors) override the weight per component
(three numbers a,b,c each for weighted_sum); other weights (enc_q, the speaker embedding) take --weight.
The merged voice has A's speakers and config; --speakers says how its speaker embedding rows are made
(match: blended with B's/C's speaker of the same name, else their first speaker; a: A's rows; id: row by row).
Writes <out>/configs/config.json, <out>/models/G_0.pth (the merged voice; training it fine-tunes from it)
and <out>/merge.json (sources with sha256, method, weights). --test-text also writes <out>/merge_test.wav.
Exit status: 0 written, 1 failed (the voices do not fit, a file is missing, ...), 2 usage.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import cli

STAGE = "merge"
GROUP_FLAGS = ("timbre", "pitch", "style", "rhythm")


def build_parser():
    parser = cli.parser(STAGE, __doc__)
    for role in ("a", "b", "c"):
        parser.add_argument(f"--{role}", required=role != "c", default=None,
                            help=f"voice {role.upper()}: a voice folder, voice name or G file"
                                 + (" (add_difference, weighted_sum)" if role == "c" else ""))
        parser.add_argument(f"--{role}-checkpoint", default=None,
                            help=f"G file of voice {role.upper()} (default: its newest G_<step>.pth)")
    parser.add_argument("--method", default="weighted", choices=["weighted", "add_difference", "weighted_sum"])
    parser.add_argument("--weight", type=float, default=0.5, help="w for weighted/add_difference (default 0.5)")
    parser.add_argument("--weights", default=None, help="a,b,c for weighted_sum, e.g. 0.5,0.3,0.2")
    for group in GROUP_FLAGS:
        parser.add_argument(f"--{group}", default=None, help=f"weight of the {group} component (default: --weight)")
    parser.add_argument("--slerp", action="store_true", help="spherical interpolation (weighted only)")
    parser.add_argument("--speakers", default="match", choices=["match", "a", "id"],
                        help="speaker embedding rule (default match)")
    parser.add_argument("--out", required=True, help="the new voice folder (Data/<name>) or name")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier merge in --out")
    parser.add_argument("--test-text", default=None, help="also synthesize this text into <out>/merge_test.wav")
    parser.add_argument("--language", default="ZH", help="language of --test-text (default ZH)")
    return parser


def _number(text: str, flag: str, triple: bool):
    from vits.errors import KoeError

    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise KoeError(f"--{flag} {text!r} is not a number", fix="e.g. 0.5, or 0.5,0.3,0.2 for weighted_sum") from None
    if triple != (len(values) == 3) or len(values) not in (1, 3):
        raise KoeError(f"--{flag} {text!r}: {'weighted_sum takes three weights a,b,c' if triple else 'one number'}",
                       fix="e.g. --weights 0.5,0.3,0.2 for weighted_sum, --weight 0.5 otherwise")
    return tuple(values) if triple else values[0]


def recipe_from(args):
    """The vits.merge.Recipe the command line asks for. Raises KoeError for malformed weights."""
    from vits.errors import KoeError
    from vits.merge import Recipe

    triple = args.method == "weighted_sum"
    if triple:
        if not args.weights:
            raise KoeError("weighted_sum needs --weights a,b,c", fix="e.g. --weights 0.5,0.3,0.2")
        weight = _number(args.weights, "weights", True)
    else:
        weight = float(args.weight)
    groups = {g: _number(getattr(args, g), g, triple) for g in GROUP_FLAGS if getattr(args, g) is not None}
    recipe = Recipe(args.method, weight, groups, slerp=bool(args.slerp), speakers=args.speakers)
    recipe.check()
    return recipe


def run(args) -> int:
    """Merge and save; prints progress lines. Raises KoeError."""
    from vits import merge

    cli.limit_threads()
    recipe = recipe_from(args)
    roles = ["a", "b"] + (["c"] if args.method != "weighted" or args.c else [])
    out = cli.voice_path(args.out, must_exist=False)
    merge.check_output(out, args.overwrite)  # before reading gigabytes
    report = cli.progress_printer(STAGE)
    sources = []
    for i, role in enumerate(roles):
        report(i, len(roles) + 1, f"reading voice {role.upper()}")
        voice = getattr(args, role)
        sources.append(merge.load_source(role, voice if Path(voice).is_file() else cli.voice_path(voice),
                                         getattr(args, f"{role}_checkpoint")))
    report(len(roles), len(roles) + 1, "merging")
    state = merge.merge(sources, recipe)
    g_path = merge.save_voice(out, sources, recipe, state, overwrite=args.overwrite)
    for name, partners in merge.speaker_pairs(sources, recipe.speakers).items():
        print(f"speaker {name}: " + ", ".join(f"{r.upper()}'s {n}" for r, n in partners.items()), flush=True)
    if args.test_text:
        test_audio(out, args.test_text, args.language)
    cli.finish(STAGE, f"wrote {g_path} ({recipe.method}, sources {', '.join(str(s.g_path) for s in sources)})")
    return 0


def test_audio(out: Path, text: str, language: str) -> Path:
    """Synthesize `text` with the merged voice into <out>/merge_test.wav (BERT models from config.yml)."""
    import soundfile as sf

    from settings import load_settings
    from vits.synthesis import Voice
    from vits.text.bert import BertFeatures
    from vits.voice_folder import MERGE_TEST

    settings = load_settings()
    settings.use_text_frontend()
    voice = Voice.load(out)
    dirs = {lang: path for lang, path in settings.bert.items() if Path(path).is_dir()}
    audio = voice.synthesize(text, language, bert=BertFeatures(dirs), seed=0)
    wav = out / MERGE_TEST
    sf.write(wav, audio, voice.sampling_rate, subtype="PCM_16")
    print(f"test sentence: {wav} ({len(audio) / voice.sampling_rate:.1f} s)", flush=True)
    return wav


def main(argv: list[str] | None = None) -> int:
    """Merge; returns 0 on success, 1 on a failure (message on stderr), 2 on a usage error."""
    args = build_parser().parse_args(argv)
    return cli.run(STAGE, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
