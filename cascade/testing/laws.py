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

from collections.abc import Callable
from typing import Any

import numpy as np
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


def token_law(r: np.ndarray, q: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A position's law when the rule's r is read at the drafted token (a learned head; SPEC.md, "Learned deferral,
    in more detail"): x ~ q is kept where r_x = 0 and judged against p where r_x = 1, a rejection drawing from
    norm(max(0, p − q)). r, q, p: (V,), q and p warped. Returns the law's two parts, (the draft stands, a
    rejection's draw); their sum is

        P(y) = q(y)(1 − r_y) + r_y·min(q(y), p(y)) + (Σ_x r_x·max(0, q(x) − p(x)))·norm(max(0, p − q))(y)
    """
    diff = np.clip(p - q, 0, None)
    rejected = float((r * np.clip(q - p, 0, None)).sum())
    stands = q * (1 - r) + r * np.minimum(q, p)
    return stands, (rejected * diff / diff.sum() if diff.sum() > 0 else np.zeros_like(q))


def _next(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids[None]).logits[0, -1]


def drafted_token_law(
    engine: Any, drafter: Any, ids: torch.Tensor, defers: Callable[[np.ndarray, int], np.ndarray]
) -> dict[tuple[int, ...], float]:
    """The joint law of the next two tokens after `ids` (1-D), decoded from a block's start, under a rule read at
    the drafted token: `defers(q, position)` gives r_y for every token y from the drafter's q at T = 1 (V,) and
    the position in the block. The second token sits at position 1 after a first draft that stood (the next draft,
    or the bonus after a block of one) and at position 0 after a rejection (a new block). `drafter`: its model."""
    from cascade.verify.sampling import warp

    def law(prefix: torch.Tensor, position: int) -> tuple[np.ndarray, np.ndarray]:
        q_logits, p_logits = _next(drafter, prefix), _next(engine.target_model, prefix)
        r = defers(q_logits.double().softmax(-1).numpy(), position)
        q, p = warp(q_logits, engine.params).double().numpy(), warp(p_logits, engine.params).double().numpy()
        return token_law(r, q, p)

    stands, redrawn = law(ids, 0)
    out: dict[tuple[int, ...], float] = {}
    for a in [int(a) for a in np.flatnonzero(stands + redrawn > 0)]:
        after = torch.cat([ids, torch.tensor([a], device=ids.device)])
        second = stands[a] * sum(law(after, 1)) + redrawn[a] * sum(law(after, 0))
        for b in [int(b) for b in np.flatnonzero(second > 0)]:
            out[(a, b)] = float(second[b])
    return out


def target_law(engine: Any, ids: torch.Tensor) -> dict[tuple[int, ...], float]:
    """The target's joint law of the next two tokens after `ids` (1-D) under the engine's sampling parameters."""
    from cascade.verify.sampling import warp

    law: dict[tuple[int, ...], float] = {}
    first = warp(_next(engine.target_model, ids), engine.params).double().numpy()
    for a in [int(a) for a in np.flatnonzero(first > 0)]:
        second = warp(_next(engine.target_model, torch.cat([ids, torch.tensor([a], device=ids.device)])), engine.params)
        for b in [int(b) for b in np.flatnonzero(second.double().numpy() > 0)]:
            law[(a, b)] = float(first[a] * second[b])
    return law


def engine_law_p_value(
    engine: Any, prompts: list[str], n: int, law: Callable[[torch.Tensor], dict[tuple[int, ...], float]] | None = None
) -> float:
    """Decode `prompts` together n times (seeds 0..n-1; the policy's max_new_tokens, at least 2): the smallest
    p-value over the rows of their first two tokens against `law(ids)` for each row's prompt (default: the
    target's, a lossless engine's law)."""
    law = law or (lambda ids: target_law(engine, ids))
    ids = [engine.encode(p) for p in prompts]
    counts: list[dict[tuple[int, ...], int]] = [{} for _ in prompts]
    for seed in range(n):
        gens = engine.generate([i.tolist() for i in ids], seed=seed, record_decisions=False, batch_size=len(ids))
        for c, g in zip(counts, gens):
            y = tuple(g.token_ids[:2])
            c[y] = c.get(y, 0) + 1
    return min(law_p_value(c, law(i)) for c, i in zip(counts, ids))
