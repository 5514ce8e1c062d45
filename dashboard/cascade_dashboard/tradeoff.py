"""Trade-off points: quality relative to target-only against speed-up and target calls per token, the
Pareto frontier and the "within 1% of target-only" test (cascade.bench.sweep_analysis's definitions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

TOLERANCE = 0.01  # cascade.bench.sweep_analysis.QUALITY_TOLERANCE
METRICS = {  # quality column -> (relative column, label)
    "edit_similarity": "first-line edit similarity / target-only's",
    "chrf": "chrF / target-only's",
    "exact_match": "exact match / target-only's",
}


def _ok(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def pareto_front(xs: Sequence[float | None], ys: Sequence[float | None], maximize_x: bool = True) -> list[int]:
    """Indices of points no other point dominates (y always maximised); None/NaN left out."""
    sx = 1 if maximize_x else -1
    pts = [(sx * x, y, i) for i, (x, y) in enumerate(zip(xs, ys)) if _ok(x) and _ok(y)]
    return [i for x, y, i in pts if not any(ox >= x and oy >= y and (ox > x or oy > y) for ox, oy, _ in pts)]


def curve_label(row: dict[str, Any]) -> str:
    if row["mode"] == "target":
        return "target-only"
    return f"{row['mode']} · {row['rule']} · {row.get('drafter') or '-'}"


def points(runs: list[dict[str, Any]], metric: str = "edit_similarity") -> list[dict[str, Any]]:
    """One point per run with a baseline and the quality metric: curve, run id, α, speed-up, target calls per
    token, relative quality, parse ratio, within_1pct, pareto_speedup, pareto_calls."""
    out = []
    by_id = {r["id"]: r for r in runs}
    for r in runs:
        base = by_id.get(r.get("baseline_run_id"))
        if base is None or not _ok(r.get(metric)) or not _ok(base.get(metric)) or not base[metric]:
            continue
        parses_ok = (
            not (_ok(r.get("parses")) and _ok(base.get("parses"))) or r["parses"] >= (1 - TOLERANCE) * base["parses"]
        )
        rel = r[metric] / base[metric]
        out.append(
            {
                "run_id": r["id"],
                "policy": r["policy_name"],
                "curve": curve_label(r),
                "rule": r["rule"],
                "alpha": r["alpha"],
                "speedup": r.get("speedup"),
                "target_calls_per_token": r.get("target_calls_per_token"),
                "quality_rel": rel,
                "within_1pct": bool(rel >= 1 - TOLERANCE and parses_ok),
            }
        )
    front_s = set(pareto_front([p["speedup"] for p in out], [p["quality_rel"] for p in out], True))
    front_c = set(pareto_front([p["target_calls_per_token"] for p in out], [p["quality_rel"] for p in out], False))
    for i, p in enumerate(out):
        p["pareto_speedup"] = i in front_s
        p["pareto_calls"] = i in front_c
    return out
