#!/usr/bin/env bash
# Batched decoding evidence (issue 13, SPEC.md "Batched decoding"): lossless speculative decoding with the
# tiny drafter and with n-gram lookup (constant γ and BASS's shared γ) against batched target-only, at
# B = 1, 4, 8, 16 on the same 16 held-out prompts, 128 new tokens each, one thread, 3 rounds.
# Writes docs/results/batches/batches.{json,txt}. About 25 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/results/batches
mkdir -p "$out"
cascade bench policies/speculative-lossless.yaml policies/speculative-ngram.yaml policies/batch-ngram-bass.yaml \
  --batch-sizes 1,4,8,16 --prompts prompts/stdlib-heldout.jsonl --limit 16 --repeats 3 --threads 1 --no-store \
  --json "$out/batches.json" | tee "$out/batches.txt"
