"""The `eagle` drafter: exact decoding over draft trees, its caches, its dtype, its feature feed."""

from __future__ import annotations

import json

import pytest
import torch
from cascade_eagle import features as T
from cascade_eagle.head import EagleHead, HeadConfig, save_head
from eagle_helpers import PROMPT, PROMPTS, eagle, target_only

from cascade.errors import CascadeError
from cascade.policy import parse_policy
from cascade.testing import ARCHS, arch_params, policy_dict


@pytest.mark.parametrize("arch", arch_params())
@pytest.mark.parametrize("tree", ["dynamic", "static", "chain"])
def test_greedy_eagle_decoding_equals_target_only(family, arch, tree):
    f = family(arch)
    reference = [g.token_ids for g in target_only(f).generate(PROMPTS)]
    e = eagle(f, tree)
    outs = e.generate(PROMPTS)
    assert [g.token_ids for g in outs] == reference
    assert [g.token_ids for g in e.generate(PROMPTS, batch_size=3)] == reference  # one instance per row
    if tree != "chain":  # a tree of top-k children catches what the few-step head gets nearly right
        assert sum(s.accepted for g in outs for s in g.steps) > 0


def test_dynamic_trees_branch_and_keep_to_their_budget(family):
    f = family("gpt2")
    e = eagle(f, "dynamic", options={"budget": 6})
    drafts = []
    propose = e.drafter.propose_trees

    def spy(ask):
        (d,) = propose(ask)
        drafts.append(d)
        return [d]

    e.drafter.propose_trees = spy
    e.generate(PROMPT)
    trees = [d for d in drafts if d.parents is not None and d.tokens.shape[0] > 0]
    assert trees and all(d.tokens.shape[0] <= 6 for d in trees)
    assert any(len(set(d.parents.tolist())) < d.parents.shape[0] for d in trees)  # a node with siblings
    for d in trees:
        parents = d.parents.tolist()
        assert all(-1 <= p < i for i, p in enumerate(parents))
        depth = [0] * len(parents)
        for i, p in enumerate(parents):
            depth[i] = 1 if p < 0 else depth[p] + 1
        assert max(depth) <= 4  # the depth option


def test_static_trees_are_chains_under_each_root_child(family):
    f = family("gpt2")
    e = eagle(f, "static", options={"top_k": 2, "depth": 3, "budget": 6})
    ids = e.encode(PROMPT)
    e.drafter.start([ids])
    from cascade.drafter import TreeRound

    (d,) = e.drafter.propose_trees(TreeRound([ids], [8], e.params, [None]))
    parents = d.parents.tolist()
    assert parents.count(-1) == 2 and len(parents) == 6
    assert all(parents.count(i) <= 1 for i in range(len(parents)))  # below the root: one child each


@pytest.mark.parametrize("arch", ARCHS)
def test_the_heads_cache_and_the_targets_equal_a_recomputation(family, arch):
    from transformers import DynamicCache

    f = family(arch)
    e = eagle(f, "dynamic", ignore_eos=True, max_new_tokens=30, options={"dtype": "float32"})  # exact comparisons
    prompt = e.encode(PROMPT)
    generated: list[int] = []
    head = e.drafter.head

    def check(step):
        generated.extend(step.emitted)
        seq = torch.cat([prompt, torch.tensor(generated)])
        drafter = e.drafter
        with torch.no_grad():
            # the target: a fresh cache over every token but the last emitted one
            fresh = DynamicCache(config=e.target_model.config)
            e.target_model(input_ids=seq[None, :-1], past_key_values=fresh, use_cache=True)
            valid = e.target.valid[0]
            for a, b in zip(e.target.cache.layers, fresh.layers):
                assert torch.allclose(a.keys[0][:, valid], b.keys[0], atol=1e-4)
            # the head: its K/V of the pairs it has fed equal a pass over the accepted prefix from scratch
            if drafter.past is None:
                return
            n = drafter.fed
            feats = T.target_features(e.target_model, seq[None, :n])
            _, k, v = head.step(feats, T.embed(e.target_model, seq[None, 1 : n + 1]), torch.arange(n)[None], None, None)
            assert torch.allclose(drafter.past[0], k, atol=1e-4) and torch.allclose(drafter.past[1], v, atol=1e-4)

    g = e.generate(PROMPT, on_step=check)
    assert any(s.accepted > 0 for s in g.steps)


LAW_DRAWS = 1500


def _law(f, tree: str) -> float:
    """Lossless at T = 1, top-k 3: the p-value of the first two tokens against the target's joint law."""
    from cascade.testing.laws import engine_law_p_value

    e = eagle(f, tree, temperature=1.0, top_k=3, max_new_tokens=2, ignore_eos=True)
    return engine_law_p_value(e, [PROMPT], LAW_DRAWS)


@pytest.mark.slow
@pytest.mark.parametrize("tree", ["dynamic", "chain"])
def test_sampling_with_eagle_follows_the_target(family, tree):
    """Through a tree's multi-round acceptance (siblings rejected in turn, depth 2) or a chain, the first two
    tokens follow the target's law (docs/testing.md)."""
    assert _law(family("gpt2"), tree) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize(
    "tree,mutant",
    [
        ("dynamic", "tree-rejected-child-kept"),
        ("dynamic", "tree-rejected-all-draws-p"),
        ("chain", "chain-residual-is-pi"),
    ],
)
def test_the_eagle_law_check_rejects_planted_bugs(family, tree, mutant):
    """The check above has power: each planted bug in the verification EAGLE's drafts go through is rejected."""
    from cascade.testing.mutation import BY_NAME, applied

    f = family("gpt2")
    with applied(BY_NAME[mutant]):
        assert _law(f, tree) < 1e-6


def test_a_cascade_reads_q_from_a_greedy_tree_and_sampled_trees_stay_lossless(family):
    f = family("gpt2")
    g = eagle(f, "dynamic", rule="token_v3", alpha=0.3).generate(PROMPT)
    assert g.token_ids and any(s.accepted > 0 for s in g.steps)
    chain = eagle(f, "chain", rule="token_v3", alpha=0.3, temperature=1.0).generate(PROMPT)
    assert chain.token_ids
    with pytest.raises(CascadeError, match="only losslessly"):
        eagle(f, "dynamic", rule="token_v3", alpha=0.3, temperature=1.0).generate(PROMPT)


def test_a_bfloat16_head_still_decodes_exactly(family):
    """The head's dtype changes the drafts only: verification stays in the target's dtype."""
    f = family("qwen2")
    reference = [g.token_ids for g in target_only(f).generate(PROMPTS)]
    e = eagle(f, "dynamic", options={"dtype": "bfloat16"})
    assert e.drafter.head.fc.weight.dtype == torch.bfloat16 and e.drafter.lm_w.dtype == torch.bfloat16
    assert [g.token_ids for g in e.generate(PROMPTS)] == reference
    fp32 = eagle(f, "chain", options={"dtype": "float32"})  # the same dtype: the target's LM head, shared
    assert fp32.drafter.lm_w.data_ptr() == fp32.target_model.get_output_embeddings().weight.data_ptr()


def test_the_prompts_features_come_from_the_engines_prefill(family, monkeypatch):
    """The drafter never runs the target itself when the engine prefilled: no second pass over the prompt."""
    import cascade_eagle.drafter as D

    f = family("gpt2")
    e = eagle(f)
    calls = []
    real = D.T.target_features
    monkeypatch.setattr(D.T, "target_features", lambda *a: calls.append(1) or real(*a))
    reference = [g.token_ids for g in target_only(f).generate(PROMPTS)]
    assert [g.token_ids for g in e.generate(PROMPTS, batch_size=2)] == reference
    assert calls == []


def test_drafter_only_mode_takes_chains_and_refuses_trees(family):
    from cascade.errors import PluginError

    f = family("gpt2")
    chain = eagle(f, "chain", mode="drafter", max_new_tokens=12, ignore_eos=True).generate(PROMPT)
    assert len(chain.token_ids) == 12  # features recomputed from the target each step (no verification)
    with pytest.raises(PluginError, match="a tree in drafter-only mode"):
        eagle(f, "dynamic", mode="drafter").generate(PROMPT)


def test_bad_heads_get_clear_errors(family, tmp_path):
    from cascade.plugins import build_registry
    from cascade.policy import check_policy

    f, other = family("gpt2"), family("llama")
    d = policy_dict(target=f["target"], plugin="eagle", drafter_options={"head": str(tmp_path / "nowhere")})
    with pytest.raises(CascadeError, match="no EAGLE head at .*cascade eagle train"):
        check_policy(parse_policy(d), build_registry())
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(CascadeError, match="lacks config.json or model.safetensors"):
        eagle({**f, "head": tmp_path})
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CascadeError, match="is not JSON"):
        eagle({**f, "head": tmp_path})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "cascade-eagle-head", "hidden": 64}))
    with pytest.raises(CascadeError, match="is not a valid head"):
        eagle({**f, "head": tmp_path})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CascadeError, match="not an EAGLE head"):
        eagle({**f, "head": tmp_path})
    wrong = dict(json.loads((other["head"] / "config.json").read_text()), hidden=32)
    (tmp_path / "config.json").write_text(json.dumps(wrong))
    (tmp_path / "model.safetensors").write_bytes((other["head"] / "model.safetensors").read_bytes())
    with pytest.raises(CascadeError, match="does not match its config.json"):
        eagle({**f, "head": tmp_path})
    save_head(EagleHead(HeadConfig(hidden=32, vocab=320, heads=2, target="elsewhere")), tmp_path / "small")
    with pytest.raises(CascadeError, match="trained for a target with hidden size 32 .* \\(elsewhere\\)"):
        eagle({**f, "head": tmp_path / "small"})


@pytest.mark.parametrize("schedule", ["confidence", "adaptive"])
def test_a_chain_follows_the_schedules_that_read_confidence(family, schedule, monkeypatch):
    """tree: chain reports the head's top probability before each draw, so confidence-driven schedules stop it;
    decoding stays exact. The target's features of every step, one that drafted nothing (k = 0) included, come
    from the engine's verification: the drafter never re-runs the target to catch up."""
    import cascade_eagle.drafter as D

    f = family("llama")
    reference = [g.token_ids for g in target_only(f).generate(PROMPTS)]
    options = {"confidence": {"block_size": 4, "confidence": 0.5}, "adaptive": {"max_block_size": 6}}[schedule]
    e = eagle(f, "chain", schedule=schedule, **options)
    calls: list[int] = []
    real = D.T.target_features
    monkeypatch.setattr(D.T, "target_features", lambda *a: calls.append(1) or real(*a))
    outs = e.generate(PROMPTS)
    assert [g.token_ids for g in outs] == reference
    drafted = {s.drafted for g in outs for s in g.steps}
    assert drafted - {0} != {4}  # not always the full block
    assert schedule != "adaptive" or 0 in drafted  # adaptive: steps that drafted nothing, features still sent
    assert calls == []


def test_trees_are_refused_by_schedules_that_cut_chains(family):
    f = family("gpt2")
    with pytest.raises(CascadeError, match="proposed a tree, and schedule 'adaptive' cuts chains"):
        eagle(f, "dynamic", schedule="adaptive").generate(PROMPT)


@pytest.mark.parametrize("tree", ["dynamic", "chain"])
def test_rows_joining_a_running_batch_get_their_prompt_features_and_stay_exact(family, tree):
    """Requests joining a running batch (cascade serve): each joined row's head gets its prompt's target features
    from the joining prefill, and greedy output stays the target's."""
    f = family("gpt2")
    e = eagle(f, tree, max_new_tokens=12)
    from cascade.testing import decode_joining

    reference = [g.token_ids for g in target_only(f, max_new_tokens=12).generate(PROMPTS[:3])]
    assert decode_joining(e, PROMPTS[:3]) == reference
