"""SPEC.md's cost model, measured on the models at hand.

With acceptance a, block γ, drafter step cost c and verification cost v (both relative
to one target step), tokens per target call are (1 − a^{γ+1}) / (1 − a) and the
speed-up over target-only is at most that over (γ·c + v).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch

from cascade import models


def _median_time(fn: Callable[[], None], device, trials: int) -> float:
    times = []
    for _ in range(trials):
        models.sync(device)
        t0 = time.perf_counter()
        fn()
        models.sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.inference_mode()
def step_costs(target_model, drafter_model, prompt_ids: list[int], gamma: int, trials: int = 7) -> dict[str, float]:
    """SPEC.md's c (one drafter step / one target step) and v (verifying γ+1 tokens / one target step).

    Measured with the engine's own cached forward (`models.CachedLM`) after a prefill on a real
    prompt: one-token steps of each model, and one (γ+1)-token step of the target, each rolled
    back after timing; the median of `trials`. A model-free drafter (n-gram lookup) has c = 0.
    """
    target = models.CachedLM(target_model)
    device = target.device
    ids = torch.tensor(prompt_ids, dtype=torch.long, device=device)
    target.reset()
    target.forward(ids[:-1], last_only=True)
    base = target.length

    def target_step(n: int) -> Callable[[], None]:
        def go():
            target.forward(ids[-1:].repeat(n))
            target.rollback(base)
        return go

    target_step(1)()  # warm
    t1 = _median_time(target_step(1), device, trials)
    tv = _median_time(target_step(gamma + 1), device, trials)
    out = {"target_step_seconds": t1, "verify_seconds": tv, "v": tv / t1, "c": 0.0, "drafter_step_seconds": 0.0}
    if drafter_model is not None:
        drafter = models.CachedLM(drafter_model)
        drafter.reset()
        drafter.forward(ids[:-1], last_only=True)
        dbase = drafter.length

        def drafter_step():
            drafter.forward(ids[-1:])
            drafter.rollback(dbase)

        drafter_step()
        td = _median_time(drafter_step, device, trials)
        out.update(drafter_step_seconds=td, c=td / t1)
    return out


def speedup_ceiling(acceptance: float, gamma: int, c: float, v: float) -> dict[str, float]:
    """Expected tokens per target call (1 − a^{γ+1}) / (1 − a) and the speed-up it allows, (γ·c + v)."""
    if acceptance is None or math.isnan(acceptance):
        return {"tokens_per_call": math.nan, "speedup_ceiling": math.nan}
    a = min(max(acceptance, 0.0), 1.0)
    per_call = gamma + 1.0 if a == 1.0 else (1 - a ** (gamma + 1)) / (1 - a)
    return {"tokens_per_call": per_call, "speedup_ceiling": per_call / (gamma * c + v)}


