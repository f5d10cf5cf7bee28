"""Turn Data/<voice>/esd.list into filelists/train.list + val.list and configs/config.json.

    python -m pipeline.text Data/myvoice [--batch-size 8]

Each line goes through the text frontend (phones, tones, word2ph; spec §7.4). Malformed lines,
missing or duplicate clips and text the frontend cannot read are dropped and listed by line number.
Every speaker with at least 5 clips gets a validation clip. Running it again with nothing changed
does nothing; --force rebuilds.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.prepare import finish, progress_printer, run_cli, voice_path, warn
from prep.lists import TextOptions, build_filelists


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.text", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("voice", help="voice folder (Data/<voice>) or voice name")
    parser.add_argument("--batch-size", type=int, help="training batch size for config.json (default: keep)")
    parser.add_argument("--val-per-speaker", type=int, default=2, help="validation clips per speaker (default 2)")
    parser.add_argument("--max-val", type=int, default=12, help="most validation clips in all (default 12)")
    parser.add_argument("--seed", type=int, default=1234, help="shuffle seed for the split")
    parser.add_argument("--userdict", help="pronunciation dictionary (default: <voice>/userdict.txt)")
    parser.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    a = parser.parse_args(argv)

    def body() -> int:
        voice = voice_path(a.voice)
        opts = TextOptions(val_per_speaker=a.val_per_speaker, max_val_total=a.max_val, seed=a.seed,
                           batch_size=a.batch_size, userdict=a.userdict)
        result = build_filelists(voice, opts, force=a.force, progress=progress_printer("text"))
        for d in result.dropped:
            warn(f"esd.list line {d.line_no} ({d.wav}): {d.kind}: {d.reason}")
        for note in result.notes:
            print(f"text: {note}")
        if result.skipped:
            finish("text", "up to date (esd.list unchanged)", dropped=len(result.dropped))
            return 0
        finish("text", f"{len(result.train)} train, {len(result.val)} val lines, {len(result.spk2id)} speakers, "
                       f"{len(result.dropped)} lines dropped", train=len(result.train), val=len(result.val),
               dropped=len(result.dropped))
        return 0

    return run_cli("text", body)


if __name__ == "__main__":
    sys.exit(main())
