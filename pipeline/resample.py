"""Make every clip in Data/<voice>/wavs/ 44.1 kHz mono 16-bit (soxr), optionally loudness-normalised.

    python -m pipeline.resample Data/myvoice [--loudness -23] [--trim] [--workers 4]

Rewrites clips in place (atomically). Running it again only touches new or changed clips.
"""

from __future__ import annotations

import os
import sys

from pipeline import cli
from prep.resample import resample_voice
from vits.errors import KoeError
from vits.voice_folder import WAVS


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("resample", __doc__)
    parser.add_argument("voice", help=cli.VOICE_HELP)
    parser.add_argument("--rate", type=int, default=44100, help="target sample rate (default 44100)")
    parser.add_argument("--quality", default="VHQ", choices=["HQ", "VHQ"], help="soxr quality (default VHQ)")
    parser.add_argument("--loudness", type=float, nargs="?", const=-23.0, default=None,
                        help="normalise to this integrated loudness in LUFS (flag alone: -23)")
    parser.add_argument("--trim", type=float, nargs="?", const=40.0, default=None,
                        help="trim leading/trailing audio this many dB below the peak (flag alone: 40)")
    parser.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    parser.add_argument("--force", action="store_true", help="process every clip again")
    a = parser.parse_args(argv)

    def body() -> int:
        voice = cli.voice_path(a.voice)
        summary = resample_voice(voice, sample_rate=a.rate, quality=a.quality, loudness=a.loudness,
                                 trim_db=a.trim, workers=a.workers, force=a.force,
                                 progress=cli.progress_printer("resample"))
        for clip, reason in summary["errors"]:
            cli.warn(f"{clip}: {reason} (fix: delete the clip or re-run the slice stage)")
        if summary["errors"] and not summary["processed"] and not summary["skipped"]:
            raise KoeError("no clip could be read", where=str(voice / WAVS), fix="see the warnings above")
        cli.finish("resample", f"{summary['processed']} processed ({len(summary['fixes'])} changed), "
                               f"{summary['skipped']} already done, {len(summary['errors'])} unreadable",
                   processed=summary["processed"], errors=len(summary["errors"]))
        return 0

    return cli.run("resample", body)


if __name__ == "__main__":
    sys.exit(main())
