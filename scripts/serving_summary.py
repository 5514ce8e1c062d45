"""Summarise repeated `scripts/measure_serving.py` runs: per policy and concurrency, output tok/s, the speed-up
over target-only at the same concurrency (within each run) and served c = 8 over offline B = 8, as the median
and range over the runs.

    .venv/bin/python scripts/serving_summary.py docs/results/serving/run*.json > docs/results/serving/summary.txt
"""

from __future__ import annotations

import json
import statistics
import sys


def main(paths: list[str]) -> int:
    runs = [json.loads(open(p).read())["levels"] for p in paths]
    keys = [(r["model"], r["max_concurrency"]) for r in runs[0]]
    print(f"{len(runs)} runs; median [min, max]")
    print(
        f"{'policy':24s} {'conc':>4s}  {'out tok/s':>20s}  {'vs target-only':>20s}  {'TTFT p50 ms':>12s}  "
        f"{'TPOT p50 ms':>12s}  {'served/offline B8':>20s}"
    )
    for model, c in keys:
        rows = [next(r for r in run if (r["model"], r["max_concurrency"]) == (model, c)) for run in runs]

        def span(values: list[float], spec: str) -> str:
            return f"{statistics.median(values):{spec}} [{min(values):{spec}}, {max(values):{spec}}]"

        offline = [r["served_over_offline"] for r in rows if "served_over_offline" in r]
        print(
            f"{model:24s} {c:>4d}  {span([r['output_throughput'] for r in rows], '.0f'):>20s}  "
            f"{span([r['speedup_over_target_only'] for r in rows], '.2f'):>20s}  "
            f"{statistics.median(r['median_ttft_ms'] for r in rows):>12.0f}  "
            f"{statistics.median(r['median_tpot_ms'] for r in rows):>12.1f}  "
            f"{span(offline, '.2f') if offline else '-':>20s}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
