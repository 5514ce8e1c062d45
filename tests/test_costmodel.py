"""The cost model's ceiling is an upper bound on what a row achieves (cascade/runtime/costmodel.py).

The traces below are simulated steps with known costs (in target steps): a speculative
step costs v(k + 1) + ω for its target call plus c per drafter call, target-only pays
1 + ω per token and both pay the same prefill. The achieved speed-up is then exact, and
the ceiling computed from the trace's counters must never fall below it.
"""

import math
import random

import pytest

from cascade.runtime.costmodel import (
    expected_tokens_per_call,
    predicted_speedup,
    speedup_ceiling,
    step_costs,
    verify_cost,
)


def simulate(steps, *, gamma, c, curve, overhead, lookahead, prefill=0.0, policy_prefill=None):
    """steps: (drafted k, accepted n) per verification step -> the counters a bench row reports and the speed-up.

    Drafter calls per step: k (one per draft), + 1 with lookahead (a cascade's q_{k+1}).
    """
    tokens = sum(n + 1 for _, n in steps)
    drafted = sum(k for k, _ in steps)
    accepted = sum(n for _, n in steps)
    drafter_calls = sum(k + int(lookahead) for k, _ in steps)
    policy_time = (prefill if policy_prefill is None else policy_prefill) + sum(
        curve[k + 1] + overhead + (k + int(lookahead)) * c for k, _ in steps
    )
    target_only_time = prefill + tokens * (1 + overhead)
    base_seconds_per_token = target_only_time / tokens  # what the bench sees: prefill included
    return {
        "achieved": target_only_time / policy_time,
        "tau": tokens / len(steps),
        "acceptance_rate": accepted / drafted if drafted else math.nan,
        "target_calls_per_token": len(steps) / tokens,
        "drafter_calls_per_token": drafter_calls / tokens,
        "mean_block": 1 + drafted / len(steps),
        "omega": base_seconds_per_token - 1.0,  # relative to a one-token target step (= 1 here)
    }


def ceiling_of(s, c, curve):
    return speedup_ceiling(
        target_calls_per_token=s["target_calls_per_token"],
        drafter_calls_per_token=s["drafter_calls_per_token"],
        c=c,
        v=verify_cost(curve, s["mean_block"]),
        overhead=s["omega"],
    )


def test_cascade_like_trace_the_old_formula_put_below_the_achieved_speedup():
    # A cascade at γ=3: acceptance comes in runs (whole blocks kept, or the first draft refused),
    # and the drafter runs γ + 1 times per step (lookahead for the bonus position).
    gamma, c, curve = 3, 0.1, [0.0, 1.0, 1.1, 1.2, 1.3]  # curve[n] = v(n), n >= 1; v(1) = 1
    steps = [(3, 3)] * 6 + [(3, 0)] * 4
    s = simulate(steps, gamma=gamma, c=c, curve=curve, overhead=0.0, lookahead=True)
    assert s["acceptance_rate"] == pytest.approx(0.6) and s["tau"] == pytest.approx(2.8)
    assert s["achieved"] == pytest.approx(2.8 / (4 * 0.1 + 1.3))  # 1.647

    # SPEC.md's formula on the measured acceptance rate, the old "ceiling": 1.36x, below the achieved 1.65x
    old = predicted_speedup(s["acceptance_rate"], gamma, c, curve[gamma + 1])
    assert expected_tokens_per_call(0.6, gamma) == pytest.approx((1 - 0.6**4) / 0.4)  # 2.176 < τ = 2.8
    assert old == pytest.approx(2.176 / 1.6) and old < s["achieved"] - 0.25

    # the ceiling from the row's own counters: τ / (d·c + v(n̄)), here exactly achieved (no overhead)
    new = ceiling_of(s, c, curve[1:])
    assert new >= s["achieved"] - 1e-12
    assert new == pytest.approx(s["achieved"])


def test_ceiling_holds_with_overhead_and_prefill():
    # per-step overhead both pay (ω) and a prefill both pay: the achieved speed-up rises toward τ;
    # ω measured from target-only's tokens/s (prefill included) keeps the ceiling above it
    gamma, c, curve = 3, 0.2, [0.0, 1.0, 1.3, 1.5, 1.6]
    steps = [(3, 3), (3, 1), (2, 2), (3, 0), (1, 1), (3, 3)]
    plain = simulate(steps, gamma=gamma, c=c, curve=curve, overhead=0.0, lookahead=True)
    heavy = simulate(steps, gamma=gamma, c=c, curve=curve, overhead=2.0, lookahead=True, prefill=5.0)
    assert heavy["achieved"] > plain["achieved"]
    # ignoring ω would put the bound below the achieved speed-up
    no_omega = speedup_ceiling(
        target_calls_per_token=heavy["target_calls_per_token"],
        drafter_calls_per_token=heavy["drafter_calls_per_token"],
        c=c,
        v=verify_cost(curve[1:], heavy["mean_block"]),
    )
    assert no_omega < heavy["achieved"]
    assert ceiling_of(heavy, c, curve[1:]) >= heavy["achieved"]


def test_ceiling_is_never_below_the_achieved_speedup_on_random_traces():
    rng = random.Random(0)
    for _ in range(500):
        gamma = rng.randint(1, 6)
        c = rng.choice([0.0, rng.uniform(0.01, 0.8)])
        # any increasing v(n), convex, concave or neither
        curve = [0.0, 1.0]
        for _ in range(gamma):
            curve.append(curve[-1] + rng.uniform(0.0, 0.6))
        steps = []
        for _ in range(rng.randint(1, 40)):
            k = rng.randint(0, gamma)  # a drafter may stop early or find nothing
            steps.append((k, rng.randint(0, k)))
        lookahead = rng.random() < 0.5
        if all(k + int(lookahead) == 0 for k, _ in steps) and c == 0:
            c = 0.1
        overhead = rng.choice([0.0, rng.uniform(0.0, 3.0)])
        prefill = rng.uniform(0.0, 20.0)
        s = simulate(
            steps,
            gamma=gamma,
            c=c,
            curve=curve,
            overhead=overhead,
            lookahead=lookahead,
            prefill=prefill,
            policy_prefill=prefill + rng.uniform(0.0, 3.0),
        )
        assert ceiling_of(s, c, curve[1:]) >= s["achieved"] * (1 - 1e-9), (gamma, c, curve, steps, overhead)


def test_sequential_row_ceiling():
    # a sequential cascade: one drafter call per token, the target on deferred tokens only
    # (each call catching up at least one token: v >= 1)
    ceiling = speedup_ceiling(target_calls_per_token=0.4, drafter_calls_per_token=1.0, c=0.2, v=1.0)
    assert ceiling == pytest.approx(1 / (0.4 + 0.2))
    # target-only itself: exactly 1, whatever ω
    for w in (0.0, 0.5, 3.0):
        assert speedup_ceiling(
            target_calls_per_token=1.0, drafter_calls_per_token=0.0, c=0.0, v=1.0, overhead=w
        ) == pytest.approx(1.0)
    # nothing measured, or a row that costs nothing in these units: no number
    assert math.isnan(speedup_ceiling(target_calls_per_token=math.nan, drafter_calls_per_token=1.0, c=0.1, v=1.0))
    assert math.isnan(speedup_ceiling(target_calls_per_token=0.0, drafter_calls_per_token=1.0, c=0.0, v=1.0))


def test_verify_cost_is_the_lower_convex_envelope():
    linear = [1.0, 1.5, 2.0, 2.5]
    assert verify_cost(linear, 2.5) == pytest.approx(1.75)
    assert verify_cost(linear, 0.3) == 1.0 and verify_cost(linear, 9) == 2.5  # clipped to [1, len]
    concave = [1.0, 1.7, 1.75, 1.8]  # an n-token step costs about the same for n >= 2
    # blocks of 1 and 4 tokens average 2.5 tokens and cost (1 + 1.8) / 2 = 1.4 < v(2.5) on the curve:
    # the envelope (the chord from v(1) to v(4)) stays below that mean
    assert verify_cost(concave, 2.5) == pytest.approx(1.0 + 0.8 * 1.5 / 3)
    assert verify_cost(concave, 2.5) <= (1.0 + 1.8) / 2 + 1e-12 < 1.7  # the curve itself would say >= 1.7
    for x in (1, 2, 3, 4):
        assert verify_cost(concave, x) <= concave[x - 1] + 1e-12
    assert verify_cost([], 3) == 1.0


def test_step_costs_measures_every_block_size(family):
    from cascade.runtime import models

    f = family("gpt2")
    target, drafter = models.load_model(f["target"]), models.load_model(f["small"])
    cost = step_costs(target, drafter, [5, 6, 7, 8, 9], gamma=3, trials=3)
    assert len(cost["verify_costs"]) == 4 and cost["verify_costs"][0] == 1.0
    assert cost["v"] == cost["verify_costs"][-1] and cost["v"] > 0
    assert cost["c"] > 0 and cost["target_step_seconds"] > 0
    assert step_costs(target, None, [5, 6, 7], gamma=0, trials=3)["verify_costs"] == [1.0]
