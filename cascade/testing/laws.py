"""Law checks through the engine, for cascade's tests and a plugin's (docs/testing.md).

    e = Engine.from_policy(...)                     # sampled: temperature > 0, a small top_k keeps cells full
    p = engine_law_p_value(e, ["def add(a, b):\n"], n=1500)
    assert p > 1e-3                                 # and, under a planted bug (cascade.testing.mutation), < 1e-6

The law of a lossless engine's first two tokens is the target's own, p(y1)·p(y2 | y1) under the engine's
sampling parameters; `engine_law_p_value` decodes the prompts together many times (a seed per draw, so
each row keeps its own stream) and returns the smallest p-value over the rows of a chi-square test of
their two tokens against it.
"""

from __future__ import annotations

from typing import Any

import torch


def law_p_value(counts: dict[tuple[int, ...], int], law: dict[tuple[int, ...], float]) -> float:
    """Chi-square p-value of counted outcomes against a law (cells expecting fewer than 5 pooled); 0 when an
    outcome falls outside the law's support."""
    from scipy.stats import chisquare

    n = sum(counts.values())
    if any(law.get(k, 0.0) <= 0 for k in counts):
        return 0.0
    keys = sorted(law, key=lambda k: -law[k])
    big = [k for k in keys if law[k] * n >= 5]
    rest = [k for k in keys if law[k] * n < 5]
    observed = [counts.get(k, 0) for k in big] + ([sum(counts.get(k, 0) for k in rest)] if rest else [])
    expected = [law[k] * n for k in big] + ([sum(law[k] for k in rest) * n] if rest else [])
    total = sum(expected)
    return float(chisquare(observed, [e * n / total for e in expected]).pvalue)


def target_law(engine: Any, ids: torch.Tensor) -> dict[tuple[int, ...], float]:
    """The target's joint law of the next two tokens after `ids` (1-D) under the engine's sampling parameters."""
    from cascade.verify.sampling import warp

    law: dict[tuple[int, ...], float] = {}
    model = engine.target_model
    with torch.no_grad():
        first = warp(model(input_ids=ids[None]).logits[0, -1], engine.params)
        for a in torch.nonzero(first).flatten().tolist():
            after = torch.cat([ids, torch.tensor([a], device=ids.device)])
            second = warp(model(input_ids=after[None]).logits[0, -1], engine.params)
            for b in torch.nonzero(second).flatten().tolist():
                law[(a, b)] = float(first[a] * second[b])
    return law


def engine_law_p_value(engine: Any, prompts: list[str], n: int) -> float:
    """Decode `prompts` together n times (seeds 0..n-1; the policy's max_new_tokens, at least 2): the smallest
    p-value over the rows of their first two tokens against the target's law for each row's prompt (a
    lossless engine's law)."""
    ids = [engine.encode(p) for p in prompts]
    counts: list[dict[tuple[int, ...], int]] = [{} for _ in prompts]
    for seed in range(n):
        gens = engine.generate([i.tolist() for i in ids], seed=seed, record_decisions=False, batch_size=len(ids))
        for c, g in zip(counts, gens):
            y = tuple(g.token_ids[:2])
            c[y] = c.get(y, 0) + 1
    return min(law_p_value(c, target_law(engine, i)) for c, i in zip(counts, ids))
