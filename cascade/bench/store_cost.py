"""What logging every decision costs: the same engine and prompts, with and without the store.

Passes alternate (no store, store, no store, ...) in one process so drifting machine
load hits both sides alike; the figure is the ratio of median pass times. The logged
side does exactly what `cascade run` does: per-decision records, the batched writer,
one run per pass.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class StoreCost:
    policy: str
    store: str  # masked URL
    passes: int
    prompts: int
    tokens_per_pass: int
    seconds_without: float  # median pass time, --no-store
    seconds_with: float  # median pass time, logging to the store
    overhead: float  # seconds_with / seconds_without - 1

    def summary(self) -> str:
        return (
            f"logging cost for {self.policy} on {self.store}: {100 * self.overhead:+.2f}% decode time "
            f"(median of {self.passes} alternating passes over {self.prompts} prompts, "
            f"{self.tokens_per_pass} tokens per pass: {self.seconds_without:.3f}s without, "
            f"{self.seconds_with:.3f}s with)"
        )


def measure(engine, store, prompts: list[str], passes: int = 5, max_new_tokens: int | None = None) -> StoreCost:
    from cascade.store import engine_info

    def plain() -> tuple[float, int]:
        t0, n = time.perf_counter(), 0
        for p in prompts:
            n += engine.generate(p, max_new_tokens=max_new_tokens, record_decisions=False).metrics.num_generated_tokens
        return time.perf_counter() - t0, n

    def logged() -> tuple[float, int]:
        t0, n = time.perf_counter(), 0
        with store.start_run(engine.policy, engine_info(engine)) as run:
            for p in prompts:
                seq = run.start_sequence(p)
                gen = engine.generate(p, max_new_tokens=max_new_tokens, on_step=run.step_logger(seq))
                run.end_sequence(seq, gen)
                n += gen.metrics.num_generated_tokens
        return time.perf_counter() - t0, n

    plain()  # warm-up: caches, allocator, the store's first connection
    logged()
    without, with_store = [], []
    tokens = 0
    for _ in range(passes):
        t, tokens = plain()
        without.append(t)
        with_store.append(logged()[0])
    a, b = statistics.median(without), statistics.median(with_store)
    return StoreCost(engine.policy.name, store.url, passes, len(prompts), tokens, a, b, b / a - 1)
