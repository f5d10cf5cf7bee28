"""Cut the recordings in Data/<voice>/raw/ into 2-12 s clips at pauses (silero-vad).

    python -m pipeline.slice Data/myvoice [--min 2 --max 12 --margin 0.2]

Writes 44.1 kHz mono 16-bit clips to wavs/<speaker>/<file>_0001.wav. Long speech without a pause is
cut at its quietest point. Clips are kept at most 11.6 s unless --no-sampler-cap: the training
sampler drops longer ones. Recordings are read in blocks, so memory does not grow with their length.
Running it again only slices new or changed recordings.
"""

from __future__ import annotations

import sys

from pipeline import cli
from prep.slicing import SliceOptions, slice_summary, slice_voice
from vits.errors import KoeError
from vits.voice_folder import RAW


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("slice", __doc__)
    parser.add_argument("voice", help=cli.VOICE_HELP)
    parser.add_argument("--min", type=float, default=SliceOptions.min_seconds,
                        help="shortest clip, seconds (default %(default)s)")
    parser.add_argument("--max", type=float, default=SliceOptions.max_seconds,
                        help="longest clip, seconds (default %(default)s)")
    parser.add_argument("--margin", type=float, default=SliceOptions.margin,
                        help="silence kept around speech (default %(default)s s)")
    parser.add_argument("--threshold", type=float, default=SliceOptions.threshold,
                        help="VAD speech probability (default %(default)s)")
    parser.add_argument("--no-sampler-cap", action="store_true",
                        help="allow clips longer than the 11.6 s the bucket sampler keeps")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--force", action="store_true", help="slice every recording again")
    a = parser.parse_args(argv)

    def body() -> int:
        cli.limit_threads()
        voice = cli.voice_path(a.voice)
        opts = SliceOptions(min_seconds=a.min, max_seconds=a.max, margin=a.margin, threshold=a.threshold,
                            cap_to_sampler=not a.no_sampler_cap)
        manifest = slice_voice(voice, opts, workers=a.workers, force=a.force, progress=cli.progress_printer("slice"))
        clips = sum(len(v["clips"]) for v in manifest.values())
        failed = {k: v["error"] for k, v in manifest.items() if v.get("error")}
        for name, reason in failed.items():
            cli.warn(f"{name}: {reason}")
        if clips == 0:
            raise KoeError("no clips came out of the recordings", where=str(voice / RAW),
                           fix="check the recordings contain speech (see the warnings above)")
        cli.finish("slice", slice_summary(manifest), clips=clips, failed=len(failed))
        return 0

    return cli.run("slice", body)


if __name__ == "__main__":
    sys.exit(main())
