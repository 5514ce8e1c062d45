#!/usr/bin/env bash
# Evidence for the learned deferral rules (issue 12), with the shipped model family. Writes docs/learned/:
#   models/            heads trained on decisions logged from train-side prompts (card.json has the metrics)
#   train/*.txt        the training commands' output
#   sweep/             held-out α sweep: learned (logistic, hgb) beside chow, diff, opt, token_v3 and baselines
#   sweep-sequential*/ the sequential cascade: q-only learned heads (with and without recent acceptance) vs chow
#   points.md          every swept point, and which other curves dominate each learned point
#   calibration/       `cascade calibrate` for S in {0.3, 0.5, 0.7} on a second held-out slice (prompts 101-130)
# About an hour on 2 CPU cores. Needs the plugin: pip install -e plugins/learned
set -euo pipefail
cd "$(dirname "$0")/.."
D=docs/learned
C=${CASCADE:-.venv/bin/cascade}
TOKENS=${TOKENS:-48}
N_TRAIN=${N_TRAIN:-80}
export HF_HUB_OFFLINE=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$D/models" "$D/train" "$D/sweep" "$D/sweep-sequential" "$D/sweep-sequential-fine" \
   "$D/sweep-sequential-norecent" "$D/sweep-compact" "$D/calibration"
LOG="sqlite:///$WORK/log.db"

# 1. log decisions on the train-side prompts: token_v3 at α = 0 (every draft verified: p and q at every position)
head -n "$N_TRAIN" prompts/stdlib-train.jsonl > "$WORK/train.jsonl"
sed "s#\.\./models#$PWD/models#g; s/^name: .*/name: learned-log-token-v3/" policies/cascade-token-v3.yaml > "$WORK/log.yaml"
$C run "$WORK/log.yaml" --prompts "$WORK/train.jsonl" --max-new-tokens "$TOKENS" --json --store "$LOG" > /dev/null

# 2. heads: deferral (label `bad`, margin 1 nat) on q+p features, logistic and hgb; acceptance on q features
$C rules train --store "$LOG" --policy learned-log-token-v3 --head deferral --features qp --model logistic \
   --out "$D/models/deferral-logistic-qp" 2>&1 | tee "$D/train/deferral-logistic-qp.txt"
$C rules train --store "$LOG" --policy learned-log-token-v3 --head deferral --features qp --model hgb \
   --out "$D/models/deferral-hgb-qp" 2>&1 | tee "$D/train/deferral-hgb-qp.txt"
$C rules train --store "$LOG" --policy learned-log-token-v3 --head deferral --features q --model logistic \
   --out "$D/models/deferral-logistic-q" 2>&1 | tee "$D/train/deferral-logistic-q.txt"
$C rules train --store "$LOG" --policy learned-log-token-v3 --head deferral --features q --model logistic \
   --exclude recent_acceptance --out "$D/models/deferral-logistic-q-norecent" 2>&1 \
   | tee "$D/train/deferral-logistic-q-norecent.txt"
$C rules train --store "$LOG" --policy learned-log-token-v3 --head acceptance --features q --model logistic \
   --out "$D/models/acceptance-logistic-q" 2>&1 | tee "$D/train/acceptance-logistic-q.txt"
$C rules train --store "$LOG" --policy learned-log-token-v3 --head acceptance --features q --model hgb \
   --out "$WORK/acceptance-hgb-q" 2>&1 | tee "$D/train/acceptance-hgb-q.txt"   # its 1.5 MB model is not kept
cp "$WORK/acceptance-hgb-q/card.json" "$D/train/acceptance-hgb-q.card.json"

# 3. held-out sweep (first 30 held-out prompts, as the bench defaults), learned beside the closed-form rules
$C sweep policies/cascade-learned.yaml policies/cascade-learned-hgb.yaml policies/cascade-chow.yaml \
   policies/cascade-diff.yaml policies/cascade-opt.yaml policies/cascade-token-v3.yaml \
   --alphas 4 --limit 30 --max-new-tokens "$TOKENS" --threads 2 --no-progress --no-store \
   --out "$D/sweep" | tee "$D/sweep/sweep.txt"

# 3a. compact: the learned qp head at α in its score tails and the middle, beside token_v3 at the same α
#     (the qp head's scores sit near 0 and 1: a uniform α grid leaves its knob between two points)
$C sweep policies/cascade-learned.yaml policies/cascade-token-v3.yaml --no-baselines --alpha 0.00002,0.5,0.9999 \
   --limit 30 --max-new-tokens "$TOKENS" --threads 2 --no-progress --no-store \
   --out "$D/sweep-compact" | tee "$D/sweep-compact/sweep.txt"

# 3b. the sequential cascade (one torch thread each): q-only learned heads against chow (sweeps add target-only);
#     the learned heads' scores sit low, so they also get a finer α grid
$C sweep policies/sequential-learned.yaml policies/sequential-chow.yaml --no-baselines \
   --alphas 4 --limit 30 --max-new-tokens "$TOKENS" --threads 1 --no-progress --no-store \
   --out "$D/sweep-sequential" | tee "$D/sweep-sequential/sweep.txt"
$C sweep policies/sequential-learned.yaml --no-baselines --alpha 0.1,0.15,0.2,0.25,0.3 \
   --limit 30 --max-new-tokens "$TOKENS" --threads 1 --no-progress --no-store \
   --out "$D/sweep-sequential-fine" | tee "$D/sweep-sequential-fine/sweep.txt"
$C sweep policies/sequential-learned-norecent.yaml --no-baselines --alpha 0.2,0.3,0.4,0.5 \
   --limit 30 --max-new-tokens "$TOKENS" --threads 1 --no-progress --no-store \
   --out "$D/sweep-sequential-norecent" | tee "$D/sweep-sequential-norecent/sweep.txt"

# 4. calibration on a second held-out slice (prompts 101-130, disjoint from the sweep's 1-30)
sed -n '101,130p' prompts/stdlib-heldout.jsonl > "$WORK/heldout-b.jsonl"
for S in 0.3 0.5 0.7; do
  $C calibrate policies/cascade-learned.yaml --prompts "$WORK/heldout-b.jsonl" --target-share "$S" \
     --tolerance 0.02 --max-replays 8 --max-new-tokens "$TOKENS" --threads 2 --store "sqlite:///$WORK/cal.db" \
     --out "$D/calibration/cascade-learned-share$S.yaml" --json > "$D/calibration/share$S.json" \
     2> "$D/calibration/share$S.log" || true   # exit 1 = not converged: the JSON says so
done

# 5. the tables of docs/learned/README.md: every point, and which learned points another curve dominates
.venv/bin/python - "$D" <<'PY'
import json, sys
from pathlib import Path

d = Path(sys.argv[1])
out = []
for name in ("sweep", "sweep-compact", "sweep-sequential", "sweep-sequential-fine", "sweep-sequential-norecent"):
    f = d / name / "sweep.json"
    if not f.exists():
        continue
    pts = json.loads(f.read_text())["points"]
    out.append(f"## {name}\n\n| curve | knob | target calls/token | speed-up | edit sim | parses | dominated on calls by | dominated on speed by |\n|---|---|---|---|---|---|---|---|")
    for p in pts:
        def dom(axis, better):
            return ", ".join(sorted({f"{o['curve']}@{o['value'] if o['value'] is not None else '-'}" for o in pts
                                     if o["curve"] != p["curve"] and None not in (o[axis], o["quality"], p[axis], p["quality"])
                                     and better(o[axis], p[axis]) and o["quality"] >= p["quality"]
                                     and (o[axis] != p[axis] or o["quality"] > p["quality"])})) or "-"
        calls = dom("target_calls_per_token", lambda a, b: a <= b)
        speed = dom("speedup", lambda a, b: a >= b)
        learned = "learned" in p["curve"]
        v = "-" if p["value"] is None else f"{p['value']:.5g}"
        out.append(f"| {p['curve']} | {v} | {p['target_calls_per_token']:.3f} | {p['speedup']:.2f}x | {p['quality']:.2f} | "
                   f"{p['parses']:.2f} | {calls if learned else ''} | {speed if learned else ''} |")
    out.append("")
(d / "points.md").write_text("\n".join(out) + "\n")
print("\n".join(out))
PY
