#!/usr/bin/env bash
# README's test command (and CI's): set up (scripts/setup.sh), check formatting and lint (ruff), then run the
# whole test suite, plugins' and the dashboard's included: the end-to-end law, packaging, browser, training
# and subprocess tests marked `slow` too. `--fast` skips those (what plain `pytest` does), for a quick loop
# while working; any other argument goes to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
marks=(-m "")  # everything: overrides pyproject's `-m "not slow"` default
args=()
for a in "$@"; do
  if [ "$a" = --fast ]; then marks=(); else args+=("$a"); fi
done
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q --durations=10 "${marks[@]}" "${args[@]}"
