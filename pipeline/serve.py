"""Old name of the HTTP API: `python -m pipeline.serve` runs `python -m server` (same arguments)."""

import sys

from server.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
