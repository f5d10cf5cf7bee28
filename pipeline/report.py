"""Write the dataset health report: Data/<voice>/report.json and report.txt.

    python -m pipeline.report Data/myvoice

Minutes per speaker, clip-length histogram, clips the training sampler would drop and why, format
fixes applied, clipping, silence, lines the text frontend could not convert, speakers with too
little data.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.prepare import finish, progress_printer, run_cli, voice_path
from vits.voice_folder import REPORT_TXT
from prep.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("voice", help="voice folder (Data/<voice>) or voice name")
    parser.add_argument("--quiet", action="store_true", help="do not print report.txt")
    a = parser.parse_args(argv)

    def body() -> int:
        voice = voice_path(a.voice)
        report = write_report(voice, progress=progress_printer("report"))
        if not a.quiet:
            print((voice / REPORT_TXT).read_text(encoding="utf-8"))
        finish("report", f"{report['clips']} clips, {report['minutes']} min, {len(report['problems'])} problem kinds",
               problems=len(report["problems"]))
        return 0

    return run_cli("report", body)


if __name__ == "__main__":
    sys.exit(main())
