"""What every `python -m pipeline.<stage>` (and `python -m server`) shares: one way to parse, report and exit.

- Exit codes: 0 done, 1 failed (a KoeError: the message says what, where and the fix), 2 usage
  (argparse), 130 interrupted (Ctrl-C; run it again to continue).
- A failure prints one line `error: <what> → <fix>` on stderr, and a closing progress line
  `KOE_PROGRESS {"stage": ..., "message": "failed: ..."}` on stdout so the studio shows it.
- Progress: one `KOE_PROGRESS {json}` line per update (vits/progress.py has the fields).

    def main(argv=None) -> int:
        parser = cli.parser("slice", __doc__)
        parser.add_argument("voice", help=cli.VOICE_HELP)
        args = parser.parse_args(argv)
        return cli.run("slice", lambda: body(args))
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vits.errors import KoeError
from vits.progress import ProgressMeter, format_progress

VOICE_HELP = "voice folder (Data/<voice>) or voice name"


def parser(stage: str, doc: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser named `python -m pipeline.<stage>` whose --help shows the module docstring as written."""
    return argparse.ArgumentParser(prog=prog or f"python -m pipeline.{stage}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def voice_path(arg: str, must_exist: bool = True) -> Path:
    """A voice given as a folder path (Data/<voice>) or as a bare name under the configured data root."""
    p = Path(arg)
    if not (p.exists() or "/" in arg or os.sep in arg):
        from settings import load_settings

        p = load_settings().voice_dir(arg)
    if must_exist and not p.is_dir():
        raise KoeError("voice folder not found", where=str(p), fix="check the path, or ingest recordings first")
    return p


def progress_printer(stage: str) -> Callable[[int, int | None, str], None]:
    """A progress callback printing one KOE_PROGRESS line per update (flushed, the studio reads them live)."""
    meter: list[ProgressMeter] = []

    def report(done: int, total: int | None, item: str = "") -> None:
        if not meter:
            meter.append(ProgressMeter(stage, total=total, start=done))
        meter[0].total = total
        print(meter[0].update(done, **({"item": item} if item else {})), flush=True)

    return report


def finish(stage: str, message: str, **fields) -> None:
    """Print the stage's closing progress line."""
    print(format_progress(stage, message=message, **fields), flush=True)


def warn(text: str) -> None:
    """A problem that does not stop the stage (a clip skipped, a line dropped): one line on stderr."""
    print(f"WARNING: {text}", file=sys.stderr, flush=True)


def error(stage: str, message: str) -> int:
    """Report a failure the same way everywhere; returns the exit code 1."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    print(format_progress(stage, message=f"failed: {message}"), flush=True)
    return 1


def run(stage: str, body: Callable[[], int | None]) -> int:
    """Run a stage body: KoeError -> `error: ...` on stderr + exit 1; Ctrl-C -> 130."""
    try:
        return int(body() or 0)
    except KoeError as exc:
        return error(stage, str(exc))
    except KeyboardInterrupt:
        print(f"{stage}: interrupted; run it again to continue where it stopped", file=sys.stderr, flush=True)
        return 130


def limit_threads() -> None:
    """Keep torch's CPU threads modest (stages run beside training and the studio) without importing torch."""
    n = str(max(1, min(4, os.cpu_count() or 1)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, n)
