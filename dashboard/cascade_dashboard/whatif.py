"""Re-applying a deferral rule to logged features: a first-order estimate of what another α would do.

Each rule decides the drafted token x from quantities the store logs per drafted position (q(x), max q,
p(x), max p, D_TV(p, q), ...), and says how in one place: its `critical_alpha(columns)`, the α below
which it defers each logged position (`cascade.rules`; the learned rule's is its score). `defer(rule,
alpha, f)` is r(x) = [α < critical α] for every logged position: `defer` and calibration agree with the
rule by construction (a test checks it against the rule's own `defer`).

Estimated acceptance of a drafted token under the new r:
- r(x) = 0: the cascade keeps the draft (π(x) ≥ q(x)): accepted;
- r(x) = 1 and the logged run also deferred it: the logged verdict (what the target really said);
- r(x) = 1 where the logged run did not defer: at T = 0 accepted iff x was the target's top token
  (p(x) = max p), at T > 0 with probability min(1, p(x)/q(x)) (for token-specific rules this takes
  η = Σ r·q as 1: an upper bound).
A block accepts its leading run of accepted drafts, so a step's expected accepted count is
Σ_i Π_{j≤i} a_j. It is first-order: later decisions would have seen other prefixes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cascade import BUILTIN_RULES, CONTEXT, DEFAULT_INF_CLIP, FEATURES, CascadeError, build_rule, parse_policy

ALPHA_RANGES: dict[str, tuple[float, float]] = {  # (speculative end, drafter-only end): the rules' own
    name: tuple(cls.alpha_range) for name, cls in BUILTIN_RULES.items()
}
RULES = tuple(ALPHA_RANGES)
GREEDY_EPS = 1e-6  # p(x) within this of max p counts as the target's top token


def rule_of(rule: str | Any) -> Any:
    """A rule instance: a built-in's by name (α does not matter here), or the rule object given."""
    return BUILTIN_RULES[rule]() if isinstance(rule, str) else rule


def slider_range(rule: str | Any) -> tuple[float, float]:
    """The rule's α range with infinite ends clipped, low to high."""
    lo, hi = rule_of(rule).alpha_range
    lo, hi = min(lo, hi), max(lo, hi)
    return (DEFAULT_INF_CLIP[0] if lo == -math.inf else lo, DEFAULT_INF_CLIP[1] if hi == math.inf else hi)


def critical(rule: str | Any, f: Mapping[str, Any]) -> np.ndarray | None:
    """Each logged position's critical α for the rule (None: it cannot be re-applied from logged features)."""
    columns = {n: np.asarray(v, dtype=float) for n, v in f.items() if n in FEATURES or n in ("position", *CONTEXT)}
    out = rule_of(rule).critical_alpha(columns)
    return None if out is None else np.asarray(out, dtype=float)


def logged_rule(policy_yaml: str, policy_dir: str | None = None) -> tuple[Any | None, str | None]:
    """The run's own rule when it is not a built-in (a plugin's, such as `learned`), built by its plugin from
    the logged policy: (rule, None); (None, None) for a built-in; (None, why) when it cannot be built here
    (the plugin is not installed, its artefact is gone)."""
    try:
        data = yaml.safe_load(policy_yaml)
        policy = parse_policy(data, "<logged policy>", Path(policy_dir) if policy_dir else None)
        if policy.rule.name in BUILTIN_RULES:
            return None, None
        return build_rule(policy), None
    except (CascadeError, yaml.YAMLError) as exc:
        return None, f"the run's rule cannot be rebuilt here: {exc}"


def choices(f: Mapping[str, Any], own: Any | None = None) -> dict[str, Any]:
    """Rule name -> what to re-apply: every built-in the logged features can feed, and the run's own rule
    (`logged_rule`) when it is a plugin's and its inputs were logged."""
    out: dict[str, Any] = {name: name for name in RULES if computable(name, f)}
    if own is not None and own.name not in out and computable(own, f):
        out[own.name] = own
    return out


def computable(rule: str | Any, f: Mapping[str, Any]) -> bool:
    """Whether the logged features hold what the rule reads (a deterministic drafter logs no q)."""
    if isinstance(rule, str) and rule not in BUILTIN_RULES:
        return False
    c = critical(rule, f)
    return c is not None and c.size > 0 and not np.isnan(c).all()


def arrays(f: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {n: np.asarray(f[n], dtype=float) for n in (*FEATURES, *CONTEXT, "position") if n in f}
    out["deferred"] = np.asarray([bool(x) for x in f["deferred"]])
    out["accepted"] = np.asarray([bool(x) for x in f["accepted"]])
    keys = np.asarray(f["sequence_id"], dtype=np.int64) * 100_000 + np.asarray(f["step"], dtype=np.int64)
    out["step_key"] = keys
    return out


def defer(rule: str | Any, alpha: float, a: Mapping[str, np.ndarray]) -> np.ndarray:
    """r(x) in {0, 1} per logged drafted position (float array): 1 where α < the rule's critical α."""
    c = critical(rule, a)
    if c is None:
        raise ValueError(f"rule {rule!r} cannot be re-applied from logged features")
    with np.errstate(invalid="ignore"):
        return (alpha < c).astype(float)


def accept_probs(r: np.ndarray, a: Mapping[str, np.ndarray], temperature: float) -> np.ndarray:
    """Estimated acceptance of each drafted token under the deferral indicator r (module docstring)."""
    logged = np.where(a["deferred"], a["accepted"].astype(float), np.nan)
    if temperature == 0:
        fresh = (a["p_x"] >= a["p_max"] - GREEDY_EPS).astype(float)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            fresh = np.clip(np.where(a["q_x"] > 0, a["p_x"] / a["q_x"], 0.0), 0.0, 1.0)
    fresh = np.nan_to_num(fresh, nan=0.0)
    under_target = np.where(np.isnan(logged), fresh, logged)
    return np.where(r > 0, under_target, 1.0)


def expected_accepted(acc: np.ndarray, step_key: np.ndarray) -> np.ndarray:
    """Per step (rows grouped by consecutive equal `step_key`, positions in order): Σ_i Π_{j≤i} a_j."""
    if acc.size == 0:
        return np.zeros(0)
    starts = np.flatnonzero(np.r_[True, step_key[1:] != step_key[:-1]])
    out = np.empty(starts.size)
    for i, (s, e) in enumerate(zip(starts, np.r_[starts[1:], acc.size])):
        out[i] = np.cumprod(acc[s:e]).sum()
    return out


def estimate(
    rule: str | Any,
    alpha: float,
    a: Mapping[str, np.ndarray],
    temperature: float,
    steps: int | None = None,
    target_calls: int | None = None,
) -> dict[str, float]:
    """Estimated deferral rate, acceptance rate, τ and target calls per token at `alpha`.

    `steps`, `target_calls`: the run's logged verification steps and target calls (steps that drafted
    nothing count too: each emits one token); default: one call per step with drafted positions.
    """
    n = a["p_max"].size
    if n == 0:
        return {
            "alpha": alpha,
            "deferral_rate": math.nan,
            "acceptance_rate": math.nan,
            "mean_acceptance_length": math.nan,
            "target_calls_per_token": math.nan,
        }
    r = defer(rule, alpha, a)
    per_step = expected_accepted(accept_probs(r, a, temperature), a["step_key"])
    accepted = float(per_step.sum())
    steps = max(steps or 0, per_step.size)
    calls = target_calls if target_calls is not None else steps
    return {
        "alpha": float(alpha),
        "deferral_rate": float(r.mean()),
        "acceptance_rate": accepted / n,
        "mean_acceptance_length": 1 + accepted / steps,
        "target_calls_per_token": calls / (accepted + steps),
    }


def curve(
    rule: str | Any,
    a: Mapping[str, np.ndarray],
    temperature: float,
    n: int = 41,
    steps: int | None = None,
    target_calls: int | None = None,
    extra: Sequence[float] = (),
) -> list[dict[str, float]]:
    lo, hi = slider_range(rule)
    grid = sorted({round(float(x), 6) for x in np.linspace(lo, hi, n)} | {float(x) for x in extra})
    return [estimate(rule, x, a, temperature, steps, target_calls) for x in grid]


def alpha_for_share(rule: str | Any, share: float, a: Mapping[str, np.ndarray], iters: int = 60) -> dict[str, float]:
    """The α whose estimated share of deferred (target-decided) drafted tokens is closest to `share`.

    Every closed-form rule defers less as α grows (toward its drafter-only end), so the share is
    monotone in α and bisection finds it. Returns alpha and the share it gives.
    """
    lo, hi = slider_range(rule)
    if rule == "none":
        return {"alpha": 0.0, "share": 1.0}

    def share_at(x: float) -> float:
        return float(defer(rule, x, a).mean())

    if share_at(lo) <= share:
        return {"alpha": lo, "share": share_at(lo)}
    if share_at(hi) >= share:
        return {"alpha": hi, "share": share_at(hi)}
    for _ in range(iters):  # invariant: share_at(lo) > share >= share_at(hi)
        mid = (lo + hi) / 2
        if share_at(mid) > share:
            lo = mid
        else:
            hi = mid
    return {"alpha": round(hi, 6), "share": share_at(round(hi, 6))}
