#!/usr/bin/env bash
# Re-measure every figure README.md quotes, on this machine, with the shipped models and prompts.
# Writes docs/results/: zoo.json (family), bench.json + bench.txt (policies and peers),
# sweep/ (trade-off CSV, JSON, PNG), store-cost.txt (logging overhead). About 20 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=docs/results
mkdir -p "$OUT"
C=.venv/bin/cascade
LIMIT=${LIMIT:-20}          # prompts (of the 50 shipped)
TOKENS=${TOKENS:-64}        # new tokens per prompt
export HF_HUB_OFFLINE=1
$C zoo eval --out "$OUT/zoo.json" | tee "$OUT/zoo.txt"
$C bench --peers hf --limit "$LIMIT" --max-new-tokens "$TOKENS" --repeats 3 --no-progress \
   --store "sqlite:///$OUT/bench.db" --json "$OUT/bench.json" | tee "$OUT/bench.txt"
$C sweep --alphas 6 --limit "${SWEEP_LIMIT:-12}" --max-new-tokens "$TOKENS" --no-progress --no-store \
   --out "$OUT/sweep" | tee "$OUT/sweep.txt"
$C store-cost policies/speculative-lossless.yaml --limit 10 --max-new-tokens "$TOKENS" --repeats 5 \
   --no-progress --store "sqlite:///$OUT/store-cost.db" | tee "$OUT/store-cost.txt"
rm -f "$OUT"/*.db "$OUT"/*.db-wal "$OUT"/*.db-shm
