"""cascade.decode.drafting: the one owner of a draft's length and draws (round by round, the schedule's stop rule
before every draw, q_{k+1} for a cascade's bonus, the drafter's own context limit, trees in one call)."""

from __future__ import annotations

import pytest
import torch

from cascade.decode.drafter_rows import RowDrafters
from cascade.decode.drafting import Drafting
from cascade.drafter import DrafterBase, DraftStep, TreeDraft
from cascade.errors import CascadeError
from cascade.schedules.base import DraftPlan
from cascade.testing import Driver
from cascade.verify.sampling import SamplingParams

V = 8


class Counter(DrafterBase):
    """A batched model-like drafter: the logits of row b at round j put all mass on token (b + j) % V; it counts
    the rounds it answers per row."""

    name, batched = "counter", True

    def __init__(self):
        self.asked: list[tuple[list[int], int]] = []

    def step(self, ask):
        self.asked.append((list(ask.rows), ask.drafted))
        logits = torch.full((len(ask.rows), V), -1e4)
        for i, b in enumerate(ask.rows):
            logits[i, (b + ask.drafted) % V] = 0.0
        return DraftStep(logits=logits)


def draft(drafter, ks, plans=None, lookahead=False, n=3, max_positions=None):
    drafter.max_positions = max_positions
    driver = Driver(drafter, SamplingParams(), lookahead=lookahead)
    prompts = [torch.arange(n) for _ in ks]
    driver.start(prompts)
    return driver.draft(prompts, ks, plans)


def test_each_row_draws_up_to_its_k_and_a_cascade_gets_q_at_k_plus_1():
    d = Counter()
    out = draft(d, [2, 0, 3])
    assert [x.tokens.tolist() for x in out] == [[0, 1], [], [2, 3, 4]]
    assert [x.calls for x in out] == [2, 0, 3] and [x.asked for x in out] == [True, False, True]
    assert d.asked == [([0, 2], 0), ([0, 2], 1), ([2], 2)]  # row 1 never asked; row 0 leaves after its k
    assert all(x.next_probs is None for x in out)
    d = Counter()
    out = draft(d, [2, 0], lookahead=True)  # one more round per row for q_{k+1}, its token never drawn
    assert [x.tokens.tolist() for x in out] == [[0, 1], []]
    assert out[0].next_probs.argmax() == 2 and out[1].next_probs.argmax() == 1 and [x.calls for x in out] == [3, 1]


def test_a_stop_rule_is_asked_before_each_draw_and_rows_sharing_it_are_judged_together():
    seen = []

    def shared(rows):  # stop every row once any row holds two confidences
        seen.append([list(c) for c in rows])
        return [max(len(c) for c in rows) > 2] * len(rows)

    out = draft(Counter(), [4, 4], [DraftPlan(4, shared)] * 2)
    assert [x.tokens.tolist() for x in out] == [[0, 1], [1, 2]]
    assert [len(c) for c in seen[-1]] == [3, 3]  # the third draw was judged on both rows' confidences
    assert all(abs(c - 1.0) < 1e-6 for c in seen[0][0])  # the default confidence: q's top probability
    own = [DraftPlan(4, lambda rows: [len(rows[0]) > 1]), DraftPlan(4, lambda rows: [len(rows[0]) > 3])]
    assert [x.tokens.shape[0] for x in draft(Counter(), [4, 4], own)] == [1, 3]  # each row its own rule


def test_a_stopped_row_keeps_the_q_it_did_not_draw_from_as_q_k_plus_1():
    out = draft(Counter(), [4], [DraftPlan(4, lambda rows: [len(rows[0]) > 2])], lookahead=True)
    assert out[0].tokens.tolist() == [0, 1] and out[0].next_probs.argmax() == 2 and out[0].calls == 3


def test_the_drafters_own_context_bounds_the_draft():
    out = draft(Counter(), [4, 4], n=5, max_positions=8)  # 5 + k + 1 <= 8
    assert [x.tokens.shape[0] for x in out] == [2, 2]
    assert draft(Counter(), [4], n=7, max_positions=8)[0].asked is False  # no room: not asked at all


class Deterministic(DrafterBase):
    name, deterministic, batched = "det", True, True

    def step(self, ask):  # row b has b + 1 tokens to offer
        return DraftStep(tokens=torch.tensor([7 if ask.drafted <= b else -1 for b in ask.rows]))


def test_a_deterministic_drafter_ends_a_row_with_minus_one_and_never_gets_a_lookahead_round():
    out = draft(Deterministic(), [3, 3, 3], lookahead=True)
    assert [x.tokens.tolist() for x in out] == [[7], [7, 7], [7, 7, 7]]
    assert all(x.probs is None and x.next_probs is None for x in out)


class Trees(DrafterBase):
    name, deterministic, batched, proposes_trees = "trees", True, True, True

    def propose_trees(self, ask):
        return [TreeDraft(torch.tensor([1, 2, 3][:k]), torch.tensor([-1, -1, 0][:k])) for k in ask.budgets]


def test_trees_come_in_one_call_within_the_budget_and_refuse_stop_rules():
    out = draft(Trees(), [3, 2])
    assert [x.parents.tolist() for x in out] == [[-1, -1, 0], [-1, -1]] and out[0].calls == 1
    with pytest.raises(CascadeError, match="cuts chains by confidence"):
        draft(Trees(), [3], [DraftPlan(3, lambda rows: [False])])


def test_nothing_asked_calls_no_drafter():
    d = Counter()
    drafting = Drafting(RowDrafters(d, None, "counter"), SamplingParams(), False, False, False, None, None, "c", "k")
    args = [torch.arange(3)], [torch.zeros(10, dtype=torch.long)], [None], [SamplingParams()], [DraftPlan(0)], [0]
    out = drafting.draw(*args, [None])
    assert out[0].tokens.tolist() == [] and not out[0].asked and d.asked == []
