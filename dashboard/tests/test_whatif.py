"""cascade_dashboard.whatif: the re-applied rules agree with cascade.rules; estimates behave."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cascade.rules import BUILTIN_RULES
from cascade_dashboard import whatif


def _features(k: int = 64, v: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.softmax(torch.randn(k, v, generator=g) * 2, -1)
    p = torch.softmax(torch.randn(k, v, generator=g) * 2, -1)
    x = torch.randint(0, v, (k,), generator=g)
    feats = {
        "q_x": q.gather(-1, x[:, None]).squeeze(-1),
        "q_max": q.max(-1).values,
        "p_x": p.gather(-1, x[:, None]).squeeze(-1),
        "p_max": p.max(-1).values,
        "d_tv": (p - q).clamp_min(0).sum(-1),
    }
    return q, p, x, {n: t.numpy().astype(float) for n, t in feats.items()}


def test_alpha_ranges_are_the_rules_own():
    assert set(whatif.ALPHA_RANGES) == set(BUILTIN_RULES)
    for name, cls in BUILTIN_RULES.items():
        assert whatif.ALPHA_RANGES[name] == tuple(cls.alpha_range), name


@pytest.mark.parametrize("rule", sorted(BUILTIN_RULES))
@pytest.mark.parametrize("alpha", [-0.5, 0.0, 0.1, 0.3, 0.7, 1.0, 2.0])
def test_rx_of_the_drafted_token_matches_cascade_rules(rule, alpha):
    q, p, x, f = _features()
    r = BUILTIN_RULES[rule](alpha).defer(q, p)  # (k, 1) or (k, V)
    expected = (r[:, 0] if r.shape[-1] == 1 else r.gather(-1, x[:, None]).squeeze(-1)).numpy()
    assert np.array_equal(whatif.defer(rule, alpha, f), expected)


def _arrays(f, deferred, accepted, steps):
    return {**f, "deferred": np.asarray(deferred), "accepted": np.asarray(accepted), "step_key": np.asarray(steps)}


def test_estimate_reproduces_logged_outcomes_and_blocks_stop_at_the_first_rejection():
    f = {n: np.array([0.9, 0.5, 0.8, 0.2]) for n in ("q_x", "q_max", "p_x", "p_max", "d_tv")}
    f["p_x"] = np.array([0.9, 0.1, 0.8, 0.2])
    f["p_max"] = np.array([0.9, 0.6, 0.8, 0.3])
    a = _arrays(f, [True, True, True, True], [False, True, True, False], [1, 1, 2, 2])
    est = whatif.estimate("none", 0.0, a, temperature=0.0)  # everything deferred: the logged verdicts
    assert est["acceptance_rate"] == 0.25 and est["mean_acceptance_length"] == 1.5  # step 1's 2nd draft: after a reject
    assert est["target_calls_per_token"] == pytest.approx(2 / 3)
    est = whatif.estimate("token_v3", 1.0, a, temperature=0.0)  # nothing deferred: all kept
    assert est["deferral_rate"] == 0 and est["acceptance_rate"] == 1 and est["mean_acceptance_length"] == 3


def test_newly_deferred_tokens_use_the_target_top_token_at_t0_and_the_ratio_above():
    f = {
        "q_x": np.array([0.5, 0.5]),
        "q_max": np.array([0.5, 0.5]),
        "p_x": np.array([0.6, 0.2]),
        "p_max": np.array([0.6, 0.7]),
        "d_tv": np.array([0.1, 0.3]),
    }
    a = _arrays(f, [False, False], [True, True], [1, 2])
    r = np.ones(2)
    assert whatif.accept_probs(r, a, 0.0).tolist() == [1.0, 0.0]
    assert whatif.accept_probs(r, a, 1.0).tolist() == pytest.approx([1.0, 0.4])


@pytest.mark.parametrize("rule", ["chow", "diff", "opt", "token_v1", "token_v2", "token_v3"])
def test_alpha_for_share_hits_the_share(rule):
    _, _, _, f = _features(k=400, seed=3)
    a = _arrays(f, np.zeros(400, bool), np.ones(400, bool), np.arange(400))
    for share in (0.1, 0.5, 0.9):
        got = whatif.alpha_for_share(rule, share, a)
        lo, hi = whatif.slider_range(rule)
        assert lo <= got["alpha"] <= hi
        if lo < got["alpha"] < hi:
            assert abs(got["share"] - share) <= 0.01, (rule, share, got)
        assert math.isclose(got["share"], whatif.defer(rule, got["alpha"], a).mean())


def test_the_runs_own_plugin_rule_is_re_applied_from_the_store_as_it_decided(tmp_path):
    """A learned rule's logged run: the what-if rebuilds the rule from the logged policy and, at the logged α,
    re-decides every drafted position from the store's features exactly as the engine did."""
    pytest.importorskip("cascade_learned")
    from pathlib import Path

    from cascade import Engine, parse_policy
    from cascade.store import Store, engine_info
    from cascade.store.queries import dashboard as Q
    from cascade.testing import build_family, make_tokenizer, policy_dict

    head = Path(__file__).resolve().parents[2] / "docs" / "learned" / "models" / "deferral-logistic-qp"
    make_tokenizer(tmp_path / "tok")
    fam = build_family(tmp_path, "gpt2", tmp_path / "tok")
    d = policy_dict(fam["target"], fam["near"], rule="learned", alpha=0.5, block_size=3)
    d["rule"]["options"] = {"path": str(head)}
    engine = Engine.from_policy(parse_policy(d))
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        with store.start_run(engine.policy, engine_info(engine)) as run:
            for prompt in ("def add(a, b):\n", "for i in range(10):\n", "class Point:\n"):
                seq = run.start_sequence(prompt)
                run.end_sequence(seq, engine.generate(prompt, on_step=run.step_logger(seq)))
        f = Q.draft_features(store, run.run_id)
        logged = Q.run_detail(store, run.run_id)["run"]["policy_yaml"]
        own, why = whatif.logged_rule(logged)
    assert why is None and own.name == "learned"
    assert "learned" in whatif.choices(f, own) and "token_v3" in whatif.choices(f, own)
    a = whatif.arrays(f)
    r = whatif.defer(own, 0.5, a)
    assert r.size > 20 and 0 < r.mean() < 1  # the rule defers some positions and keeps others
    assert np.array_equal(r, a["deferred"].astype(float))  # as the engine decided, position by position
    assert whatif.estimate(own, 0.5, a, 0.0)["deferral_rate"] == pytest.approx(r.mean())
    gone, why = whatif.logged_rule(logged.replace(str(head), str(tmp_path / "no-head")))
    assert gone is None and "cannot be rebuilt here" in why
