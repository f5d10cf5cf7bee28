"""Serve voices over HTTP (hiyoriUI-compatible /voice). API docs at http://HOST:PORT/docs.

    python -m server --host 127.0.0.1 --port 5000
    python -m server --model alice --model Data/bob/onnx          # load voices at start-up
    python -m server --host 0.0.0.0 --api-key KEY --no-paths      # a shared server

The studio (`python app.py`) answers the same API on its own port. `python -m pipeline.serve` is the old
name of this command. See docs/api.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline import cli
from server.params import DEFAULT_MAX_MODELS, DEFAULT_MAX_QUEUE, DEFAULT_MAX_TEXT

STAGE = "serve"


def parse_args(argv=None):
    parser = cli.parser(STAGE, __doc__, prog="python -m server")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 = all; set --api-key then)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--config", default=None, help="studio settings file (default config.yml)")
    parser.add_argument("--root", default=None, help="the Data folder holding your voices")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default from config.yml)")
    parser.add_argument("--model", action="append", default=[], help="voice name or path to load at start "
                        "(repeatable)")
    parser.add_argument("--api-key", default=None, help="require this key (or set $KOE_API_KEY)")
    parser.add_argument("--max-text-length", type=int, default=DEFAULT_MAX_TEXT, help="characters per request")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE, help="waiting requests per model")
    parser.add_argument("--max-models", type=int, default=DEFAULT_MAX_MODELS, help="models kept in memory")
    parser.add_argument("--no-paths", action="store_true", help="accept only voice names, not file paths")
    parser.add_argument("--no-bert", action="store_true", help="do not load BERT models (lower quality)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def _build_app(args):
    """The API app from the command line. Raises KoeError (a bad config.yml, a --model that cannot load)."""
    from server.errors import ApiError
    from server.routes import create_app
    from settings import load_settings
    from vits.errors import KoeError

    settings = load_settings(args.config)
    if args.root:
        settings.data_root = Path(args.root).expanduser().resolve()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return create_app(settings, api_key=args.api_key, device=args.device,
                          max_text_length=args.max_text_length, max_queue=args.max_queue,
                          max_models=args.max_models, allow_paths=not args.no_paths,
                          bert=None if args.no_bert else "auto", preload=args.model)
    except ApiError as exc:
        raise KoeError(exc.error, fix=exc.detail) from None


def main(argv=None) -> int:
    """Run the API with uvicorn until interrupted; 0 when stopped, 1 when it cannot start, 2 on bad arguments."""
    args = parse_args(argv)

    def body() -> int:
        import uvicorn

        from server.mount import OfflineDocs, open_host_warning, port_busy
        from vits.errors import KoeError

        if busy := port_busy(args.host, args.port):
            problem, _, fix = busy.partition(" → ")
            raise KoeError(problem, fix=fix)
        app = OfflineDocs(_build_app(args))  # /docs without a CDN
        if not (args.api_key or os.environ.get("KOE_API_KEY")):
            warning = open_host_warning(args.host, args.port, "the API",
                                        "add --api-key KEY (or set $KOE_API_KEY), and --no-paths")
            if warning:
                cli.warn(warning)
        cli.finish(STAGE, f"serving on http://{args.host}:{args.port} (docs at /docs)")
        # A large h11 buffer lets an over-long GET reach the app and get a JSON 413 instead of a reset connection.
        uvicorn.run(app, host=args.host, port=args.port, http="h11", h11_max_incomplete_event_size=4 << 20,
                    log_level="info")
        return 0

    return cli.run(STAGE, body)


if __name__ == "__main__":
    sys.exit(main())
