"""What a sweep's measured points say (`cascade.bench.sweep`): Pareto frontiers, where each curve crosses
"within 1% of target-only" on the quality axis, the knob value there, and its speed-up relative to lossless
speculative decoding. `cascade sweep --from sweep.json` recomputes all of it from saved points (`load`).

The quality axis is `QUALITY_METRIC`: the first generated line's edit similarity to the reference (see
`cascade.bench.sweep` for why), its mean over prompts with a 95% interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cascade.bench.results import BenchResult, BenchRow
from cascade.errors import CascadeError
from cascade.policy import Policy
from cascade.tables import fmt, format_table, nan_to_none

QUALITY_TOLERANCE = 0.01  # "within 1% of target-only" on QUALITY_METRIC
QUALITY_METRIC = "edit_similarity"  # the quality axis (cascade.metrics.Quality field)
QUALITY_LABEL = "first-line edit similarity to the reference (0-100)"
GUARD = "parses"  # a point within 1% must also keep this share of target-only's (see `analyze`)


@dataclass
class Curve:
    label: str
    knob: str | None  # "alpha" | "lenience" | None (a single point)
    policies: list[Policy]
    values: list[float | None]
    role: str = "rule"  # "rule" | "baseline" | "reference" (target-only, lossless speculative)


def pareto_front(
    xs: Sequence[float], ys: Sequence[float], maximize_x: bool = True, maximize_y: bool = True
) -> list[int]:
    """Indices of the points no other point dominates (at least as good on both axes, better on one).

    NaN points are left out. Returned in increasing x. Duplicates of a frontier point are all kept.
    """
    sx, sy = (1 if maximize_x else -1), (1 if maximize_y else -1)
    pts = [
        (sx * x, sy * y, i)
        for i, (x, y) in enumerate(zip(xs, ys))
        if x is not None and y is not None and not (math.isnan(x) or math.isnan(y))
    ]
    front = []
    for x, y, i in pts:
        dominated = any(ox >= x and oy >= y and (ox > x or oy > y) for ox, oy, _ in pts)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: xs[i])


def crossing(points: Sequence[tuple[float, float]], threshold: float, maximize: bool = True) -> float:
    """Best x on a curve (points in knob order, (x, quality)) while quality stays >= threshold.

    Between two neighbours on either side of the threshold, x is interpolated linearly at the
    threshold. NaN when no point reaches it.
    """
    best = []
    clean = [(x, q) for x, q in points if not (math.isnan(x) or math.isnan(q))]
    for x, q in clean:
        if q >= threshold:
            best.append(x)
    for (x0, q0), (x1, q1) in zip(clean, clean[1:]):
        if (q0 >= threshold) != (q1 >= threshold) and q0 != q1:
            t = (threshold - q0) / (q1 - q0)
            best.append(x0 + t * (x1 - x0))
    if not best:
        return math.nan
    return max(best) if maximize else min(best)


# ---------------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    points: list[dict[str, Any]]
    curves: list[dict[str, Any]]
    summary: dict[str, Any]
    meta: dict[str, Any]
    bench: BenchResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return nan_to_none({"meta": self.meta, "summary": self.summary, "curves": self.curves, "points": self.points})


def summarize(curves: Sequence[Curve], bench: BenchResult) -> SweepResult:
    points = []
    owner = {}
    for c in curves:
        for p, v in zip(c.policies, c.values):
            owner[p.name] = (c, v)
    for row in bench.rows:
        c, v = owner.get(row.name, (None, None))
        label = c.label if c else row.name  # a row the bench added (target-only)
        role = c.role if c else "reference"
        points.append(_point(row, label, role, c.knob if c else None, v))
    result = analyze(points, bench.meta)
    result.bench = bench
    return result


def analyze(points: list[dict[str, Any]], meta: dict[str, Any]) -> SweepResult:
    """Frontiers, the 1% guide and each curve's crossing and shipping value, from measured points
    (what `cascade sweep --from sweep.json` recomputes without measuring again).

    A point counts as "within 1%" when its mean quality is at least 99% of target-only's and
    the share of its completions that parse is at least 99% of target-only's (`GUARD`): a policy
    that copies its way to a closer first line but breaks the code does not qualify.
    """
    target = next((p for p in points if p["mode"] == "target"), None)
    target_quality = target["quality"] if target else math.nan
    threshold = (1 - QUALITY_TOLERANCE) * target_quality
    guard_floor = (1 - QUALITY_TOLERANCE) * target[GUARD] if target and not _missing(target.get(GUARD)) else -math.inf

    def qualifying(p: dict[str, Any]) -> float:
        """The point's quality, or −inf when it fails the guard (so it counts as below the guide)."""
        if not _missing(p.get(GUARD)) and p[GUARD] < guard_floor:
            return -math.inf
        return p["quality"]

    speed = [p["speedup"] for p in points]
    calls = [p["target_calls_per_token"] for p in points]
    qual = [p["quality"] for p in points]
    front_speed = set(pareto_front(speed, qual, True, True))
    front_calls = set(pareto_front(calls, qual, False, True))
    for i, p in enumerate(points):
        p["pareto_speedup"] = i in front_speed
        p["pareto_calls"] = i in front_calls
        p["within_1pct"] = not _missing(p["quality"]) and qualifying(p) >= threshold
    lossless = next(
        (p for p in points if p["mode"] == "speculative" and p["rule"] == "none" and p["temperature"] == 0.0), None
    )
    lossless_speed = lossless["speedup"] if lossless else math.nan
    curve_rows = []
    for label in dict.fromkeys(p["curve"] for p in points):
        mine = [p for p in points if p["curve"] == label]
        mine.sort(key=lambda p: (p["value"] is None, p["value"] if p["value"] is not None else 0))
        if mine and mine[0]["knob"] == "lenience":
            mine.sort(key=lambda p: -p["value"])  # lossless end first, like α
        s = crossing([(p["speedup"], qualifying(p)) for p in mine], threshold, maximize=True)
        k = crossing([(p["target_calls_per_token"], qualifying(p)) for p in mine], threshold, maximize=False)
        # the knob value to ship: the measured point within 1% with the fewest target calls per token
        # (calls are counted, not timed: the choice does not move with the machine's noise)
        ok = [p for p in mine if p["within_1pct"] and not _missing(p["target_calls_per_token"])]
        best = min(ok, key=lambda p: p["target_calls_per_token"]) if ok else None
        curve_rows.append(
            {
                "curve": label,
                "role": mine[0]["role"],
                "knob": mine[0]["knob"],
                "values": [p["value"] for p in mine],
                "speedup_within_1pct": s,
                "target_calls_per_token_within_1pct": k,
                "value_within_1pct": best["value"] if best else math.nan,
                "policy_within_1pct": best["policy"] if best else None,
                "vs_lossless_speculative": (
                    s / lossless_speed
                    if mine[0]["role"] != "reference" and lossless_speed and not math.isnan(lossless_speed)
                    else math.nan
                ),
            }
        )
    summary = {
        "quality_metric": QUALITY_METRIC,
        "target_only_quality": target_quality,
        "quality_threshold": threshold,
        "guard": GUARD,
        "guard_floor": guard_floor,
        "lossless_speculative_speedup": lossless_speed,
        "quality_tolerance": QUALITY_TOLERANCE,
    }
    return SweepResult(points, curve_rows, summary, meta)


def _point(row: BenchRow, label: str, role: str, knob: str | None, value: float | None) -> dict[str, Any]:
    return {
        "curve": label,
        "role": role,
        "policy": row.name,
        "mode": row.mode,
        "rule": row.rule,
        "knob": knob,
        "value": value,
        "temperature": row.temperature,
        "block_size": row.block_size,
        "tokens_per_second": row.tokens_per_second,
        "tokens_per_second_min": row.tokens_per_second_min,
        "tokens_per_second_max": row.tokens_per_second_max,
        "speedup": row.speedup,
        "chrf": row.chrf,
        "chrf_rel": row.chrf_rel,
        "target_logprob": row.target_logprob,
        "target_logprob_delta": row.target_logprob_delta,
        "target_calls_per_token": row.target_calls_per_token,
        **_quality_fields(row),
        "drafter_calls_per_token": row.drafter_calls_per_token,
        "tau": row.mean_acceptance_length,
        "acceptance_rate": row.acceptance_rate,
        "deferral_rate": row.deferral_rate,
        "run_id": row.run_id,
    }


KEEP_NONE = ("value", "knob", "rule", "run_id", "curve", "role", "policy", "mode", "temperature", "block_size")


def load(path: Path | str) -> SweepResult:
    """A sweep.json written earlier, re-analysed (`analyze`) as the current code would."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        points = [
            {k: (math.nan if v is None and k not in KEEP_NONE else v) for k, v in p.items()} for p in data["points"]
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CascadeError(
            f"{path}: not a sweep.json written by `cascade sweep` ({type(exc).__name__}: {exc})"
        ) from None
    return analyze(points, data.get("meta", {}))


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _quality_fields(row: BenchRow) -> dict[str, Any]:
    """The quality axis (mean, 95% interval, paired difference to target-only) and the other completion metrics."""
    own = row.quality.get(QUALITY_METRIC, {})
    delta = row.quality_delta.get(QUALITY_METRIC, {})
    out = {
        "quality": own.get("mean", math.nan),
        "quality_low": own.get("low", math.nan),
        "quality_high": own.get("high", math.nan),
        "quality_delta": delta.get("mean", math.nan),
        "quality_delta_low": delta.get("low", math.nan),
        "quality_delta_high": delta.get("high", math.nan),
    }
    for k in ("exact_match", "edit_similarity_lines", "parses", "distinct_2", "repeat_4"):
        out[k] = row.quality.get(k, {}).get("mean", math.nan)
    out["seeds"] = row.seeds
    return out


def format_summary(result: SweepResult) -> str:
    """Per curve: its values, the best speed-up and target calls per token within 1% of target-only chrF."""
    s = result.summary
    rows = []
    for c in result.curves:
        rows.append(
            [
                c["curve"],
                c["role"],
                c["knob"] or "-",
                ",".join(f"{v:g}" for v in c["values"] if v is not None),
                fmt(c["speedup_within_1pct"], ".2f", "x"),
                fmt(c["target_calls_per_token_within_1pct"], ".2f"),
                fmt(c.get("value_within_1pct"), ".3g"),
                fmt(c["vs_lossless_speculative"], ".2f", "x"),
            ]
        )
    head = (
        f"quality: {QUALITY_LABEL}; target-only {fmt(s['target_only_quality'], '.2f')}; within 1%: "
        f">= {fmt(s['quality_threshold'], '.2f')}; lossless speculative speed-up "
        f"{fmt(s['lossless_speculative_speedup'], '.2f', 'x')}"
    )
    table = format_table(
        ["curve", "role", "knob", "values", "speed-up @1%", "target/tok @1%", "knob @1% (fewest calls)", "vs lossless"],
        rows,
    )
    return head + "\n\n" + table
