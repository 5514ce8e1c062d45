#!/usr/bin/env bash
# Re-measure the real-target figures README quotes ("A real pretrained target"): SmolLM2-135M
# (`./scripts/setup.sh --real` fetches it) with its distilled drafter, EAGLE head, n-gram lookup and
# sparse-kv self-speculation, on the first held-out prompts. Writes docs/results/real/:
# bench.* (policies and transformers' peers, greedy, B = 1), batches.* (B = 1 and 8),
# sweep/ (token_v3 and chow cascades against the baselines, greedy).
# About 60 minutes on 2 CPU cores (the bench 40 of them); each command prints its own estimate up front.
set -euo pipefail
cd "$(dirname "$0")/.."
R=docs/results/real
P=policies/real
mkdir -p "$R/sweep"
C=.venv/bin/cascade
TOKENS=${TOKENS:-48}   # new tokens per prompt
LIMIT=${LIMIT:-16}     # held-out prompts: the first N of the spread order come from N different files
PROMPTS=prompts/stdlib-heldout-spread.jsonl
export HF_HUB_OFFLINE=1
$C models verify smollm2
# the distilled drafter's lossless row first: transformers' assisted generation runs with that pair
BENCH="$P/target-only.yaml $P/speculative-distilled.yaml $P/speculative-ngram.yaml $P/eagle-chain.yaml \
$P/eagle-tree.yaml $P/cascade-token-v3.yaml $P/cascade-chow.yaml $P/lossy-speculative.yaml $P/self-spec-sparse.yaml"
$C bench $BENCH --peers hf --prompts "$PROMPTS" --limit "$LIMIT" --max-new-tokens "$TOKENS" --repeats 2 --threads 2 --no-progress \
   --no-store --json "$R/bench.json" | tee "$R/bench.txt"
$C bench $P/target-only.yaml $P/speculative-distilled.yaml $P/speculative-ngram.yaml $P/eagle-chain.yaml \
   $P/cascade-token-v3.yaml $P/self-spec-sparse.yaml --batch-sizes 1,8 --prompts "$PROMPTS" --limit 8 --max-new-tokens "$TOKENS" \
   --threads 2 --no-progress --no-store --json "$R/batches.json" | tee "$R/batches.txt"
$C sweep $P/cascade-token-v3.yaml $P/cascade-chow.yaml --alpha 0.1,0.3,0.5 --prompts "$PROMPTS" --limit 12 --max-new-tokens "$TOKENS" \
   --threads 2 --no-progress --no-store --out "$R/sweep" | tee "$R/sweep/sweep.txt"
