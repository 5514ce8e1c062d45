"""A running batch (cascade.decode.batch): rows join between steps and leave when done or cancelled, and every row
decodes exactly what it decodes alone."""

import pytest
from test_batch import PROMPTS  # different lengths, one of a single token

from cascade.decode.engine import Engine
from cascade.errors import CascadeError
from cascade.policy import parse_policy
from cascade.testing import arch_params, policy_dict


def engine(**kw) -> Engine:
    return Engine.from_policy(parse_policy(policy_dict(**kw)))


def staggered(e: Engine, joins: dict[int, list[int]], cancel: dict[int, int] | None = None, **row) -> dict:
    """Drive a running batch: before step s, the rows in joins[s] join (and cancel[s] is cancelled); the token ids
    and finish reason of every row, and the largest number of rows that were live together."""
    batch = e.running_batch()
    out, step, widest, joined_live = {}, 0, 0, False
    while batch or any(s >= step for s in joins):
        if step in joins:
            joined_live |= bool(batch.live)
            batch.join([e.request_row(i, PROMPTS[i], **row) for i in joins[step]])
        if cancel and step in cancel:
            batch.cancel(cancel[step])
        for r, g in batch.step():
            out[r.index] = (g.token_ids, g.finish_reason)
        widest = max(widest, len(batch.live))
        step += 1
    return {"rows": out, "widest": widest, "joined_live": joined_live}


def alone(e: Engine, i: int, **kw) -> list[int]:
    return e.generate(PROMPTS[i], **kw).token_ids


JOINS = {0: [0], 2: [1, 2], 3: [3], 9: [4]}  # rows join while others decode; the last after several have left


@pytest.mark.parametrize("arch", arch_params())
def test_rows_joining_a_running_batch_decode_what_they_decode_alone(family, arch):
    f = family(arch)
    for kw in (
        {"mode": "target"},
        {"drafter": f["near"]},
        {"drafter": f["near"], "rule": "token_v3", "alpha": 0.3, "block_size": 3},
        {"plugin": "ngram", "block_size": 4},
        {"drafter": f["near"], "mode": "drafter"},
        {"drafter": f["near"], "mode": "lossy", "lenience": 0.5},
    ):
        e = engine(target=f["target"], max_new_tokens=16, **kw)
        run = staggered(e, JOINS)
        assert run["joined_live"] and run["widest"] >= 3, kw  # rows were admitted into a batch that was decoding
        assert {i: ids for i, (ids, _) in run["rows"].items()} == {i: alone(e, i) for i in range(5)}, kw


def test_a_shared_schedule_takes_joining_rows_and_greedy_stays_exact(family):
    f = family("gpt2")
    e = engine(target=f["target"], plugin="ngram", schedule="bass", block_size=2, max_block_size=6)
    run = staggered(e, JOINS)
    target = engine(target=f["target"], mode="target")
    assert {i: ids for i, (ids, _) in run["rows"].items()} == {i: alone(target, i) for i in range(5)}


def test_sampled_rows_keep_their_own_streams_when_joining(family):
    f = family("gpt2")
    e = engine(
        target=f["target"], drafter=f["near"], rule="token_v3", alpha=0.3, temperature=1.0, top_k=8, ignore_eos=True
    )
    for seed in (0, 1):
        run = staggered(e, JOINS, seed=seed)
        assert {i: ids for i, (ids, _) in run["rows"].items()} == {i: alone(e, i, seed=seed) for i in range(5)}


def test_a_cancelled_row_leaves_and_the_others_go_on(family):
    f = family("gpt2")
    e = engine(target=f["target"], drafter=f["near"], max_new_tokens=24, ignore_eos=True)
    run = staggered(e, {0: [0, 1, 3]}, cancel={2: 1})
    ids, reason = run["rows"][1]
    assert reason == "abort" and 0 < len(ids) < 24
    for i in (0, 3):
        assert run["rows"][i] == (alone(e, i), "length")
    waiting = e.running_batch()  # cancelled before it was ever admitted
    waiting.join([e.request_row(7, PROMPTS[0])])
    waiting.cancel(7)
    ((row, g),) = waiting.step()
    assert (row.index, g.finish_reason, g.token_ids, bool(waiting)) == (7, "abort", [], False)


def test_eagle_like_per_row_drafters_and_features_join(family):
    """A drafter used one instance per row (not batched) joins through new instances."""
    from cascade.drafter import DrafterBase, DraftStep

    class Echo(DrafterBase):  # proposes the last token again: deterministic, one row per instance
        name, deterministic = "echo", True

        def step(self, ask):
            import torch

            return DraftStep(tokens=torch.stack([c[-1] for c in ask.contexts]))

    from cascade.decode.drafter_rows import RowDrafters

    rows = RowDrafters(Echo(), Echo, "echo")
    import torch

    rows.start([torch.tensor([1, 2])])
    rows.join([torch.tensor([3]), torch.tensor([4, 5])])
    assert len(rows.live) == 3 and len({id(d) for d in rows.live}) == 3 and rows.joins_rows


def test_sequential_mode_takes_no_joining_rows(family):
    f = family("gpt2")
    e = engine(target=f["target"], drafter=f["near"], mode="sequential", rule="chow", alpha=0.5)
    assert not e.joins_rows
    batch = e.running_batch()
    batch.join([e.request_row(0, PROMPTS[0])])
    batch.step()
    batch.join([e.request_row(1, PROMPTS[1])])
    with pytest.raises(CascadeError, match="sequential"):
        batch.step()


def test_request_rows_are_checked_like_prompts(family):
    f = family("gpt2")
    e = engine(target=f["target"], mode="target")
    with pytest.raises(CascadeError, match="empty prompt"):
        e.request_row(0, "")
    with pytest.raises(CascadeError, match="max_new_tokens must be at least 1"):
        e.request_row(0, "x", max_new_tokens=0)


def test_a_request_brings_its_own_sampling_alpha_and_stop_strings(family):
    """Rows of one batch at different temperatures, α and stop strings: each decodes what an engine built for its
    own settings decodes alone."""
    from cascade.decode.build import build_rule
    from cascade.verify.sampling import SamplingParams

    f = family("gpt2")
    base = dict(target=f["target"], drafter=f["near"], rule="token_v3", block_size=3, ignore_eos=True)
    e = engine(**base, alpha=0.3)
    own = [
        ({}, {}),
        ({"params": SamplingParams(1.0, 8, 1.0)}, {"temperature": 1.0, "top_k": 8}),
        ({"rule": build_rule(parse_policy(policy_dict(**base, alpha=0.8)))}, {"alpha": 0.8}),
        ({"stop": ["\n"]}, {"stop": ["\n"]}),
    ]
    batch = e.running_batch()
    batch.join([e.request_row(i, PROMPTS[i], seed=3, **kw) for i, (kw, _) in enumerate(own)])
    out = {}
    while batch:
        out.update({r.index: g for r, g in batch.step()})
    for i, (_, settings) in enumerate(own):
        alone_ = engine(**{**base, "alpha": 0.3, **settings}).generate(PROMPTS[i], seed=3)
        assert (out[i].token_ids, out[i].text) == (alone_.token_ids, alone_.text), settings
    chow = build_rule(parse_policy(policy_dict(**{**base, "rule": "chow"}, alpha=0.5)))
    e.request_row(0, "x", rule=chow)  # a cascade's row may defer by another cascade rule
    lossless = engine(**{**base, "rule": "none", "alpha": 0.0})
    with pytest.raises(CascadeError, match="cascade draws its bonus token from the drafter's q"):
        lossless.request_row(0, "x", rule=chow)
    with pytest.raises(CascadeError, match="speculation can be switched off only"):
        e.request_row(0, "x", speculate=False)
    assert lossless.request_row(0, "x", speculate=False).schedule.plan(5).k == 0
