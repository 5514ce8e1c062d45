"""`cascade calibrate`: one knob. Find the α of a policy's rule that meets a target, by real decoding.

    cascade calibrate policies/cascade-chow.yaml --prompts prompts/stdlib-heldout.jsonl --limit 30 \\
        --target-share 0.5 --out chow-share0.5.yaml

Works for any rule, closed-form or learned (no scikit-learn here). Two objectives:

- `--target-share S`: the measured share of target-decided tokens on the prompts (defined in
  `cascade.calibrate.scores`: 1 − kept drafts / emitted tokens) within `--tolerance` of S.
- `--quality-floor Q`: the α farthest toward the drafter-only end whose quality, relative to
  target-only on the same prompts, stays ≥ Q: the sweep's quality axis (first-line edit
  similarity to the prompts' references) and its guard (the parse rate, also ≥ Q of
  target-only's). Q = 0.99 is the sweep's "within 1%". The prompts need references.

The search (SPEC.md, "Learned deferral, in more detail"; RouteLLM's calibration):
1. a first replay at the policy's own α, which also logs every drafted position's features;
2. the first guess from the quantile of the rule's scores over those positions
   (`calibrate_scores.AlphaMap`: α(u) = the (1 − u)-quantile of the critical α, u the share
   of positions deferred; u = S for a target share);
3. then regula falsi on u between the closest measured points on either side (bisection
   when only one side is measured, or when interpolation would land near an end), each
   step a real replay, until the share is within tolerance (or, for a quality floor, until
   the passing and failing points' target shares are within tolerance of each other), or
   `--max-replays` replays were spent.
Every replay is a run in the store (source "cascade calibrate"). The result is a derived
policy YAML (`Policy.derive`, α set) and a record in the store's `calibrations` table.
The share is monotone in α for every rule here up to the noise of changed prefixes; the
bracket is kept from measured points only, so a non-monotone step cannot loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cascade.calibrate.replay import Replay, Replayer
from cascade.calibrate.scores import AlphaMap, critical_alphas
from cascade.errors import CascadeError
from cascade.policy import Policy

DEFAULT_TOLERANCE = 0.02  # = cascade.calibrate.cli's (the command line's), a test checks
DEFAULT_MAX_REPLAYS = 8


@dataclass
class Calibration:
    objective: str  # "target_share" | "quality_floor"
    goal: float
    tolerance: float
    alpha: float
    measured: float | None  # share (target_share) or relative quality (quality_floor) at α
    converged: bool
    replays: list[Replay] = field(default_factory=list)
    baseline: Replay | None = None  # target-only (quality floor)
    note: str = ""

    @property
    def run_ids(self) -> list[int]:
        runs = ([self.baseline] if self.baseline else []) + self.replays
        return [r.run_id for r in runs if r.run_id is not None]


def _at(policy: Policy, alpha: float) -> Policy:
    return policy.derive(f"{policy.name}@α={alpha:.6g}", {"rule": {"alpha": float(alpha)}}, drop=())


def _first(policy: Policy, replayer: Replayer, say) -> tuple[Replay, AlphaMap]:
    """The replay at the policy's own α, and the α map from the scores it logged."""
    from cascade.plugins import registry as default_registry

    reg = replayer.registry or default_registry()
    rule_cls = reg.rule(policy.rule.name)
    if policy.mode not in ("speculative", "sequential") or policy.rule.name == "none":
        raise CascadeError(
            f"{policy.name}: nothing to calibrate: mode {policy.mode!r} with rule {policy.rule.name!r} "
            "has no α (calibrate a speculative or sequential policy with a deferral rule)"
        )
    first = replayer.replay(policy, policy.rule.alpha)
    scores = critical_alphas(first.rule, first.columns)
    spec, drafter = rule_cls.alpha_range
    amap = AlphaMap(spec, drafter, scores)
    how = (
        f"{int(np.isfinite(scores).sum())} logged scores"
        if scores is not None
        else f"no scores for rule {policy.rule.name!r}: α moves linearly"
    )
    say(
        f"replay 1 at α={policy.rule.alpha:g} (the policy's): target share {first.share:.3f}, "
        f"quality {_f(first.quality)} (run {first.run_id}, {first.seconds:.0f} s); {how}; "
        f"working α range [{amap.spec_end:.4g}, {amap.drafter_end:.4g}]"
    )
    return first, amap


def _next_u(lo: tuple[float, float] | None, hi: tuple[float, float] | None, goal: float) -> float:
    """Regula falsi on (u, value) points: `lo` below the goal, `hi` above; bisection near the ends."""
    (u0, v0) = lo if lo is not None else (0.0, 0.0)
    (u1, v1) = hi if hi is not None else (1.0, 1.0)
    mid = (u0 + u1) / 2
    if lo is None or hi is None or v1 == v0:
        return mid
    u = u0 + (goal - v0) * (u1 - u0) / (v1 - v0)
    w = u1 - u0
    return u if u0 + 0.1 * w <= u <= u1 - 0.1 * w else mid


def search_share(
    policy: Policy, replayer: Replayer, goal: float, tolerance: float, max_replays: int, say
) -> Calibration:
    first, amap = _first(policy, replayer, say)
    done = [first]
    lo: tuple[float, float] | None = None  # (u, share) with share < goal (toward the drafter end)
    hi: tuple[float, float] | None = None  # (u, share) with share > goal

    def place(r: Replay, u: float) -> None:
        nonlocal lo, hi
        if r.share < goal and (lo is None or u > lo[0]):
            lo = (u, r.share)
        elif r.share > goal and (hi is None or u < hi[0]):
            hi = (u, r.share)

    place(first, amap.u_of(policy.rule.alpha))
    while abs(done[-1].share - goal) > tolerance and len(done) < max_replays:
        inside = (lo is None or goal > lo[0]) and (hi is None or goal < hi[0])
        # the quantile step first (defer a share `goal` of the logged positions), then regula falsi
        u = goal if len(done) == 1 and inside else _next_u(lo, hi, goal)
        if (lo and hi and hi[0] - lo[0] < 1e-4) or (lo and lo[0] >= 1.0) or (hi and hi[0] <= 0.0):
            break  # the bracket closed: no α between two neighbouring scores reaches the goal
        a = amap.alpha(u)
        r = replayer.replay(_at(policy, a), a)
        done.append(r)
        place(r, u)
        say(
            f"replay {len(done)} at α={a:.6g} (u={u:.3f}): target share {r.share:.3f} (run {r.run_id}, "
            f"{r.seconds:.0f} s)"
        )
    best = min(done, key=lambda r: abs(r.share - goal))
    ok = abs(best.share - goal) <= tolerance
    note = (
        ""
        if ok
        else (
            f"no replay came within {tolerance} of {goal} in {len(done)} replays; the closest measured {best.share:.3f}"
        )
    )
    assert best.alpha is not None
    return Calibration("target_share", goal, tolerance, best.alpha, best.share, ok, done, note=note)


def search_quality(
    policy: Policy, replayer: Replayer, floor: float, tolerance: float, max_replays: int, say
) -> Calibration:
    base = replayer.replay(
        policy.derive(
            "target-only", {"mode": "target", "rule": {"name": "none", "alpha": 0.0}}, drop=("description", "rule")
        ),
        None,
    )
    if base.quality is None or not base.quality:
        raise CascadeError(
            "--quality-floor compares first-line edit similarity to the prompts' references: the "
            'prompts file needs a "reference" on every line (target-only scored '
            f"{_f(base.quality)})"
        )
    say(f"target-only: quality {base.quality:.2f}, parse rate {_f(base.parses)} (run {base.run_id})")

    def rel(r: Replay) -> float:
        q = (r.quality or 0.0) / base.quality  # type: ignore[operator]
        if base.parses and r.parses is not None and r.parses < floor * base.parses:
            return -math.inf  # fails the parse-rate guard
        return q

    first, amap = _first(policy, replayer, say)
    done = [first]
    good: tuple[float, Replay] | None = None  # smallest u (toward the drafter end) that passes
    bad: tuple[float, Replay] | None = None  # largest u that fails

    def place(r: Replay, u: float) -> None:
        nonlocal good, bad
        if rel(r) >= floor:
            if good is None or u < good[0]:
                good = (u, r)
        elif bad is None or u > bad[0]:
            bad = (u, r)

    place(first, amap.u_of(policy.rule.alpha))
    while len(done) < max_replays:
        if good is not None and (
            good[0] <= 0.0 or (bad is not None and abs(good[1].share - bad[1].share) <= tolerance)
        ):
            break
        if bad is None:
            u = 0.0  # nothing failed yet: try the drafter-only end (if it passes, that is the answer)
        else:
            hi_u = good[0] if good is not None else 1.0  # the speculative end passes (lossless)
            if hi_u - bad[0] < 1e-4:
                break
            u = (bad[0] + hi_u) / 2
        a = amap.alpha(u)
        r = replayer.replay(_at(policy, a), a)
        done.append(r)
        place(r, u)
        say(
            f"replay {len(done)} at α={a:.6g} (u={u:.3f}): {_judged(r, rel(r), base)}, target share {r.share:.3f} "
            f"(run {r.run_id}, {r.seconds:.0f} s)"
        )
    if good is None:
        a = amap.alpha(1.0)
        return Calibration(
            "quality_floor",
            floor,
            tolerance,
            a,
            None,
            False,
            done,
            base,
            note=f"no replay kept quality ≥ {floor} of target-only; α set to the speculative end",
        )
    u_good, r_good = good
    assert r_good.alpha is not None
    ok = u_good <= 0.0 or (bad is not None and abs(r_good.share - bad[1].share) <= tolerance)
    note = "" if ok else f"stopped after {len(done)} replays before the bracket closed to {tolerance} in share"
    return Calibration("quality_floor", floor, tolerance, r_good.alpha, rel(r_good), ok, done, base, note=note)


def _judged(r: Replay, relative: float, base: Replay) -> str:
    """How a replay scored against target-only: its relative quality, or that it failed the parse-rate guard."""
    if math.isinf(relative):
        return f"fails the parse-rate guard (parse rate {_f(r.parses)} against target-only's {_f(base.parses)})"
    return f"quality {relative:.3f} of target-only"


def _f(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def prompts_sha256(prompts: list[dict]) -> str:
    h = hashlib.sha256()
    for row in prompts:
        h.update(json.dumps(row, sort_keys=True).encode())
    return h.hexdigest()


def calibrate(
    policy: Policy,
    prompts: list[dict],
    store: Any,
    *,
    target_share: float | None = None,
    quality_floor: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_replays: int = DEFAULT_MAX_REPLAYS,
    max_new_tokens: int | None = None,
    registry: Any = None,
    say: Any = None,
) -> Calibration:
    """Run the search of the module docstring; the store must be open (every replay is logged there)."""
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if (target_share is None) == (quality_floor is None):
        raise CascadeError("calibrate: give exactly one of --target-share and --quality-floor")
    if tolerance <= 0:
        raise CascadeError(f"--tolerance must be > 0, got {tolerance}")
    if max_replays < 2:
        raise CascadeError(f"--max-replays must be at least 2 (the first replay and one step), got {max_replays}")
    replayer = Replayer(prompts, store, max_new_tokens, registry, with_quality=quality_floor is not None, say=say)
    if target_share is not None:
        if not 0 < target_share <= 1:
            raise CascadeError(f"--target-share must be in (0, 1], got {target_share}")
        return search_share(policy, replayer, target_share, tolerance, max_replays, say)
    assert quality_floor is not None
    if not 0 < quality_floor <= 1.5:
        raise CascadeError(f"--quality-floor is relative to target-only (e.g. 0.99), got {quality_floor}")
    return search_quality(policy, replayer, quality_floor, tolerance, max_replays, say)
