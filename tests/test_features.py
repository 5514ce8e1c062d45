"""cascade.features: the decision features, the block context and the learned rules' model vector."""

from __future__ import annotations

import math

import pytest
import torch

from cascade.features import (
    CONTEXT,
    FEATURES,
    LOGQ_WINDOW,
    MODEL_FEATURES,
    P_FEATURES,
    Q_MODEL_FEATURES,
    BlockContext,
    decision_features,
    model_features,
    model_features_rows,
    quantile,
)
from cascade.testing import policy_dict

PROMPT = "def add(a, b):\n    return"


def test_decision_features_by_hand():
    q = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    p = torch.tensor([[0.6, 0.3, 0.1], [0.7, 0.2, 0.1]])
    x = torch.tensor([1, 2])
    f = dict(zip(FEATURES, decision_features(x, q, p).T))  # name -> (2,)
    assert f["q_x"].tolist() == pytest.approx([0.3, 0.8])
    assert f["q_max"].tolist() == pytest.approx([0.5, 0.8])
    assert f["q_margin"].tolist() == pytest.approx([0.2, 0.7])
    assert f["q_rank"].tolist() == [1.0, 0.0]  # x is q's second choice, then its first
    assert f["p_x"].tolist() == pytest.approx([0.3, 0.1])
    assert f["p_max"].tolist() == pytest.approx([0.6, 0.7])
    assert f["d_tv"].tolist() == pytest.approx([0.1, 0.7])
    assert f["agree"].tolist() == [1.0, 0.0]
    assert f["q_entropy"][0].item() == pytest.approx(-(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)))


def test_absent_sides_are_nan():
    x = torch.tensor([0, 1])
    q = torch.softmax(torch.randn(2, 5), -1)
    no_p = dict(zip(FEATURES, decision_features(x, q, None).T))
    assert all(torch.isnan(no_p[n]).all() for n in (*P_FEATURES, "d_tv", "agree"))
    assert not torch.isnan(no_p["q_margin"]).any()
    no_q = dict(zip(FEATURES, decision_features(x, None, q).T))
    assert all(torch.isnan(no_q[n]).all() for n in ("q_x", "q_max", "q_entropy", "q_margin", "q_rank", "agree"))


def test_model_features_add_ratio_positions_and_context():
    q = torch.softmax(torch.randn(3, 7), -1)
    p = torch.softmax(torch.randn(3, 7), -1)
    x = torch.tensor([2, 0, 5])
    feats = decision_features(x, q, p)
    ctx = BlockContext(sequence_position=40, recent_acceptance=0.75, logq_q10=-2.0, logq_q50=-0.5)
    m = dict(zip(MODEL_FEATURES, model_features(feats, torch.arange(3), ctx).T))
    assert m["log_ratio"].tolist() == pytest.approx((p[range(3), x].log() - q[range(3), x].log()).tolist(), rel=1e-5)
    assert m["position"].tolist() == [0, 1, 2] and m["sequence_position"].tolist() == [40, 41, 42]
    assert m["recent_acceptance"].tolist() == [0.75] * 3 and m["logq_q10"].tolist() == [-2.0] * 3
    # per-row context (training) gives the same matrix as per-block context (decoding)
    rows = model_features_rows(feats, torch.arange(3), torch.tensor([[40, 0.75, -2.0, -0.5]] * 3))
    assert torch.equal(rows, model_features(feats, torch.arange(3), ctx))
    assert set(Q_MODEL_FEATURES) < set(MODEL_FEATURES) and not {"p_x", "d_tv", "agree", "log_ratio"} & set(
        Q_MODEL_FEATURES
    )


def test_quantile_is_torch_linear_quantile():
    values = [0.3, -1.2, 5.0, 2.2, 0.0, -0.7, 1.1]
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert quantile(values, q) == pytest.approx(torch.quantile(torch.tensor(values, dtype=torch.float64), q).item())
    assert math.isnan(quantile([], 0.5)) and quantile([2.0], 0.1) == 2.0


@pytest.mark.parametrize("mode", ["speculative", "sequential"])
def test_the_engine_logs_where_each_block_sat(family, mode):
    """Each recorded step carries the context its block was decided in, computed as CONTEXT defines it
    from the steps before: the sequence position, recent acceptance and running log q quantiles."""
    from cascade.decode.engine import Engine
    from cascade.features import LOGQ_QUANTILES, RECENT_STEPS
    from cascade.policy import parse_policy

    f = family("gpt2")
    rule = "chow" if mode == "sequential" else "diff"
    policy = parse_policy(
        policy_dict(
            target=f["target"], drafter=f["near"], mode=mode, rule=rule, alpha=0.2, block_size=3, max_new_tokens=40
        )
    )
    gen = Engine.from_policy(policy).generate(PROMPT)
    assert tuple(f.name for f in __import__("dataclasses").fields(BlockContext)) == CONTEXT
    n, recent, logq = gen.prompt_tokens, [], []
    for step in gen.steps:
        c = step.context
        assert c is not None and c.sequence_position == n
        drafted = sum(d for d, _ in recent[-RECENT_STEPS:])
        want = sum(a for _, a in recent[-RECENT_STEPS:]) / drafted if drafted else math.nan
        assert c.recent_acceptance == pytest.approx(want, nan_ok=True)
        for name, q in zip(("logq_q10", "logq_q50"), LOGQ_QUANTILES):
            assert getattr(c, name) == pytest.approx(quantile(logq[-LOGQ_WINDOW:], q), rel=1e-5, nan_ok=True)
        drafts = [d for d in step.decisions if d.kind == "draft"]
        assert all(d.q_margin is not None and d.agree is not None for d in drafts)
        if step.drafted:
            recent.append((step.drafted, step.accepted))
            logq.extend(math.log(d.q_x) for d in drafts)
        n += len(step.emitted)
    assert len(gen.steps) > 3 and not math.isnan(gen.steps[-1].context.logq_q50)


def test_no_context_is_built_when_nothing_reads_or_records_it(family):
    from cascade.decode.engine import Engine
    from cascade.policy import parse_policy

    f = family("gpt2")
    policy = parse_policy(policy_dict(target=f["target"], drafter=f["near"], block_size=3, max_new_tokens=12))
    gen = Engine.from_policy(policy).generate(PROMPT, record_decisions=False)
    assert gen.steps and all(s.context is None for s in gen.steps)
