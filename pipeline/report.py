"""Write the dataset health report: Data/<voice>/report.json and report.txt.

    python -m pipeline.report Data/myvoice [--json]

Minutes per speaker, clip-length histogram, clips the training sampler would drop and why, format
fixes applied, clipping, silence, lines the text frontend could not convert, speakers with too
little data, clips that may be another speaker (same-speaker check: GE2E similarity of each clip to its
speaker, `speaker_outliers`; speakers with at least 8 clips). --json prints the whole report as JSON
(stdout holds nothing else).
"""

from __future__ import annotations

import json
import sys

from pipeline import cli
from prep.report import write_report
from vits.voice_folder import REPORT_TXT


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("report", __doc__)
    parser.add_argument("voice", help=cli.VOICE_HELP)
    parser.add_argument("--quiet", action="store_true", help="do not print report.txt")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead (nothing else)")
    a = parser.parse_args(argv)

    def body() -> int:
        voice = cli.voice_path(a.voice)
        report = write_report(voice, progress=None if a.json else cli.progress_printer("report"))
        if a.json:
            print(json.dumps(report, ensure_ascii=False, indent=1))
            return 0
        if not a.quiet:
            print((voice / REPORT_TXT).read_text(encoding="utf-8"))
        cli.finish("report", f"{report['clips']} clips, {report['minutes']} min, "
                             f"{len(report['problems'])} problem kinds", problems=len(report["problems"]))
        return 0

    return cli.run("report", body)


if __name__ == "__main__":
    sys.exit(main())
