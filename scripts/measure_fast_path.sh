#!/usr/bin/env bash
# The lean forward against transformers' own (issue 14), greedy, in one bench run: target-only, lossless
# speculative with the tiny drafter, and the token_v3 cascade, each on the lean runtime (the default)
# and on runtime: transformers (the reference). Then per-call latency per architecture
# (scripts/profile_calls.py). Writes docs/results/fast-path/ and docs/results/calls/.
# LIMIT (default 50) held-out prompts, TOKENS (default 128) new tokens, REPEATS (default 2) timed passes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/results/fast-path
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for p in target-only speculative-lossless cascade-token-v3; do
  sed -e "s#\.\./models/#$PWD/models/#g" "policies/$p.yaml" > "$tmp/$p.yaml"
  sed -e "s#^name: .*#name: $p-transformers#" \
      -e "s#target: {model: \([^,]*\), dtype: float32}#target: {model: \1, dtype: float32, runtime: transformers}#" \
      -e "s#options: {model: \([^}]*\)}#options: {model: \1, runtime: transformers}#" "$tmp/$p.yaml" > "$tmp/$p-transformers.yaml"
done
grep -q "runtime: transformers" "$tmp/speculative-lossless-transformers.yaml"
cascade bench "$tmp"/target-only.yaml "$tmp"/target-only-transformers.yaml "$tmp"/speculative-lossless.yaml \
  "$tmp"/speculative-lossless-transformers.yaml "$tmp"/cascade-token-v3.yaml "$tmp"/cascade-token-v3-transformers.yaml \
  --limit "${LIMIT:-50}" --max-new-tokens "${TOKENS:-128}" --repeats "${REPEATS:-2}" --threads 1 --no-store \
  --json "$out/bench.json" | tee "$out/bench.txt"
python scripts/profile_calls.py
