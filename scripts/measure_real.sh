#!/usr/bin/env bash
# Re-measure the real-target figures README quotes ("A real pretrained target"): SmolLM2-135M
# (`./scripts/setup.sh --real` fetches it) with its distilled drafter, EAGLE head, n-gram lookup and
# sparse-kv self-speculation, on the first held-out prompts. Writes docs/results/real/:
# bench.* (policies and transformers' peers, greedy, B = 1), batches.* (B = 1 and 8),
# sweep/ and sweep-t1/ (token_v3 and chow cascades against the baselines, T = 0 and T = 1).
# About 35 minutes on 2 CPU cores; each command prints its own estimate up front.
set -euo pipefail
cd "$(dirname "$0")/.."
R=docs/results/real
P=policies/real
mkdir -p "$R/sweep" "$R/sweep-t1"
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
   $P/cascade-token-v3.yaml $P/self-spec-sparse.yaml --batch-sizes 1,8 --prompts "$PROMPTS" --limit "$LIMIT" --max-new-tokens "$TOKENS" \
   --threads 2 --no-progress --no-store --json "$R/batches.json" | tee "$R/batches.txt"
$C sweep $P/cascade-token-v3.yaml $P/cascade-chow.yaml --alphas 4 --prompts "$PROMPTS" --limit "$LIMIT" --max-new-tokens "$TOKENS" \
   --threads 2 --no-progress --no-store --out "$R/sweep" | tee "$R/sweep/sweep.txt"
$C sweep $P/target-only.yaml $P/speculative-distilled.yaml $P/cascade-token-v3.yaml $P/cascade-chow.yaml \
   --alphas 3 --prompts "$PROMPTS" --limit 10 --max-new-tokens "$TOKENS" --temperature 1 --seeds 2 --threads 2 --no-baselines \
   --no-progress --no-store --out "$R/sweep-t1" | tee "$R/sweep-t1/sweep.txt"
