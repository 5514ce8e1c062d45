"""α sweeps: a rule's speed/quality trade-off curve, several rules on one plot, the Pareto frontier.

For each policy, α runs over its rule's range (`alpha_range`: speculative end ->
drafter-only end; an infinite end is clipped to [−2, 5], as `opt`'s); a lossy policy runs
its lenience l over (0, 1] instead; a policy with nothing to vary is one point. Every
point is a row of one `cascade.bench.run.run_bench` call, so models load once, target-only
runs in the same process, and the store logs every point with its quality.

Baselines on the same plot, added unless asked not to (from the first policy with a
model drafter): target-only (the reference for speed-up and quality), lossless
speculative decoding, the sequential token cascade (chow, α swept) and lossy
speculative decoding (lenience swept).

The quality axis is `QUALITY_METRIC`: the first generated line's edit similarity to the
reference (CodeXGLUE's line-level metric), the mean over prompts with its 95% interval.
It is graded (unlike exact match), read against the held-out code (unlike the target's
log-prob, which rewards whatever the target itself would write), and it reads the first
line only, so breaking a loop later in a continuation earns nothing (unlike chrF of the
whole continuation). A `SweepResult` holds the points, the frontiers, where each curve
crosses "within 1% of target-only" on that metric, the knob value there, and its speed-up
relative to lossless speculative decoding; `sweep_plot.write_outputs` writes it as CSV,
JSON and a PNG plot.

The cost is points × (warm-up + prompts × (1 recorded + repeats timed)) generations:
`cascade sweep` prints that number and an estimate of the time after its first generation
(`run_bench(eta=...)`), and its progress bar shows the time remaining as it goes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cascade.bench.results import BenchResult, Row
from cascade.bench.run import run_bench
from cascade.errors import CascadeError
from cascade.policy import Policy
from cascade.tables import fmt, format_table, nan_to_none

DEFAULT_INF_CLIP = (-2.0, 5.0)  # (lower, upper): the finite stand-ins for an infinite end of a rule's α range
QUALITY_TOLERANCE = 0.01  # "within 1% of target-only" on QUALITY_METRIC
QUALITY_METRIC = "edit_similarity"  # the quality axis (cascade.metrics.Quality field; see the module docstring)
QUALITY_LABEL = "first-line edit similarity to the reference (0-100)"
GUARD = "parses"  # a point within 1% must also keep this share of target-only's (see `analyze`)
REPLACE_RULE = ("description", "rule")  # `Policy.derive(drop=...)`: a baseline's rule replaces the policy's whole


# ---------------------------------------------------------------------- grids


def alpha_grid(rule_name: str, alpha_range: tuple[float, float], n: int) -> list[float]:
    """n evenly spaced α from the speculative end to the drafter-only end, both included; ±inf clipped.

    Every rule clips alike (`DEFAULT_INF_CLIP`); `rule_name` names the rule the grid is for.
    """
    if n < 1:
        raise CascadeError(f"--alphas must be at least 1, got {n}")
    lo_clip, hi_clip = DEFAULT_INF_CLIP

    def finite(a: float) -> float:
        if a == -math.inf:
            return lo_clip
        if a == math.inf:
            return hi_clip
        return float(a)

    start, end = finite(alpha_range[0]), finite(alpha_range[1])
    if n == 1:
        return [(start + end) / 2]
    return [round(float(a), 6) for a in np.linspace(start, end, n)]


def lenience_grid(n: int) -> list[float]:
    """n evenly spaced lenience values in (0, 1]: 1 (lossless) down to 1/n."""
    if n < 1:
        raise CascadeError(f"--alphas must be at least 1, got {n}")
    return [round(float(v), 3) for v in np.linspace(1.0, 1.0 / n, n)]


def parse_values(text: str, what: str = "--alpha") -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CascadeError(f"{what} takes comma-separated numbers, e.g. 0,0.3,0.6; got {text!r}") from None
    if not values:
        raise CascadeError(f"{what}: no values in {text!r}")
    return values


# ---------------------------------------------------------------------- the points


@dataclass
class Curve:
    label: str
    knob: str | None  # "alpha" | "lenience" | None (a single point)
    policies: list[Policy]
    values: list[float | None]
    role: str = "rule"  # "rule" | "baseline" | "reference" (target-only, lossless speculative)


def _variant(policy: Policy, knob: str, value: float) -> Policy:
    """The policy at one point of its curve: α of its rule, or its lenience, set to `value`."""
    if knob == "alpha":
        return policy.derive(f"{policy.name}@α={value:g}", {"rule": {"alpha": value}}, drop=())
    return policy.derive(f"{policy.name}@l={value:g}", {"decoding": {"lenience": value}}, drop=())


def plan_curves(policies: Sequence[Policy], *, alphas: list[float] | None = None, n: int = 5,
                lenience: list[float] | None = None, baselines: bool = True, registry=None) -> list[Curve]:
    """The curves to measure: one per policy, plus the baselines (see the module docstring)."""
    from cascade.plugins import registry as default_registry

    reg = registry or default_registry()
    if not policies:
        raise CascadeError("sweep: give at least one policy")
    n_len = len(alphas) if alphas is not None and lenience is None else n
    len_values = lenience if lenience is not None else lenience_grid(n_len)
    curves: list[Curve] = []
    for p in policies:
        curves.append(_curve(p, alphas, n, len_values, reg))
    if not baselines:
        return curves
    modes = {p.mode for p in policies}
    model_drafted = [p for p in policies if p.drafter is not None and p.mode != "target"
                     and not reg.drafter(p.drafter.plugin).deterministic]
    like = model_drafted[0] if model_drafted else None
    first = policies[0]
    if "target" not in modes:
        target_only = first.derive("target-only", {"mode": "target", "rule": {"name": "none", "alpha": 0.0}},
                                  drop=REPLACE_RULE)
        curves.insert(0, Curve("target-only", None, [target_only], [None], "reference"))
    if like is None:
        return curves
    has_lossless = any(p.mode == "speculative" and p.rule.name == "none" for p in policies)
    if not has_lossless:
        lossless = like.derive("speculative-lossless", {"mode": "speculative", "rule": {"name": "none", "alpha": 0.0}},
                               drop=REPLACE_RULE)
        curves.append(Curve("speculative-lossless", None, [lossless], [None], "reference"))
    if "sequential" not in modes:
        seq = like.derive("sequential-chow", {"mode": "sequential", "rule": {"name": "chow", "alpha": 0.5}},
                          drop=REPLACE_RULE)
        curves.append(_curve(seq, alphas, n, len_values, reg, role="baseline"))
    if "lossy" not in modes:
        lossy = like.derive("lossy-speculative", {"mode": "lossy", "rule": {"name": "none", "alpha": 0.0},
                                                  "decoding": {"lenience": 0.5}}, drop=REPLACE_RULE)
        curves.append(_curve(lossy, alphas, n, len_values, reg, role="baseline"))
    return curves


def _curve(p: Policy, alphas, n, len_values, reg, role: str | None = None) -> Curve:
    if p.mode == "lossy":
        values = [v for v in len_values if 0 < v <= 1]
        return Curve(p.name, "lenience", [_variant(p, "lenience", v) for v in values], values, role or "baseline")
    rule_cls = reg.rule(p.rule.name)
    varies = p.mode in ("speculative", "sequential") and p.rule.name != "none"
    if not varies:
        lossless = p.mode == "speculative" and p.rule.name == "none"
        return Curve(p.name, None, [p], [None], role or ("reference" if p.mode == "target" or lossless else "rule"))
    lo, hi = sorted(rule_cls.alpha_range)
    if alphas is not None:
        values = [a for a in alphas if lo <= a <= hi]
        if not values:
            raise CascadeError(f"{p.name}: none of the α values {alphas} lies in rule {p.rule.name!r}'s range "
                               f"[{lo}, {hi}]")
    else:
        values = alpha_grid(p.rule.name, rule_cls.alpha_range, n)
    return Curve(p.name, "alpha", [_variant(p, "alpha", a) for a in values], values,
                 role or ("baseline" if p.mode == "sequential" else "rule"))


# ---------------------------------------------------------------------- Pareto frontier


def pareto_front(xs: Sequence[float], ys: Sequence[float], maximize_x: bool = True, maximize_y: bool = True) -> list[int]:
    """Indices of the points no other point dominates (at least as good on both axes, better on one).

    NaN points are left out. Returned in increasing x. Duplicates of a frontier point are all kept.
    """
    sx, sy = (1 if maximize_x else -1), (1 if maximize_y else -1)
    pts = [(sx * x, sy * y, i) for i, (x, y) in enumerate(zip(xs, ys))
           if x is not None and y is not None and not (math.isnan(x) or math.isnan(y))]
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


def run_sweep(curves: Sequence[Curve], prompts: Sequence[dict], *, repeats: int = 1, warmup: int = 1, seeds: int = 1,
              max_new_tokens: int | None = None, store=None, progress: bool = True, registry=None,
              meta: dict[str, Any] | None = None, eta: str | None = None) -> SweepResult:
    """Every point of every curve as one bench run; `eta`: print the plan and an estimate up front (run_bench)."""
    policies = [p for c in curves for p in c.policies]
    bench = run_bench(policies, prompts, repeats=repeats, warmup=warmup, seeds=seeds, max_new_tokens=max_new_tokens,
                      store=store, progress=progress, registry=registry, costs=False, meta=meta, eta=eta,
                      unit="points")
    return summarize(curves, bench)


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
    lossless = next((p for p in points if p["mode"] == "speculative" and p["rule"] == "none"
                     and p["temperature"] == 0.0), None)
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
        curve_rows.append({
            "curve": label, "role": mine[0]["role"], "knob": mine[0]["knob"], "values": [p["value"] for p in mine],
            "speedup_within_1pct": s, "target_calls_per_token_within_1pct": k,
            "value_within_1pct": best["value"] if best else math.nan,
            "policy_within_1pct": best["policy"] if best else None,
            "vs_lossless_speculative": (s / lossless_speed if mine[0]["role"] != "reference" and lossless_speed
                                        and not math.isnan(lossless_speed) else math.nan),
        })
    summary = {"quality_metric": QUALITY_METRIC, "target_only_quality": target_quality, "quality_threshold": threshold,
               "guard": GUARD, "guard_floor": guard_floor,
               "lossless_speculative_speedup": lossless_speed, "quality_tolerance": QUALITY_TOLERANCE}
    return SweepResult(points, curve_rows, summary, meta)


def _point(row: Row, label: str, role: str, knob: str | None, value: float | None) -> dict[str, Any]:
    return {
        "curve": label, "role": role, "policy": row.name, "mode": row.mode, "rule": row.rule, "knob": knob,
        "value": value, "temperature": row.temperature, "block_size": row.block_size,
        "tokens_per_second": row.tokens_per_second, "tokens_per_second_min": row.tokens_per_second_min,
        "tokens_per_second_max": row.tokens_per_second_max, "speedup": row.speedup, "chrf": row.chrf,
        "chrf_rel": row.chrf_rel, "target_logprob": row.target_logprob,
        "target_logprob_delta": row.target_logprob_delta, "target_calls_per_token": row.target_calls_per_token,
        **_quality_fields(row),
        "drafter_calls_per_token": row.drafter_calls_per_token, "tau": row.mean_acceptance_length,
        "acceptance_rate": row.acceptance_rate, "deferral_rate": row.deferral_rate, "run_id": row.run_id,
    }


KEEP_NONE = ("value", "knob", "rule", "run_id", "curve", "role", "policy", "mode", "temperature", "block_size")


def load(path: Path | str) -> SweepResult:
    """A sweep.json written earlier, re-analysed (`analyze`) as the current code would."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        points = [{k: (math.nan if v is None and k not in KEEP_NONE else v) for k, v in p.items()}
                  for p in data["points"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CascadeError(f"{path}: not a sweep.json written by `cascade sweep` ({type(exc).__name__}: {exc})") from None
    return analyze(points, data.get("meta", {}))


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _quality_fields(row: Row) -> dict[str, Any]:
    """The quality axis (mean, 95% interval, paired difference to target-only) and the other completion metrics."""
    own = row.quality.get(QUALITY_METRIC, {})
    delta = row.quality_delta.get(QUALITY_METRIC, {})
    out = {"quality": own.get("mean", math.nan), "quality_low": own.get("low", math.nan),
           "quality_high": own.get("high", math.nan), "quality_delta": delta.get("mean", math.nan),
           "quality_delta_low": delta.get("low", math.nan), "quality_delta_high": delta.get("high", math.nan)}
    for k in ("exact_match", "edit_similarity_lines", "parses", "distinct_2", "repeat_4"):
        out[k] = row.quality.get(k, {}).get("mean", math.nan)
    out["seeds"] = row.seeds
    return out


def format_summary(result: SweepResult) -> str:
    """Per curve: its values, the best speed-up and target calls per token within 1% of target-only chrF."""
    s = result.summary
    rows = []
    for c in result.curves:
        rows.append([c["curve"], c["role"], c["knob"] or "-", ",".join(f"{v:g}" for v in c["values"] if v is not None),
                     fmt(c["speedup_within_1pct"], ".2f", "x"), fmt(c["target_calls_per_token_within_1pct"], ".2f"),
                     fmt(c.get("value_within_1pct"), ".3g"), fmt(c["vs_lossless_speculative"], ".2f", "x")])
    head = (f"quality: {QUALITY_LABEL}; target-only {fmt(s['target_only_quality'], '.2f')}; within 1%: "
            f">= {fmt(s['quality_threshold'], '.2f')}; lossless speculative speed-up "
            f"{fmt(s['lossless_speculative_speedup'], '.2f', 'x')}")
    table = format_table(["curve", "role", "knob", "values", "speed-up @1%", "target/tok @1%", "knob @1% (fewest calls)",
                          "vs lossless"], rows)
    return head + "\n\n" + table
