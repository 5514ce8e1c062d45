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
whole continuation). `cascade.bench.sweep_analysis` turns the measured points into a `SweepResult`: the
frontiers, where each curve crosses "within 1% of target-only" on that metric, the knob
value there, and its speed-up relative to lossless speculative decoding;
`sweep_plot.write_outputs` writes it as CSV, JSON and a PNG plot.

The cost is points × (warm-up + prompts × (1 recorded + repeats timed)) generations:
`cascade sweep` prints that number and an estimate of the time after its first generation
(`run_bench(eta=...)`), and its progress bar shows the time remaining as it goes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cascade.bench.run import run_bench
from cascade.bench.sweep_analysis import Curve, SweepResult, summarize
from cascade.errors import CascadeError
from cascade.policy import Policy
from cascade.rules import DEFAULT_INF_CLIP

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


def _variant(policy: Policy, knob: str, value: float) -> Policy:
    """The policy at one point of its curve: α of its rule, or its lenience, set to `value`."""
    if knob == "alpha":
        return policy.derive(f"{policy.name}@α={value:g}", {"rule": {"alpha": value}}, drop=())
    return policy.derive(f"{policy.name}@l={value:g}", {"decoding": {"lenience": value}}, drop=())


def plan_curves(
    policies: Sequence[Policy],
    *,
    alphas: list[float] | None = None,
    n: int = 5,
    lenience: list[float] | None = None,
    baselines: bool = True,
    registry=None,
) -> list[Curve]:
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
    model_drafted = [
        p
        for p in policies
        if p.drafter is not None and p.mode != "target" and not reg.drafter(p.drafter.plugin).deterministic
    ]
    like = model_drafted[0] if model_drafted else None
    first = policies[0]
    if "target" not in modes:
        target_only = first.derive(
            "target-only", {"mode": "target", "rule": {"name": "none", "alpha": 0.0}}, drop=REPLACE_RULE
        )
        curves.insert(0, Curve("target-only", None, [target_only], [None], "reference"))
    if like is None:
        return curves
    has_lossless = any(p.mode == "speculative" and p.rule.name == "none" for p in policies)
    if not has_lossless:
        lossless = like.derive(
            "speculative-lossless", {"mode": "speculative", "rule": {"name": "none", "alpha": 0.0}}, drop=REPLACE_RULE
        )
        curves.append(Curve("speculative-lossless", None, [lossless], [None], "reference"))
    if "sequential" not in modes:
        seq = like.derive(
            "sequential-chow", {"mode": "sequential", "rule": {"name": "chow", "alpha": 0.5}}, drop=REPLACE_RULE
        )
        curves.append(_curve(seq, alphas, n, len_values, reg, role="baseline"))
    if "lossy" not in modes:
        lossy = like.derive(
            "lossy-speculative",
            {"mode": "lossy", "rule": {"name": "none", "alpha": 0.0}, "decoding": {"lenience": 0.5}},
            drop=REPLACE_RULE,
        )
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
            raise CascadeError(
                f"{p.name}: none of the α values {alphas} lies in rule {p.rule.name!r}'s range [{lo}, {hi}]"
            )
    else:
        values = alpha_grid(p.rule.name, rule_cls.alpha_range, n)
    return Curve(
        p.name,
        "alpha",
        [_variant(p, "alpha", a) for a in values],
        values,
        role or ("baseline" if p.mode == "sequential" else "rule"),
    )


# ---------------------------------------------------------------------- Pareto frontier


def run_sweep(
    curves: Sequence[Curve],
    prompts: Sequence[dict],
    *,
    repeats: int = 1,
    warmup: int = 1,
    seeds: int = 1,
    max_new_tokens: int | None = None,
    store=None,
    progress: bool = True,
    registry=None,
    meta: dict[str, Any] | None = None,
    eta: str | None = None,
) -> SweepResult:
    """Every point of every curve as one bench run; `eta`: print the plan and an estimate up front (run_bench)."""
    policies = [p for c in curves for p in c.policies]
    bench = run_bench(
        policies,
        prompts,
        repeats=repeats,
        warmup=warmup,
        seeds=seeds,
        max_new_tokens=max_new_tokens,
        store=store,
        progress=progress,
        registry=registry,
        costs=False,
        meta=meta,
        eta=eta,
        unit="points",
    )
    return summarize(curves, bench)
