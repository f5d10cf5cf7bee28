"""Copy recordings (a folder, a zip or one file) into Data/<voice>/raw/<speaker>/.

    python -m pipeline.ingest ~/recordings Data/myvoice
    python -m pipeline.ingest takes.zip Data/myvoice --speaker alice

Sub-folders of the source become speakers. Unreadable files and unsafe zip members (escaping paths,
links, over 4 GiB, unpacking more than 100:1) are refused by name; the rest is copied after checking
the disk has room (docs/studio.md "Limits"). Running it again skips files already copied.
"""

from __future__ import annotations

import sys
import time

from pipeline import cli
from prep.ingest import ingest
from vits.errors import KoeError
from vits.fileio import write_json
from vits.voice_folder import INGEST


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("ingest", __doc__)
    parser.add_argument("source", help="folder, .zip or audio file")
    parser.add_argument("voice", help="voice folder (Data/<voice>) or voice name; created if missing")
    parser.add_argument("--speaker", help="speaker for files not in a sub-folder (default: the voice name)")
    a = parser.parse_args(argv)

    def body() -> int:
        voice = cli.voice_path(a.voice, must_exist=False)
        result = ingest(a.source, voice, speaker=a.speaker, progress=cli.progress_printer("ingest"))
        write_json(voice / INGEST, {"source": str(a.source), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                    "copied": result.copied, "skipped": result.skipped,
                                    "rejected": result.rejected, "ignored": result.ignored})
        for name, reason in result.rejected:
            cli.warn(f"refused {name}: {reason}")
        if result.ignored:
            print(f"ingest: ignored {len(result.ignored)} non-audio file(s): {', '.join(result.ignored[:10])}")
        if not result.copied and not result.skipped:
            raise KoeError("no usable audio in the source", where=str(a.source),
                           fix="give a folder or zip of wav/flac/mp3/ogg/opus/m4a recordings")
        cli.finish("ingest", f"{len(result.copied)} copied, {len(result.skipped)} already there, "
                             f"{len(result.rejected)} refused", copied=len(result.copied),
                   refused=len(result.rejected))
        return 0

    return cli.run("ingest", body)


if __name__ == "__main__":
    sys.exit(main())
