#!/usr/bin/env bash
# Sets up (first run only) and starts the studio. Extra arguments go to app.py (--port 6006, --share ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/python app.py "$@"
