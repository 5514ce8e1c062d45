"""The learned rule through the engine, against its law, with power (docs/testing.md).

A learned head's r is read at the drafted token (its features are that token's q(x), p(x), rank, position, ...),
so a position's law is not one π but SPEC.md's law of a rule read at the drafted token
(`cascade.testing.laws.token_law`). The head here is written by hand so the law can be computed: a logistic
head on q(x) and the position in the block that defers a drafted token when q(x) ≤ τ_position. τ_0 sits
between the drafter's two most likely first tokens, τ_1 between its two most likely tokens after each of those,
so at each position one candidate is kept and the other judged against the target. Sampled at T = 1 with top-k 2,
the first two tokens' joint law is checked; at block size 1 the second token is the bonus after a kept draft.
"""

from __future__ import annotations

import pytest
import torch
from learned_support import make_policy

from cascade.testing.laws import drafted_token_law, engine_law_p_value
from cascade.testing.mutation import BY_NAME, Mutant, applied

PROMPT = "def add(a, b):\n"
PASS, REJECT = 1e-3, 1e-6
STEEP = 400.0  # the head's slope: σ(STEEP·(τ − q(x))) ≥ 1/2 exactly when q(x) ≤ τ

SCORE_INVERTED = Mutant(
    "learned-score-inverted",
    "cascade_learned.rule",
    's = prob if self.head.kind == "deferral" else 1.0 - prob',
    's = 1.0 - prob if self.head.kind == "deferral" else prob',
    "a deferral head's probability read as an acceptance head's (defers the drafts it should keep)",
)


def write_q_head(folder, taus: tuple[float, float]):
    """A deferral head that defers a drafted token x at block position j when q(x) ≤ τ_0 + (τ_1 − τ_0)·j."""
    from cascade_learned.artefact import LogisticParams, write_head

    t0, t1 = taus
    card = {"head": "deferral", "features": ["q_x", "position"], "model": "logistic", "label": "bad"}
    write_head(folder, card, LogisticParams((-STEEP, STEEP * (t1 - t0)), STEEP * t0, (0.5, 0.0)))
    return folder


def defers(taus: tuple[float, float]):
    return lambda q, position: (q <= taus[0] + (taus[1] - taus[0]) * position).astype(float)


@pytest.fixture(scope="module")
def learned_engines(fam, tmp_path_factory):
    """(engine at block size 3, engine at block size 1, the drafter model, τ)."""
    from transformers import AutoModelForCausalLM

    from cascade.decode.engine import Engine

    root = tmp_path_factory.mktemp("learned-law")
    drafter = AutoModelForCausalLM.from_pretrained(fam["near"])
    ids = Engine.from_policy(make_policy(root / "probe.yaml", fam)).encode(PROMPT)
    tau = splitting_thresholds(drafter, ids)
    head = write_q_head(root / "head", tau)
    engines = []
    for block in (3, 1):
        policy = make_policy(
            root / f"learned-{block}.yaml",
            fam,
            rule="learned",
            alpha=0.5,
            rule_options={"path": str(head)},
            block_size=block,
            temperature=1.0,
            top_k=2,
            max_new_tokens=3,
            ignore_eos=True,
        )
        engines.append(Engine.from_policy(policy))
    return engines[0], engines[1], drafter, tau


def splitting_thresholds(drafter, ids: torch.Tensor) -> tuple[float, float]:
    """(τ_0, τ_1): τ_0 between the drafter's two largest probabilities after the prompt, τ_1 between them after as
    many as one τ can of the prompt followed by each of its two most likely tokens (top-k 2)."""

    def span(prefix: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            first, second = drafter(input_ids=prefix[None]).logits[0, -1].softmax(-1).topk(2).values.tolist()
        return second, first

    def splitting(spans: list[tuple[float, float]]) -> float:
        ends = sorted(v for s in spans for v in s)
        return max(((a + b) / 2 for a, b in zip(ends, ends[1:])), key=lambda t: sum(lo < t < hi for lo, hi in spans))

    with torch.no_grad():
        firsts = drafter(input_ids=ids[None]).logits[0, -1].topk(2).indices.tolist()
    return splitting([span(ids)]), splitting([span(torch.cat([ids, torch.tensor([a])])) for a in firsts])


def _check(engine, drafter, tau: tuple[float, float], n: int = 1500) -> float:
    law = lambda ids: drafted_token_law(engine, drafter, ids, defers(tau))  # noqa: E731
    return engine_law_p_value(engine, [PROMPT], n, law)


@pytest.mark.slow
@pytest.mark.parametrize("block", [3, 1])
def test_the_learned_rule_follows_its_law(learned_engines, block):
    long, short, drafter, tau = learned_engines
    assert _check(long if block == 3 else short, drafter, tau) > PASS


@pytest.mark.slow
@pytest.mark.parametrize(
    "mutant,block",
    [
        (SCORE_INVERTED, 3),
        (BY_NAME["feature-rule-reads-the-argmax"], 3),
        (BY_NAME["feature-rule-bonus-at-the-argmax"], 1),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_the_learned_law_check_rejects_planted_bugs(learned_engines, mutant, block):
    long, short, drafter, tau = learned_engines
    with applied(mutant):
        p = _check(long if block == 3 else short, drafter, tau)
    assert p < REJECT, (mutant.name, p)
