"""Summarise scripts/measure_schedules.sh's bench.json: per drafter family, every schedule's speed-up over
target-only (median of timed passes, with the range), the best constant γ, and adaptive's ratio to it and
to transformers' assisted generation with its own defaults. Ratios are taken pass by pass in the one run."""

from __future__ import annotations

import json
import statistics
import sys


def main(path: str) -> None:
    rows = {r["name"]: r for r in json.load(open(path))["rows"]}
    base = rows["target-only"]["tokens_per_second_passes"]

    def ratio(a: str, b_passes: list[float]) -> tuple[float, float, float]:
        xs = [x / y for x, y in zip(rows[a]["tokens_per_second_passes"], b_passes)]
        return statistics.median(xs), min(xs), max(xs)

    def fmt(t: tuple[float, float, float]) -> str:
        return f"{t[0]:.2f}x ({t[1]:.2f}-{t[2]:.2f})"

    print(f"target-only: {statistics.median(base):.1f} tok/s (passes {', '.join(f'{x:.1f}' for x in base)})\n")
    for fam in ("hf", "ngram", "ngram-v3"):
        names = [n for n in rows if n.startswith(fam + "-") and (fam != "ngram" or not n.startswith("ngram-v3"))]
        if not names:
            continue
        print(f"### {fam}\n\n| row | speed-up vs target-only | τ | target calls / token |\n|---|---|---|---|")
        for n in names:
            r = rows[n]
            print(
                f"| {n} | {fmt(ratio(n, base))} | {r.get('mean_acceptance_length') or float('nan'):.2f} | "
                f"{r.get('target_calls_per_token') or float('nan'):.3f} |"
            )
        constants = [n for n in names if n.split("-")[-1].startswith("k")]
        best = max(constants, key=lambda n: statistics.median(rows[n]["tokens_per_second_passes"]))
        ada = f"{fam}-adaptive"
        print(
            f"\nbest constant: {best}; adaptive / best constant: "
            f"{fmt(ratio(ada, rows[best]['tokens_per_second_passes']))}"
        )
        for peer in ("hf-assisted-default", "hf-assisted", "hf-prompt-lookup"):
            if peer in rows and ((fam == "hf") == (peer != "hf-prompt-lookup")):
                print(f"adaptive / {peer}: {fmt(ratio(ada, rows[peer]['tokens_per_second_passes']))}")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
