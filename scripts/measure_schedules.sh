#!/usr/bin/env bash
# Issue 15's evidence: the adaptive block schedule against every constant γ in 1..8, `heuristic` and
# `confidence`, and transformers' assisted generation (its own defaults, and at our block size), in one
# `cascade bench` run on the shipped models: lossless with the tiny drafter and with the n-gram drafter
# (FAMILIES="hf ngram ngram-v3" adds the n-gram token_v3 cascade). Greedy. Writes
# docs/results/schedules/{bench.json,bench.txt,table.md,profile-*.txt}. The policies are derived from the
# shipped ones into a temporary folder (absolute model paths); the cost tables are measured afresh inside
# the bench (a private CASCADE_HOME), with the bench's threads.
# Settings: LIMIT (prompts, default 10), TOKENS (new tokens, 48), REPEATS (timed passes, 2), THREADS (2).
# BATCH=8 also times the same rows at batch size 8 (`cascade bench --batch-sizes 8`: every row decodes the
# prompts 8 at a time; their cost tables are timed for a batch of 8) into batch-8.{json,txt}; transformers'
# assisted generation takes one row, so it has no row there. BATCH_LIMIT prompts (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=docs/results/schedules
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export HF_HUB_OFFLINE=1
export CASCADE_HOME="$TMP/home"   # fresh cost tables, timed by the bench's engines at its thread count
FAMILIES=${FAMILIES:-hf ngram}
.venv/bin/python - "$TMP" "${BATCH:-1}" <<'PY'
import sys
from pathlib import Path

import yaml

from cascade.policy import load_policy

out = Path(sys.argv[1])
models = Path("models").absolute()
abs_models = lambda p: {"target": {"model": str(models / "target")}}
batch = int(sys.argv[2])
dump = lambda d, path: path.write_text(yaml.safe_dump(d.model_dump(mode="json"), sort_keys=False))
def write(policy, name, decoding, **more):
    d = policy.derive(name, {**abs_models(policy), "decoding": decoding, **more})
    if d.drafter is not None and d.drafter.plugin == "hf-model":
        d = d.derive(name, {"drafter": {"options": {"model": str(models / "tiny")}}})
    dump(d, out / f"{name}.yaml")
    if batch > 1:  # the same row for the batched bench: its cost table is a batch's step
        (out / "batch").mkdir(exist_ok=True)
        dump(d.derive(name, {"decoding": {"batch_size": batch}}), out / "batch" / f"{name}.yaml")

target = load_policy("policies/target-only.yaml")
write(target, "target-only", {})
hf = load_policy("policies/speculative-lossless.yaml")
ng = load_policy("policies/speculative-ngram.yaml")
v3 = load_policy("policies/cascade-ngram-token-v3.yaml")
for tag, base in (("hf", hf), ("ngram", ng), ("ngram-v3", v3)):
    for k in range(1, 9):
        write(base, f"{tag}-k{k}", {"block_size": k, "block_schedule": "constant"})
    write(base, f"{tag}-heuristic", {"block_size": 2, "block_schedule": "heuristic", "max_block_size": 8})
    write(base, f"{tag}-adaptive", {"block_schedule": "adaptive", "max_block_size": 8})
write(hf, "hf-confidence", {"block_size": 8, "block_schedule": "confidence", "confidence": 0.4})
PY
# calibrate the tiny drafter's confidence (max q) per position on train-side prompts (never the held-out
# ones the bench reads): log a k = 8 run, fit temperatures, time the table at the bench's thread count
head -n 12 prompts/stdlib-train.jsonl > "$TMP/train.jsonl"
.venv/bin/cascade run "$TMP/hf-k8.yaml" --prompts "$TMP/train.jsonl" --max-new-tokens "${TOKENS:-48}" --json \
   --store "sqlite:///$TMP/cal.db" > /dev/null
.venv/bin/cascade profile "$TMP/hf-adaptive.yaml" --max-k 8 --threads "${THREADS:-2}" --calibrate \
   --store "sqlite:///$TMP/cal.db" | tee "$OUT/calibration-hf.txt"
# hf-k2 first among the hf-model rows: the hf-assisted peer takes its block size (2, the shipped one)
ORDER="target-only"
for fam in $FAMILIES; do
  case $fam in
    hf) ORDER="$ORDER hf-k2 hf-k1 hf-k3 hf-k4 hf-k5 hf-k6 hf-k7 hf-k8 hf-heuristic hf-confidence hf-adaptive" ;;
    *) ORDER="$ORDER $(for k in 1 2 3 4 5 6 7 8; do printf '%s-k%s ' "$fam" "$k"; done)$fam-heuristic $fam-adaptive" ;;
  esac
done
FILES=$(for n in $ORDER; do echo "$TMP/$n.yaml"; done)
.venv/bin/cascade bench $FILES --peers hf --limit "${LIMIT:-10}" --max-new-tokens "${TOKENS:-48}" \
   --repeats "${REPEATS:-2}" --threads "${THREADS:-2}" --no-progress --no-store --json "$OUT/bench.json" \
   | tee "$OUT/bench.txt"
for fam in $FAMILIES; do   # the tables the adaptive rows used (cached by the bench: shown, not re-timed)
  .venv/bin/cascade profile "$TMP/$fam-adaptive.yaml" --max-k 8 | tee "$OUT/profile-$fam.txt"
done
.venv/bin/python scripts/schedule_table.py "$OUT/bench.json" | tee "$OUT/table.md"
if [ "${BATCH:-1}" -gt 1 ]; then   # the same rows at batch size BATCH (the tiny drafter: its table for a batch, from the same log)
  .venv/bin/cascade profile "$TMP/batch/hf-adaptive.yaml" --max-k 8 --threads "${THREADS:-2}" --calibrate \
     --store "sqlite:///$TMP/cal.db" > /dev/null
  BFILES=$(for n in $ORDER; do echo "$TMP/batch/$n.yaml"; done)
  .venv/bin/cascade bench $BFILES --batch-sizes "$BATCH" --limit "${BATCH_LIMIT:-16}" \
     --max-new-tokens "${TOKENS:-48}" --repeats "${REPEATS:-2}" --threads "${THREADS:-2}" --no-store \
     --json "$OUT/batch-$BATCH.json" | tee "$OUT/batch-$BATCH.txt"
fi
