"""Old name of the HTTP API: `python -m pipeline.serve` runs `python -m server` (same arguments)."""

import sys

from server.app import main

if __name__ == "__main__":
    sys.exit(main())
