"""Koe Studio: `python app.py [--host 127.0.0.1] [--port 7860] [--share --auth user:pass] [--root Data]`."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Koe Studio: from recordings to a voice you can type into.")
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1, from config.yml)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860; AutoDL: 6006)")
    parser.add_argument("--share", action="store_true", help="public gradio link (Colab); needs --auth")
    parser.add_argument("--auth", default=None, help="user:pass required to open the studio")
    parser.add_argument("--insecure-share", action="store_true", help="allow --share without --auth")
    parser.add_argument("--root", default=None, help="the Data folder holding your voices")
    parser.add_argument("--config", default=None, help="studio settings file (default config.yml)")
    parser.add_argument("--allow-parallel-gpu", action="store_true",
                        help="allow several GPU jobs at once (default: one at a time)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from server.mount import port_busy

    # Before the studio loads anything: a busy port is one line, not a traceback a minute later.
    if args.port and (busy := port_busy(args.host or "127.0.0.1", args.port)):
        print(f"error: {busy}", file=sys.stderr)
        return 1
    from studio.app import launch

    try:
        return launch(args)
    except OSError as exc:  # Gradio: "Cannot find empty port in range: 7860-7860 ..." and a traceback
        import re

        found = re.search(r"range: (\d+)-", str(exc))
        busy = port_busy(args.host or "127.0.0.1", int(found.group(1))) if found else None
        if busy is None:
            raise
        print(f"error: {busy}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
