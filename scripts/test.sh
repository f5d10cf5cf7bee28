#!/usr/bin/env bash
# Sets up (first run only) and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# KOE_TESTS_STRICT: a missing system tool stops the run instead of skipping tests (tests/conftest.py).
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 KOE_TESTS_STRICT=1
exec .venv/bin/python -m pytest "$@"
