"""RowDrafters: the engine's one way of calling a drafter over a batch (its own batch calls, or one
instance per row)."""

import pydantic
import pytest
import torch

from cascade.decode.drafter_rows import RowDrafters
from cascade.decode.engine import Engine
from cascade.drafter import DrafterBase, DraftStep, Feedback
from cascade.errors import CascadeError
from cascade.policy import parse_policy
from cascade.testing import Driver, policy_dict


class Echo(DrafterBase):
    """A single-row drafter: proposes its context's tokens again, from where the draft starts, and records what it
    was told."""

    name, deterministic = "echo", True

    class Options(pydantic.BaseModel):
        pass

    built = 0

    def __init__(self, options=None, ctx=None):
        Echo.built += 1
        self.prompt, self.told, self.asked = None, [], []

    def start(self, prompts):
        (self.prompt,) = prompts
        self.told, self.asked = [], []

    def step(self, ask):
        (context,) = ask.contexts
        self.asked.append(ask.drafted)
        n = context.shape[0] - ask.drafted  # the verified context
        return DraftStep(tokens=context[max(0, n - ask.limits[0]) + ask.drafted :][:1])

    def observe(self, feedbacks):
        self.told += [f.n_accepted for f in feedbacks]


def test_single_row_drafters_get_one_instance_per_row_and_skip_rows_with_nothing_to_do():
    driver = Driver(Echo(), factory=Echo)
    rows = driver.rows
    assert not rows.batched
    prompts = [torch.tensor([1, 2, 3]), torch.tensor([4, 5]), torch.tensor([6])]
    driver.start(prompts)
    assert [d.prompt.tolist() for d in rows.live] == [[1, 2, 3], [4, 5], [6]]
    drafts = driver.draft(prompts, [2, 0, 1])
    assert [d.tokens.tolist() for d in drafts] == [[2, 3], [], [6]] and not drafts[1].asked
    assert [d.asked for d in rows.live] == [[0, 1], [], [0]]  # row 1 asked nothing: never called
    rows.observe([Feedback(n_accepted=1, drafted=2), None, Feedback(n_accepted=0, drafted=1)])
    assert [d.told for d in rows.live] == [[1], [], [0]]
    first, third = rows.live[0], rows.live[2]
    rows.keep([2, 0])  # row 1 finished
    assert rows.live == [third, first]
    rows.start(prompts[:2])  # a smaller batch reuses the instances built
    assert len(rows.pool) == 3


def test_without_a_factory_a_single_row_drafter_refuses_a_batch_clearly():
    rows = RowDrafters(Echo(), None, "echo")
    rows.start([torch.tensor([1])])  # one row: fine
    with pytest.raises(CascadeError, match="drafter 'echo'.*Engine.from_policy"):
        rows.start([torch.tensor([1]), torch.tensor([2])])


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
    assert e.drafter.batched and e.drafters.batched


class Counting(Echo):
    """Echo drafting every row in one call: counts the calls it gets."""

    batched = True

    def __init__(self, options=None, ctx=None):
        super().__init__(options, ctx)
        self.rounds, self.observed = [], []

    def start(self, prompts):
        pass

    def step(self, ask):
        self.rounds.append((list(ask.rows), ask.drafted, list(ask.limits)))
        return DraftStep(tokens=torch.stack([c[-1] for c in ask.contexts]))

    def observe(self, feedbacks):
        self.observed.append([None if f is None else f.n_accepted for f in feedbacks])


def test_a_batched_drafter_is_not_called_in_a_step_where_no_row_asks():
    d = Counting()
    driver = Driver(d)
    assert driver.rows.batched
    prompts = [torch.tensor([1, 2, 3]), torch.tensor([4, 5])]
    driver.start(prompts)
    assert [x.tokens.tolist() for x in driver.draft(prompts, [0, 0])] == [[], []]
    driver.observe([None, None])
    assert d.rounds == [] and d.observed == []
    drafts = driver.draft(prompts, [2, 0])  # one row asks: the other is not in any round
    assert d.rounds == [([0], 0, [2]), ([0], 1, [2])] and drafts[0].tokens.tolist() == [3, 3]
    driver.observe([Feedback(n_accepted=1, drafted=2), None])
    assert d.observed == [[1, None]]


def test_a_round_must_answer_every_asked_row_with_logits_or_tokens():
    from cascade.errors import PluginError

    class Bad(Counting):
        def step(self, ask):
            return DraftStep()

    driver = Driver(Bad())
    driver.start([torch.tensor([1, 2])])
    with pytest.raises(PluginError, match="neither logits and tokens"):
        driver.draft([torch.tensor([1, 2])], [1])

    class Short(Counting):
        def step(self, ask):
            return DraftStep(tokens=torch.tensor([1, 1, 1]))

    driver = Driver(Short())
    driver.start([torch.tensor([1, 2])])
    with pytest.raises(PluginError, match="answered 3 rows of a round asking 1"):
        driver.draft([torch.tensor([1, 2])], [1])
