#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, plugins' tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q --durations=10 "$@"
