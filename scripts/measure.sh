#!/usr/bin/env bash
# Re-measure every figure README.md quotes, on this machine, with the shipped models and prompts.
# Writes docs/results/: zoo.json (family); calibration/ (the α sweep on the train-side prompts the
# shipped α come from); sweep/ and sweep-t1/ (held-out trade-off curves, T = 0 and T = 1);
# bench.json + bench.txt (policies and peers, greedy), bench-t1.* (T = 1, three seeds per prompt);
# store-cost.txt (logging overhead). About 75 minutes on 2 CPU cores (each command prints its own
# estimate up front).
set -euo pipefail
cd "$(dirname "$0")/.."
R=docs/results
mkdir -p "$R/calibration" "$R/sweep" "$R/sweep-t1"
C=.venv/bin/cascade
TOKENS=${TOKENS:-48}        # new tokens per prompt
export HF_HUB_OFFLINE=1
SWEPT="policies/cascade-token-v3.yaml policies/cascade-chow.yaml policies/cascade-ngram-token-v3.yaml policies/speculative-ngram.yaml"
BENCH="policies/target-only.yaml policies/speculative-lossless.yaml policies/speculative-ngram.yaml policies/cascade-token-v3.yaml policies/cascade-chow.yaml policies/cascade-ngram-token-v3.yaml policies/sequential-chow.yaml policies/lossy-speculative.yaml"
$C zoo eval --out "$R/zoo.json" | tee "$R/zoo.txt"
# α is chosen on the train-side prompts (the column "knob @1%"), never on the held-out ones
$C sweep $SWEPT --alphas 4 --prompts prompts/stdlib-train.jsonl --limit 24 --max-new-tokens "$TOKENS" --threads 2 \
   --no-progress --no-store --out "$R/calibration" | tee "$R/calibration/sweep.txt"
$C sweep $SWEPT --alphas 5 --limit 30 --max-new-tokens "$TOKENS" --threads 2 --no-progress --no-store \
   --out "$R/sweep" | tee "$R/sweep/sweep.txt"
$C sweep policies/target-only.yaml policies/speculative-lossless.yaml $SWEPT --alphas 4 --limit 20 \
   --max-new-tokens "$TOKENS" --temperature 1 --seeds 2 --threads 2 --no-baselines --no-progress --no-store \
   --out "$R/sweep-t1" | tee "$R/sweep-t1/sweep.txt"
$C bench $BENCH --peers hf --limit 30 --max-new-tokens "$TOKENS" --repeats 2 --threads 2 --no-progress \
   --store "sqlite:///$R/bench.db" --json "$R/bench.json" | tee "$R/bench.txt"
$C bench $BENCH --limit 20 --max-new-tokens "$TOKENS" --temperature 1 --seeds 3 --repeats 1 --threads 2 \
   --no-progress --no-store --json "$R/bench-t1.json" | tee "$R/bench-t1.txt"
$C store-cost policies/speculative-lossless.yaml --limit 10 --max-new-tokens 64 --repeats 5 \
   --no-progress --store "sqlite:///$R/store-cost.db" | tee "$R/store-cost.txt"
rm -f "$R"/*.db "$R"/*.db-wal "$R"/*.db-shm
