#!/usr/bin/env bash
# EAGLE evidence (README "EAGLE draft trees", docs/results/eagle/): in one `cascade bench` run on the
# shipped target, greedy, held-out prompts: target-only, the tiny chain drafter (lossless) with
# transformers' assisted generation and prompt lookup on the same models, and the eagle drafter as a
# top-1 chain of 4 (policies/eagle-chain.yaml), a static tree (3 chains of 3) and the dynamic tree at
# budgets 4, 6 (policies/eagle-tree.yaml: top_k 2, depth 4, the best of a shorter sweep), 10 and 16
# nodes, plus the token_v3 cascade over the shipped tree. Then the head's reliability (its confidence against acceptance) and the cost model's
# ceiling with the head's measured cost. About 45 minutes on the 2-core development machine.
#
#   ./scripts/measure_eagle.sh [LIMIT]        # default 30 prompts
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-30}
OUT=docs/results/eagle
P=$OUT/policies
mkdir -p "$P"
variant() {  # name tree top_k depth block_size [rule alpha]
  cat > "$P/$1.yaml" <<YAML
name: $1
description: "eagle $2 tree, top_k $3, depth $4, $5 nodes (bench variant)"
target: {model: ../../../../models/target, dtype: float32}
drafter: {plugin: eagle, options: {head: ../../../../models/eagle-target, tree: $2, top_k: $3, depth: $4}}
mode: speculative
rule: {name: ${6:-none}, alpha: ${7:-0}}
decoding: {temperature: 0.0, block_size: $5, max_new_tokens: 128, seed: 0}
YAML
}
variant eagle-static static 3 3 9
variant eagle-tree-b4 dynamic 2 4 4
variant eagle-tree-b10 dynamic 4 5 10
variant eagle-tree-b16 dynamic 4 6 16
.venv/bin/cascade bench policies/target-only.yaml policies/speculative-lossless.yaml policies/eagle-chain.yaml \
  "$P"/eagle-static.yaml "$P"/eagle-tree-b4.yaml policies/eagle-tree.yaml "$P"/eagle-tree-b10.yaml \
  "$P"/eagle-tree-b16.yaml policies/eagle-cascade-token-v3.yaml \
  --peers hf --limit "$LIMIT" --repeats 2 --no-store --no-progress --json "$OUT/bench.json" | tee "$OUT/bench.txt"
.venv/bin/cascade eagle reliability policies/eagle-tree.yaml --limit "$LIMIT" --out "$OUT" | tee "$OUT/reliability.txt"
.venv/bin/cascade eagle costs "$OUT/bench.json" policies/eagle-chain.yaml "$P"/eagle-*.yaml policies/eagle-tree.yaml \
  policies/eagle-cascade-token-v3.yaml \
  --out "$OUT/costs.json" | tee "$OUT/costs.txt"
