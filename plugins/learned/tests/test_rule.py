"""The rule `learned` in the engine: speculative with a qp head, sequential with a q head, refusals, ends."""

from __future__ import annotations

import pytest
import torch
from learned_support import PROMPTS, make_policy

from cascade.decode.engine import Engine
from cascade.errors import CascadeError, PolicyError
from cascade.features import FEATURES, BlockContext
from cascade.plugins import build_registry


def engine(tmp_path, fam, head, **kw) -> Engine:
    return Engine.from_policy(
        make_policy(tmp_path / "p.yaml", fam, rule="learned", rule_options={"path": str(head)}, **kw)
    )


def test_registered_as_a_plugin_with_its_command():
    reg = build_registry()
    assert "learned" in reg.rules and any(p.name == "learned" for p in reg.plugins)
    assert reg.rules["learned"].alpha_range == (0.0, 1.0)


def test_speculative_with_a_qp_head_defers_some_positions(tmp_path, fam, heads):
    e = engine(tmp_path, fam, heads["qp-lr"], alpha=0.5)
    assert e.rule.reads_p
    deferred = drafted = 0
    for p in PROMPTS[:4]:
        m = e.generate(p, max_new_tokens=24).metrics
        deferred, drafted = deferred + m.num_deferred, drafted + m.num_draft_tokens
    assert 0 < deferred < drafted


def test_tree_head_scores_blocks_in_the_engine(tmp_path, fam, heads):
    e = engine(tmp_path, fam, heads["qp-hgb"], alpha=0.5)
    assert e.generate(PROMPTS[0], max_new_tokens=16).metrics.num_generated_tokens == 16


def test_speculative_end_is_lossless_and_drafter_end_defers_nothing(tmp_path, fam, heads):
    target = Engine.from_policy(make_policy(tmp_path / "t.yaml", fam, mode="target"))
    lossless = engine(tmp_path, fam, heads["qp-hgb"], alpha=0.0)
    for p in PROMPTS[:5]:
        assert lossless.generate(p, max_new_tokens=24).token_ids == target.generate(p, max_new_tokens=24).token_ids
    none = engine(tmp_path, fam, heads["qp-lr"], alpha=1.0)
    assert none.generate(PROMPTS[0], max_new_tokens=24).metrics.num_deferred == 0


def test_sequential_with_a_q_head(tmp_path, fam, heads):
    e = engine(tmp_path, fam, heads["q-lr"], mode="sequential", alpha=0.5)
    assert not e.rule.reads_p
    m = e.generate(PROMPTS[1], max_new_tokens=24).metrics
    assert m.num_generated_tokens == 24 and m.target_calls == m.num_deferred


def test_sequential_refuses_a_qp_head(tmp_path, fam, heads):
    # refused when the policy is checked (the rule's `requirements` read the card), else on the first block
    with pytest.raises(PolicyError, match=r"sequential cascade decides before.*--features q"):
        engine(tmp_path, fam, heads["qp-lr"], mode="sequential", alpha=0.5).generate(PROMPTS[0], max_new_tokens=4)


def test_the_rule_itself_refuses_p_less_calls_for_a_qp_head(heads):
    from cascade.rules import DeferralInputs
    from cascade_learned.rule import LearnedRule, Options

    rule = LearnedRule(0.5, Options(path=heads["qp-lr"]))
    inputs = DeferralInputs(
        features=torch.rand(2, len(FEATURES)), positions=torch.arange(2), sequence_position=5, recent_acceptance=0.5
    )
    with pytest.raises(PolicyError, match="--features q"):
        rule.defer(torch.rand(2, 8), None, inputs)
    assert rule.defer(torch.rand(2, 8), torch.rand(2, 8), inputs).shape == (2, 1)


def test_deterministic_drafter_is_refused_at_policy_load(tmp_path, fam, heads):
    with pytest.raises(PolicyError, match="deterministic"):
        engine(tmp_path, fam, heads["q-lr"], plugin="ngram")


def test_missing_head_is_a_clear_error(tmp_path, fam):
    with pytest.raises(CascadeError, match="no learned head"):
        engine(tmp_path, fam, tmp_path / "missing")


def test_acceptance_predictor(heads):
    from cascade_learned.rule import AcceptancePredictor

    pred = AcceptancePredictor(heads["acc-lr"])
    feats = torch.rand(3, len(FEATURES))
    a = pred.predict_acceptance(feats, torch.arange(3), BlockContext(sequence_position=20))
    assert a.shape == (3,) and ((a >= 0) & (a <= 1)).all()
    hi = feats.clone()
    hi[:, FEATURES.index("q_max")] = 0.99
    hi[:, FEATURES.index("q_x")] = 0.99
    lo = feats.clone()
    lo[:, FEATURES.index("q_max")] = 0.05
    lo[:, FEATURES.index("q_x")] = 0.05
    ctx = BlockContext(sequence_position=20)
    assert (
        pred.predict_acceptance(hi, torch.arange(3), ctx).mean()
        > pred.predict_acceptance(lo, torch.arange(3), ctx).mean()
    )
    with pytest.raises(PolicyError, match="acceptance head"):
        AcceptancePredictor(heads["qp-lr"])


def test_requirements_come_from_the_card(heads):
    from cascade_learned.rule import LearnedRule, Options

    assert LearnedRule.requirements(Options(path=heads["qp-lr"])) == (True, True)
    assert LearnedRule.requirements(Options(path=heads["q-lr"])) == (True, False)


def test_the_acceptance_head_drives_the_adaptive_schedule(tmp_path, monkeypatch):
    """Registered as predictor `learned`: an adaptive policy naming a shipped acceptance head decodes,
    greedy-identical to target-only (the schedule only chooses how many drafts to verify)."""
    from pathlib import Path

    from cascade.decode.engine import Engine
    from cascade.plugins import registry
    from cascade.policy import load_policy
    from cascade.schedules import profile
    from cascade.schedules.costs import CostTable

    repo = Path(__file__).resolve().parents[3]
    head = repo / "docs" / "learned" / "models" / "acceptance-logistic-q"
    if not head.exists():
        import pytest

        pytest.skip("the shipped acceptance head is not in this checkout")
    assert "learned" in registry().predictors
    monkeypatch.setattr(
        profile,
        "cost_table",
        lambda engine, max_k, remeasure=False: (CostTable(0.02, tuple(1.0 + 0.05 * i for i in range(9))), None, False),
    )
    base = load_policy(repo / "policies" / "speculative-lossless.yaml")
    target = base.derive("t", {"mode": "target", "decoding": {"max_new_tokens": 12}})
    ada = base.derive(
        "a",
        {
            "decoding": {
                "max_new_tokens": 12,
                "schedule": {
                    "name": "adaptive",
                    "options": {"predictor": "learned", "predictor_options": {"path": str(head)}},
                },
            }
        },
    )
    prompt = "def add(a, b):\\n    return"
    g = Engine.from_policy(ada).generate(prompt)
    assert g.token_ids == Engine.from_policy(target).generate(prompt).token_ids


def test_a_relative_head_path_resolves_against_the_policy_folder(tmp_path, fam, heads, monkeypatch):
    import shutil

    shutil.copytree(heads["qp-lr"], tmp_path / "policies" / "heads" / "qp")
    policy = make_policy(
        tmp_path / "policies" / "p.yaml", fam, rule="learned", alpha=0.5, rule_options={"path": "heads/qp"}
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the policy's folder
    e = Engine.from_policy(policy)
    assert e.rule.head.folder.resolve() == (tmp_path / "policies" / "heads" / "qp").resolve()
