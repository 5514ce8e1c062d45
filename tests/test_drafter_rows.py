"""RowDrafters: the engine's one way of calling a drafter over a batch (its own batch methods, or one
instance per row)."""

import pydantic
import pytest
import torch

from cascade.drafter import Draft, DraftRequest, Feedback
from cascade.drafter_rows import EMPTY_DRAFT, RowDrafters, batches_natively
from cascade.engine import Engine
from cascade.errors import CascadeError
from cascade.policy import parse_policy
from cascade.testing import policy_dict


class Echo:
    """A single-row drafter: proposes the last k tokens of its context again, and records what it was told."""

    name, deterministic = "echo", True

    class Options(pydantic.BaseModel):
        pass

    built = 0

    def __init__(self, options=None, ctx=None):
        Echo.built += 1
        self.prompt, self.told = None, []

    def reset(self, prompt_ids, params, generator):
        self.prompt, self.told = prompt_ids, []

    def propose(self, context, request):
        return Draft(context[-request.k:] if request.k else context[:0])

    def observe(self, feedback):
        self.told.append(feedback.n_accepted)


def test_single_row_drafters_get_one_instance_per_row_and_skip_rows_with_nothing_to_do():
    rows = RowDrafters(Echo(), Echo, "echo")
    assert not rows.native
    prompts = [torch.tensor([1, 2, 3]), torch.tensor([4, 5]), torch.tensor([6])]
    rows.reset(prompts, None, [None] * 3)
    assert [d.prompt.tolist() for d in rows.live] == [[1, 2, 3], [4, 5], [6]]
    drafts = rows.propose(prompts, [DraftRequest(k=2), None, DraftRequest(k=1)])
    assert [d.tokens.tolist() for d in drafts] == [[2, 3], [], [6]] and drafts[1] is EMPTY_DRAFT
    rows.observe([Feedback(n_accepted=1), None, Feedback(n_accepted=0)])
    assert [d.told for d in rows.live] == [[1], [], [0]]
    first, third = rows.live[0], rows.live[2]
    rows.keep([2, 0])  # row 1 finished
    assert rows.live == [third, first]
    rows.reset(prompts[:2], None, [None] * 2)  # a smaller batch reuses the instances built
    assert len(rows.pool) == 3


def test_without_a_factory_a_single_row_drafter_refuses_a_batch_clearly():
    rows = RowDrafters(Echo(), None, "echo")
    rows.reset([torch.tensor([1])], None, [None])  # one row: fine
    with pytest.raises(CascadeError, match="drafter 'echo'.*Engine.from_policy"):
        rows.reset([torch.tensor([1]), torch.tensor([2])], None, [None] * 2)


def test_a_third_party_single_row_drafter_batches_through_the_engine(family):
    import types

    from cascade.hookspecs import hookimpl
    from cascade.plugins import build_registry

    module = types.ModuleType("echo-plugin")
    module.register_drafters = hookimpl(lambda register: register("echo", Echo))
    reg = build_registry(extra=[("echo-plugin", module)])
    f = family("gpt2")
    policy = parse_policy(policy_dict(target=f["target"], plugin="echo", block_size=2))
    e = Engine.from_policy(policy, registry=reg)
    prompts = ["def f(x):\n    return x\n", "import os\n", "a = 1\nb = 2\n"]
    alone = [e.generate(p).token_ids for p in prompts]
    Echo.built = 0
    assert [g.token_ids for g in e.generate(prompts, batch_size=3)] == alone
    assert Echo.built == 2  # the engine's first instance serves row 0; two more were built


def test_the_hf_model_drafter_batches_natively(family):
    f = family("gpt2")
    e = Engine.from_policy(parse_policy(policy_dict(target=f["target"], drafter=f["near"])))
    assert batches_natively(e.drafter) and e.drafters.native


class Counting(Echo):
    """Echo with the batch methods: counts the calls it gets."""

    def __init__(self, options=None, ctx=None):
        super().__init__(options, ctx)
        self.proposed, self.observed = [], []

    def reset_rows(self, prompts, params, generators):
        pass

    def propose_rows(self, contexts, requests):
        self.proposed.append([r.k for r in requests])
        return [self.propose(c, r) for c, r in zip(contexts, requests)]

    def observe_rows(self, feedbacks):
        self.observed.append([f.n_accepted for f in feedbacks])

    def keep_rows(self, rows):
        pass


def test_a_native_drafter_is_not_called_in_a_step_where_no_row_asks():
    d = Counting()
    rows = RowDrafters(d, None, "counting")
    assert rows.native
    prompts = [torch.tensor([1, 2, 3]), torch.tensor([4, 5])]
    rows.reset(prompts, None, [None] * 2)
    assert rows.propose(prompts, [None, None]) == [EMPTY_DRAFT, EMPTY_DRAFT]
    rows.observe([None, None])
    assert d.proposed == [] and d.observed == []
    drafts = rows.propose(prompts, [DraftRequest(k=1), None])  # one row asks: the other gets k = 0
    assert d.proposed == [[1, 0]] and drafts[1] is EMPTY_DRAFT
    rows.observe([Feedback(n_accepted=1), None])
    assert d.observed == [[1, 0]]
