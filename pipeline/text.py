"""Turn Data/<voice>/esd.list into filelists/train.list + val.list and configs/config.json.

    python -m pipeline.text Data/myvoice [--batch-size 8]

Each line goes through the text frontend (phones, tones, word2ph; spec §7.4). Malformed lines,
missing or duplicate clips and text the frontend cannot read are dropped and listed by line number.
Every speaker with at least 5 clips gets a validation clip. Running it again with nothing changed
does nothing; --force rebuilds.
"""

from __future__ import annotations

import sys

from pipeline import cli
from prep.lists import TextOptions, build_filelists


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("text", __doc__)
    parser.add_argument("voice", help=cli.VOICE_HELP)
    parser.add_argument("--batch-size", type=int, help="training batch size for config.json (default: keep)")
    parser.add_argument("--val-per-speaker", type=int, default=2, help="validation clips per speaker (default 2)")
    parser.add_argument("--max-val", type=int, default=12, help="most validation clips in all (default 12)")
    parser.add_argument("--seed", type=int, default=1234, help="shuffle seed for the split")
    parser.add_argument("--userdict", help="pronunciation dictionary (default: <voice>/userdict.txt)")
    parser.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    a = parser.parse_args(argv)

    def body() -> int:
        from settings import load_settings

        load_settings().use_text_frontend()  # text.zh_polyphones: the g2pW model or the rules
        voice = cli.voice_path(a.voice)
        opts = TextOptions(val_per_speaker=a.val_per_speaker, max_val_total=a.max_val, seed=a.seed,
                           batch_size=a.batch_size, userdict=a.userdict)
        result = build_filelists(voice, opts, force=a.force, progress=cli.progress_printer("text"))
        for d in result.dropped:
            cli.warn(f"esd.list line {d.line_no} ({d.wav}): {d.kind}: {d.reason}")
        for note in result.notes:
            print(f"text: {note}")
        if result.skipped:
            cli.finish("text", "up to date (esd.list unchanged)", dropped=len(result.dropped))
            return 0
        cli.finish("text", f"{len(result.train)} train, {len(result.val)} val lines, "
                           f"{len(result.spk2id)} speakers, {len(result.dropped)} lines dropped",
                   train=len(result.train), val=len(result.val), dropped=len(result.dropped))
        return 0

    return cli.run("text", body)


if __name__ == "__main__":
    sys.exit(main())
