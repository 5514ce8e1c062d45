"""Batched decoding (SPEC.md "Batched decoding"): every row behaves exactly as it would alone."""

import pytest
import torch

from cascade.decode.engine import Engine
from cascade.errors import CascadeError, PolicyError
from cascade.policy import parse_policy
from cascade.rules import BUILTIN_RULES
from cascade.testing import arch_params, assert_first_tokens_follow, policy_dict
from cascade.verify import sampling as S

PROMPTS = [  # different lengths, one of a single token
    "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self",
    "import os\n",
    "x",
    "for i in range(10):\n    print(i)\n",
    "class A:\n    pass\n\nclass B(A):\n",
]


def engine(**kw) -> Engine:
    return Engine.from_policy(parse_policy(policy_dict(**kw)))


def alone(e: Engine, prompts, **kw) -> list[list[int]]:
    return [e.generate(p, **kw).token_ids for p in prompts]


def batched(e: Engine, prompts, b: int, **kw) -> list[list[int]]:
    return [g.token_ids for g in e.generate(list(prompts), batch_size=b, **kw)]


@pytest.mark.parametrize("arch", arch_params())
def test_lossless_greedy_rows_equal_target_only_for_both_drafters_and_block_sizes(family, arch):
    f = family(arch)
    reference = alone(engine(target=f["target"], mode="target"), PROMPTS)
    assert batched(engine(target=f["target"], mode="target"), PROMPTS, 5) == reference  # batched target-only
    for k in range(1, 7):
        for b in (2, 5):
            assert batched(engine(target=f["target"], drafter=f["near"], block_size=k), PROMPTS, b) == reference, (
                "hf-model",
                k,
                b,
            )
            assert batched(engine(target=f["target"], plugin="ngram", block_size=k), PROMPTS, b) == reference, (
                "ngram",
                k,
                b,
            )


@pytest.mark.parametrize("rule", sorted(set(BUILTIN_RULES) - {"none"}))
def test_every_rule_batched_equals_alone(family, rule):
    f = family("gpt2")
    lo, hi = BUILTIN_RULES[rule].alpha_range
    alpha = 0.3 if lo <= 0.3 <= hi else (lo + hi) / 2
    for k, b in ((1, 5), (3, 2), (6, 5)):
        e = engine(target=f["target"], drafter=f["near"], rule=rule, alpha=alpha, block_size=k)
        assert batched(e, PROMPTS, b) == alone(e, PROMPTS), (k, b)
    try:
        e = engine(target=f["target"], plugin="ngram", rule=rule, alpha=alpha, block_size=4)
    except PolicyError:
        return  # a rule that reads q: refused for a deterministic drafter
    assert batched(e, PROMPTS, 5) == alone(e, PROMPTS)


@pytest.mark.parametrize("mode", ["lossy", "drafter", "target"])
def test_other_modes_batched_equal_alone(family, mode):
    f = family("llama")
    e = engine(target=f["target"], drafter=f["near"], mode=mode, lenience=0.5)
    assert batched(e, PROMPTS, 5) == alone(e, PROMPTS)


def test_sampling_rows_use_their_own_streams(family):
    """Under sampling a row draws exactly what it draws alone with the same seed: batch-mates change nothing."""
    f = family("gpt2")
    e = engine(
        target=f["target"],
        drafter=f["near"],
        rule="token_v3",
        alpha=0.3,
        temperature=1.0,
        top_k=8,
        block_size=3,
        ignore_eos=True,
    )
    for seed in range(3):
        assert batched(e, PROMPTS, 5, seed=seed) == alone(e, PROMPTS, seed=seed)
    assert batched(e, PROMPTS, 5, seed=0) != batched(e, PROMPTS, 5, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("rule,alpha", [("none", 0.0), ("token_v3", 0.5)])
def test_sampling_batched_rows_match_pi(family, rule, alpha):
    """First token of a batched row (beside a batch-mate): histogram vs π computed from the models."""
    f = family("gpt2")
    e = engine(
        target=f["target"],
        drafter=f["near"],
        rule=rule,
        alpha=alpha,
        temperature=1.0,
        top_k=4,
        block_size=2,
        max_new_tokens=2,
        ignore_eos=True,
    )
    ids = e.encode(PROMPTS[1])
    with torch.no_grad():
        p_logits = e.target.model(input_ids=ids[None]).logits[0, -1]
        q_logits = e.drafter.runtime.model(input_ids=ids[None]).logits[0, -1]
    r = e.rule.defer(S.softmax(q_logits)[None], S.softmax(p_logits)[None])
    pi = S.mixture(r, S.warp(q_logits, e.params)[None], S.warp(p_logits, e.params)[None])[0]
    assert_first_tokens_follow(
        lambda seed: e.generate([PROMPTS[0], PROMPTS[1]], seed=seed, batch_size=2, record_decisions=False)[1].token_ids[
            0
        ],
        pi,
        800,
    )


def test_rows_finishing_early_do_not_change_the_others(family):
    f = family("qwen2")
    kw = dict(target=f["target"], drafter=f["near"], block_size=4, max_new_tokens=30)
    full = alone(engine(ignore_eos=True, **kw), PROMPTS)
    # EOS: the first token of row 2's output ends row 2 at once; rows whose output lacks it run on
    eos = full[2][0]
    e = engine(**kw)
    e.stopper.eos_id = eos
    expected = [t[: t.index(eos) + 1] if eos in t else t for t in full]
    got = e.generate(PROMPTS, batch_size=5)
    assert [g.token_ids for g in got] == expected
    assert got[2].finish_reason == "eos" and len(got[2].token_ids) == 1
    # a stop string cut from one row's text; the budget: a long prompt near the context's end
    stop_e = engine(ignore_eos=True, stop=[e.tokenizer.decode(full[0])[5:8]], **kw)
    long_prompt = list(range(1, 240))  # 239 of 256 positions: 17 tokens of budget
    prompts = PROMPTS + [long_prompt]
    got = stop_e.generate(prompts, batch_size=6)
    assert [g.token_ids for g in got] == [stop_e.generate(p).token_ids for p in prompts]
    assert got[0].finish_reason == "stop" and got[5].finish_reason == "context" and len(got[5].token_ids) == 17


def test_metrics_per_row_add_up_to_the_batch(family):
    f = family("gpt2")
    e = engine(
        target=f["target"],
        drafter=f["near"],
        schedule="bass",
        block_size=3,
        rule="token_v3",
        alpha=0.4,
        ignore_eos=True,
    )
    seen: list[int] = []
    rows = e.generate(PROMPTS, batch_size=5, on_step=lambda s: seen.append(s.row))
    assert sorted(set(seen)) == [0, 1, 2, 3, 4]
    for i, g in enumerate(rows):
        m = g.metrics
        assert all(s.row == i for s in g.steps) and seen.count(i) == len(g.steps)
        assert m.num_generated_tokens == sum(len(s.emitted) for s in g.steps) == len(g.token_ids) == 24
        assert m.num_generated_tokens == m.num_accepted_tokens + m.target_calls
        assert sum(d.accepted for s in g.steps for d in s.decisions if d.kind == "draft") == m.num_accepted_tokens
    # the drafting and verifying time of a step is shared among its rows: the rows' seconds add up to the steps'
    total = sum(s.draft_seconds + s.verify_seconds for g in rows for s in g.steps)
    assert 0 < total <= max(g.metrics.decode_seconds for g in rows)


def test_bass_shares_one_block_size_across_the_batch(family):
    f = family("gpt2")
    e = engine(
        target=f["target"],
        drafter=f["near"],
        schedule="bass",
        block_size=3,
        max_block_size=8,
        max_new_tokens=60,
        ignore_eos=True,
    )
    rows = e.generate(PROMPTS[:3], batch_size=3)
    by_step: dict[int, set[int]] = {}
    for g in rows:
        done = 0
        for s in g.steps:
            if 60 - done > 9:  # the row's budget did not cut the block
                by_step.setdefault(s.index, set()).add(s.block_size)
            done += len(s.emitted)
    assert by_step and all(len(v) == 1 for v in by_step.values())
    assert len({s.block_size for g in rows for s in g.steps}) > 1  # it adapts


def test_sequential_refuses_batches(family):
    f = family("gpt2")
    with pytest.raises(PolicyError, match="sequential.*batch_size: 1"):
        engine(target=f["target"], drafter=f["near"], mode="sequential", rule="chow", batch_size=4)
    e = engine(target=f["target"], drafter=f["near"], mode="sequential", rule="chow")
    with pytest.raises(CascadeError, match="sequential"):
        e.generate(PROMPTS, batch_size=2)
    assert len(e.generate(PROMPTS[:2], batch_size=1)) == 2
