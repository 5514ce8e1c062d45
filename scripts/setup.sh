#!/usr/bin/env bash
# Create .venv with the CPU build of torch (pinned first, so no multi-GB CUDA wheel is pulled),
# then cascade, its two drafter plugins (as separate distributions) and the test extras.
# GPU users: install the torch build for your CUDA first (https://pytorch.org), then run this with TORCH_SPEC=skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${TORCH_SPEC:-torch==2.13.0}" != skip ]; then
  .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[test]" -e plugins/hf-model -e plugins/ngram
