"""SPEC.md's cost model, measured on the models at hand, and the speed-up ceiling it gives a row.

Units: one target forward over one token (t1). c = one one-token drafter forward / t1;
v(n) = one target forward over n tokens / t1 (v(1) = 1); ω = the part of target-only's
time per token that is not its forward (per-step overhead, its prefill's share) / t1.

The ceiling (`speedup_ceiling`) is an upper bound computed from what a row *did*: per
emitted token it made T target calls over blocks of n̄ tokens on average and D drafter
calls. Each target call costs at least the forward of its block plus the per-step
overhead target-only pays, each drafter call at least one one-token drafter forward, and
its prefill at least target-only's; so a token costs at least T·(v(n̄) + ω) + D·c target
steps where target-only pays 1 + ω, and

    speed-up ≤ (1 + ω) / (T·(v(n̄) + ω) + D·c).

In speculative modes T = 1/τ and D = d/τ with d drafter calls per step, i.e.
τ·(1 + ω) / (v(n̄) + ω + d·c); with ω = 0 that is τ / (d·c + v(n̄)). v(n̄) is the lower
convex envelope of the measured v(n), a lower bound of the mean cost of blocks that
average n̄ tokens whatever their spread (Jensen). The worst case for the bound is all of
target-only's non-forward time being per-step overhead, so ω measured from target-only's
tokens/s (prefill included) keeps it a bound; ω < 0 (noise) counts as 0.

SPEC.md's prediction (1 − a^{γ+1}) / (1 − a) / (γ·c + v) (`predicted_speedup`) is that
formula with τ predicted from an i.i.d. per-position acceptance probability a and
d = γ. It is not a bound on a measured row: the measured acceptance rate (accepted /
drafted) is not that a (drafts after the first rejection count as rejected, and
acceptance comes in runs), and a cascade drafts γ + 1 times per step (lookahead).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from cascade.runtime import models
from cascade.runtime.ragged import RaggedLM


def _timed(fn: Callable[[], object], undo: Callable[[], object], device) -> float:
    """Seconds of one `fn` call; `undo` (untimed) restores the state after it."""
    models.sync(device)
    t0 = time.perf_counter()
    fn()
    models.sync(device)
    dt = time.perf_counter() - t0
    undo()
    return dt


@torch.inference_mode()
def step_costs(
    target_model,
    drafter_model,
    prompt_ids: list[int],
    gamma: int,
    trials: int = 7,
    rows: int = 1,
    runtimes: tuple[str, str] = ("auto", "auto"),
    drafter_context: int | None = None,
) -> dict:
    """c, v(n) for n = 1..γ+1 (`verify_costs`, v(1) = 1) and v = v(γ+1), with the seconds they come from.

    Measured with the engine's own cached forward (`cascade.runtime.ragged.RaggedLM`) after a prefill on a
    real prompt, for a batch of `rows` rows (each the same prompt): one-token steps of each model and
    n-token steps of the target, each rolled back (untimed) after timing; the median of `trials`.
    `runtimes` = how the target and the drafter run (`cascade.runtime.lean`: auto, lean or transformers).
    The trials are interleaved (every size once per round, round after round), so a change in the
    machine's load shifts every size alike rather than bending the curve. A model-free drafter
    (n-gram lookup) has c = 0. `drafter_context`: a sparse drafter's view (the most context tokens
    its step attends to, e.g. sink + window): the drafter is timed over the prompt's last that many.
    """
    target = RaggedLM(target_model, runtimes[0])
    device = target.device
    ids = torch.tensor(prompt_ids, dtype=torch.long, device=device)
    capacity = len(prompt_ids) + gamma + 8
    target.reset(rows, capacity)
    target.forward([ids[:-1]] * rows, last_only=True)
    base = list(target.lengths)
    drafter = dbase = None
    if drafter_model is not None:
        drafter = RaggedLM(drafter_model, runtimes[1])
        drafter.reset(rows, capacity)
        seen = ids[:-1] if drafter_context is None else ids[:-1][-drafter_context:]
        drafter.forward([seen] * rows, last_only=True)
        dbase = list(drafter.lengths)
    sizes = list(range(1, max(gamma, 0) + 2))
    for n in sizes:  # warm every shape once
        target.forward([ids[-1:].repeat(n)] * rows)
        target.rollback(base)
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    drafter_samples: list[float] = []
    for _ in range(trials):
        for n in sizes:
            block = [ids[-1:].repeat(n)] * rows  # (n,) per row
            samples[n].append(_timed(lambda: target.forward(block), lambda: target.rollback(base), device))  # noqa: B023
        if drafter is not None:
            drafter_samples.append(
                _timed(lambda: drafter.forward([ids[-1:]] * rows), lambda: drafter.rollback(dbase), device)
            )
    seconds = [statistics.median(samples[n]) for n in sizes]
    t1 = seconds[0]
    out = {
        "target_step_seconds": t1,
        "verify_seconds": seconds[-1],
        "v": seconds[-1] / t1,
        "verify_costs": [s / t1 for s in seconds],
        "c": 0.0,
        "drafter_step_seconds": 0.0,
    }
    if drafter is not None:
        td = statistics.median(drafter_samples[1:] or drafter_samples)  # the first call warms the drafter
        out.update(drafter_step_seconds=td, c=td / t1)
    return out


def verify_cost(costs: Sequence[float], tokens: float) -> float:
    """The lower convex envelope of v(n) = costs[n - 1] at `tokens` (clipped to [1, len(costs)]).

    A lower bound of the mean cost of target calls whose blocks average `tokens` tokens, however
    the sizes spread: the envelope is convex and below every v(n), so its mean ≥ (Jensen) its value
    at the mean.
    """
    if not costs:
        return 1.0
    x = min(max(float(tokens), 1.0), float(len(costs)))
    best = math.inf
    for i, vi in enumerate(costs, start=1):
        for j, vj in enumerate(costs, start=1):
            if i <= x <= j:
                best = min(best, vi if i == j else vi + (vj - vi) * (x - i) / (j - i))
    return best


def speedup_ceiling(
    *, target_calls_per_token: float, drafter_calls_per_token: float, c: float, v: float, overhead: float = 0.0
) -> float:
    """(1 + ω) / (T·(v + ω) + D·c): the most a row making these calls per token can gain (module docstring).

    v is the cost of one of its target calls (`verify_cost` at its mean block), ω = `overhead`.
    NaN when a count is missing or the row costs nothing in these units (an n-gram drafter alone).
    """
    t, d = target_calls_per_token, drafter_calls_per_token
    if any(x is None or math.isnan(x) for x in (t, d, c, v)):
        return math.nan
    w = max(overhead or 0.0, 0.0)
    per_token = t * (v + w) + d * c
    return (1.0 + w) / per_token if per_token > 0 else math.nan


def expected_tokens_per_call(acceptance: float, gamma: int) -> float:
    """SPEC.md: (1 − a^{γ+1}) / (1 − a) tokens per target call with i.i.d. per-position acceptance a."""
    if acceptance is None or math.isnan(acceptance):
        return math.nan
    a = min(max(acceptance, 0.0), 1.0)
    return gamma + 1.0 if a == 1.0 else (1 - a ** (gamma + 1)) / (1 - a)


def predicted_speedup(acceptance: float, gamma: int, c: float, v: float) -> float:
    """SPEC.md's prediction (1 − a^{γ+1}) / (1 − a) / (γ·c + v): a forecast from a, not a bound on a measured row."""
    return expected_tokens_per_call(acceptance, gamma) / (gamma * c + v)
