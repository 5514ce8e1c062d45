"""Deterministic fake speculative generations: store tests and dashboard demos without a model.

The records follow the engine's conventions (cascade/engine.py): per step, `k` draft rows
(accepted left to right, `deferred` = the rule's r), then one correction (a rejection at
position n) or bonus (all k accepted) row at position n; `emitted` = accepted drafts + 1.
Metrics are accumulated with `Metrics.add_step`, as the engine does. No torch needed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from cascade.metrics import Decision, Metrics, StepRecord


@dataclass
class SyntheticGeneration:
    """Has the fields of `cascade.engine.Generation` the store reads (a test keeps them in step)."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str
    metrics: Metrics
    steps: list[StepRecord] = field(default_factory=list)


def speculative_step(rng: random.Random, index: int, block_size: int, vocab: int = 320,
                     record_decisions: bool = True) -> StepRecord:
    k = block_size
    xs = [rng.randrange(vocab) for _ in range(k)]
    n = rng.randint(0, k)  # accepted drafts
    nxt = rng.randrange(vocab)
    deferred = [rng.random() < 0.3 for _ in range(k)]
    decisions: tuple[Decision, ...] = ()
    if record_decisions:
        rows = []
        for i, x in enumerate(xs):
            q_max = rng.random()
            p_max = rng.random()
            rows.append(Decision(i, "draft", x, x if i < n else None, i < n, deferred[i],
                                 q_max * rng.random(), q_max, rng.random() * 3, p_max * rng.random(), p_max,
                                 rng.random() * 3, rng.random()))
        rows.append(Decision(n, "correction" if n < k else "bonus", None, nxt, None, None))
        decisions = tuple(rows)
    return StepRecord(index, k, k, n, tuple(xs[:n] + [nxt]), sum(deferred), 1, k,
                      rng.random() * 1e-3, rng.random() * 1e-3, decisions)


def generation(seed: int, n_steps: int = 8, block_size: int = 4, prompt_tokens: int = 5,
               record_decisions: bool = True) -> SyntheticGeneration:
    """A finished speculative generation of `n_steps` steps with metrics that add up."""
    rng = random.Random(seed)
    metrics = Metrics(num_prompt_tokens=prompt_tokens)
    steps = []
    tokens: list[int] = []
    for i in range(n_steps):
        step = speculative_step(rng, i, rng.randint(1, block_size), record_decisions=record_decisions)
        steps.append(step)
        tokens.extend(step.emitted)
        metrics.add_step(step, verification=True)
        if i == 0:
            metrics.ttft_seconds = step.draft_seconds + step.verify_seconds
        metrics.decode_seconds += step.draft_seconds + step.verify_seconds
    metrics.num_generated_tokens = len(tokens)
    text = " ".join(map(str, tokens))
    return SyntheticGeneration(text, tokens, prompt_tokens, "length", metrics, steps)
