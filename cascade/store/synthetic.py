"""Deterministic fake speculative generations: store tests and dashboard demos without a model.

The records follow the engine's conventions (cascade/decode/engine.py): per step, `k` draft rows
(accepted left to right, `deferred` = the rule's r), then one correction (a rejection at
position n) or bonus (all k accepted) row at position n; `emitted` = accepted drafts + 1.
Metrics are accumulated with `Metrics.add_step`, as the engine does. No torch needed.
"""

from __future__ import annotations

import random

from cascade.features import FEATURES, BlockContext
from cascade.metrics import Decision, Generation, Metrics, StepRecord


def speculative_step(
    rng: random.Random,
    index: int,
    block_size: int,
    vocab: int = 320,
    record_decisions: bool = True,
    sequence_position: int = 0,
) -> StepRecord:
    k = block_size
    xs = [rng.randrange(vocab) for _ in range(k)]
    n = rng.randint(0, k)  # accepted drafts
    nxt = rng.randrange(vocab)
    deferred = [rng.random() < 0.3 for _ in range(k)]
    decisions: tuple[Decision, ...] = ()
    context = None
    if record_decisions:
        context = BlockContext(sequence_position, rng.random(), -3 * rng.random() - 1, -rng.random())
        rows = []
        for i, x in enumerate(xs):
            q_max = rng.random()
            p_max = rng.random()
            q_x = q_max * rng.random()
            values = (
                q_x,
                q_max,
                rng.random() * 3,
                q_max * rng.random(),
                float(q_x < q_max and rng.randrange(5)),
                p_max * rng.random(),
                p_max,
                rng.random() * 3,
                rng.random(),
                float(rng.random() < 0.6),
            )
            rows.append(
                Decision(
                    position=i,
                    kind="draft",
                    drafted_token=x,
                    emitted_token=x if i < n else None,
                    accepted=i < n,
                    deferred=deferred[i],
                    **dict(zip(FEATURES, values)),
                )
            )
        rows.append(
            Decision(
                position=n,
                kind="correction" if n < k else "bonus",
                drafted_token=None,
                emitted_token=nxt,
                accepted=None,
                deferred=None,
            )
        )
        decisions = tuple(rows)
    return StepRecord(
        index=index,
        block_size=k,
        drafted=k,
        accepted=n,
        emitted=tuple(xs[:n] + [nxt]),
        deferred=sum(deferred),
        target_calls=1,
        drafter_calls=k,
        draft_seconds=rng.random() * 1e-3,
        verify_seconds=rng.random() * 1e-3,
        decisions=decisions,
        context=context,
    )


def generation(
    seed: int, n_steps: int = 8, block_size: int = 4, prompt_tokens: int = 5, record_decisions: bool = True
) -> Generation:
    """A finished speculative generation of `n_steps` steps with metrics that add up."""
    rng = random.Random(seed)
    metrics = Metrics(num_prompt_tokens=prompt_tokens)
    steps = []
    tokens: list[int] = []
    for i in range(n_steps):
        step = speculative_step(
            rng,
            i,
            rng.randint(1, block_size),
            record_decisions=record_decisions,
            sequence_position=prompt_tokens + len(tokens),
        )
        steps.append(step)
        tokens.extend(step.emitted)
        metrics.add_step(step, verification=True)
        if i == 0:
            metrics.ttft_seconds = step.draft_seconds + step.verify_seconds
        metrics.decode_seconds += step.draft_seconds + step.verify_seconds
    metrics.num_generated_tokens = len(tokens)
    text = " ".join(map(str, tokens))
    return Generation(
        text=text, token_ids=tokens, prompt_tokens=prompt_tokens, finish_reason="length", metrics=metrics, steps=steps
    )
