"""Tree drafts (SPEC.md "Tree drafts"): one target pass over a tree, the accepted path, exact outputs."""

import types

import pydantic
import pytest
import torch

from cascade.decode.engine import Engine
from cascade.drafter import DrafterBase, TreeDraft
from cascade.errors import CascadeError, PluginError
from cascade.hookspecs import hookimpl
from cascade.plugins import build_registry
from cascade.policy import parse_policy
from cascade.testing import ARCHS, policy_dict
from cascade.verify import sampling as S
from cascade.verify.masks import attention, check_parents, depths

PROMPT = "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self"
PARENTS = [-1, -1, 0, 2, 1]  # two children of the root; a chain of two under the first, one under the second


class TreeDrafter(DrafterBase):
    """A test drafter proposing PARENTS-shaped trees from an HF model (recomputed from scratch each time).

    deterministic: the top-2 tokens at the root and greedy children (probs None); sampled: siblings drawn
    i.i.d. from q at their parent (warped by the sampling parameters), with probs.
    """

    name, deterministic, sampled = "tree-test", True, False
    proposes_trees = True

    class Options(pydantic.BaseModel):
        model: str

    def __init__(self, options, ctx):
        self.model = ctx.load_model(options.model, ctx.dtype, ctx.device)
        self.paths = []

    def _q(self, ids):
        with torch.no_grad():
            return self.model(input_ids=ids[None]).logits[0, -1].float()

    def _draw(self, logits, n):
        if not self.sampled:
            return torch.topk(logits, n).indices.tolist()
        return [int(S.pick(logits, self.params, self.generator)) for _ in range(n)]

    def propose_trees(self, ask):
        (context,), (k,) = ask.contexts, ask.budgets
        self.params, self.generator = ask.params, ask.generators[0]
        k = min(k, len(PARENTS))
        if k < 1:
            return [TreeDraft(context[:0], context[:0])]
        root = self._q(context)
        tokens, probs = self._draw(root, 2), [S.softmax(root)] * 2
        for parent in PARENTS[2:]:
            path, node = [], parent
            while node >= 0:
                path.insert(0, tokens[node])
                node = PARENTS[node]
            logits = self._q(torch.cat([context, torch.tensor(path, device=context.device)]))
            tokens += self._draw(logits, 1)
            probs.append(S.softmax(logits))
        return [
            TreeDraft(
                torch.tensor(tokens[:k], device=context.device),
                torch.tensor(PARENTS[:k], device=context.device),
                torch.stack(probs[:k]) if self.sampled else None,
                calls=4,
            )
        ]

    def observe(self, feedbacks):
        (feedback,) = feedbacks
        self.paths.append(feedback.path)


class SampledTreeDrafter(TreeDrafter):
    name, deterministic, sampled = "tree-sampled", False, True


def _register(register):
    register("tree-test", TreeDrafter)
    register("tree-sampled", SampledTreeDrafter)


def registry():
    module = types.ModuleType("tree-test")
    module.register_drafters = hookimpl(_register)
    return build_registry(extra=[("tree-test", module)])


def engine(f, sampled=False, runtime="auto", **kw) -> Engine:
    d = policy_dict(
        target=f["target"],
        plugin="tree-sampled" if sampled else "tree-test",
        drafter_options={"model": str(f["near"])},
        **kw,
    )
    d["target"]["runtime"] = runtime
    return Engine.from_policy(parse_policy(d), registry=registry())


def plain(f, **kw) -> Engine:
    return Engine.from_policy(parse_policy(policy_dict(target=f["target"], drafter=f["near"], **kw)))


def test_tree_shapes():
    assert depths(PARENTS) == [1, 1, 2, 3, 2]
    allowed = attention(PARENTS, torch.device("cpu"))
    assert allowed[4].tolist() == [True, True, False, True, True, False]  # node 3: root, node 0, node 2, itself
    assert allowed[:, 0].all() and allowed[2].tolist() == [True, False, True, False, False, False]
    with pytest.raises(PluginError, match="node 1 has parent 1"):
        check_parents([-1, 1], "t")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("runtime", ["lean", "transformers"])
def test_greedy_tree_decoding_equals_target_only(family, arch, runtime):
    f = family(arch)
    prompts = [PROMPT, "import os\n", "x"]
    reference = [g.token_ids for g in plain(f, mode="target").generate(prompts)]
    e = engine(f, runtime=runtime, block_size=5)
    assert [g.token_ids for g in e.generate(prompts)] == reference
    assert [g.token_ids for g in e.generate(prompts, batch_size=3)] == reference  # trees in a batch
    assert any(p and p[0] == 1 for p in e.drafter.paths if p)  # the second branch was taken sometimes


def test_the_target_cache_holds_exactly_the_accepted_path(family):
    from transformers import DynamicCache

    f = family("llama")
    e = engine(f, block_size=5, ignore_eos=True, max_new_tokens=30)
    prompt_ids = e.encode(PROMPT)
    generated: list[int] = []
    holes = []

    def check(step):
        generated.extend(step.emitted)
        holes.append(e.target.holes())
        seq = torch.cat([prompt_ids, torch.tensor(generated)])[:-1]  # all but the last emitted token
        fresh = DynamicCache(config=e.target_model.config)
        with torch.no_grad():
            e.target_model(input_ids=seq[None], past_key_values=fresh, use_cache=True)
        valid = e.target.valid[0]
        assert int(valid.sum()) == seq.shape[0]
        for a, b in zip(e.target.cache.layers, fresh.layers):
            assert torch.allclose(a.keys[0][:, valid], b.keys[0], atol=1e-4)
            assert torch.allclose(a.values[0][:, valid], b.values[0], atol=1e-4)

    g = e.generate(PROMPT, on_step=check)
    assert any(s.accepted > 0 for s in g.steps) and max(holes) > 0  # rejected nodes left holes


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch,sampling,sampled",
    [
        ("gpt2", {"temperature": 1.0, "top_k": 3}, False),
        ("gpt2", {"temperature": 1.0, "top_k": 3}, True),
        ("llama", {"temperature": 1.0, "top_k": 3}, True),
        ("qwen2", {"temperature": 1.0, "top_k": 3}, False),
        ("gpt2", {"temperature": 0.8, "top_k": 6, "top_p": 0.7}, True),
    ],
)
def test_lossless_trees_follow_the_target_at_depth_and_across_siblings(family, arch, sampling, sampled):
    """The first step's tree has two children at the root and one under the first (k = 3): siblings are
    rejected in turn, a depth-2 node is judged at its own prefix, and a leaf's bonus follows. The first two
    tokens follow the target's joint law (cascade.testing.laws; docs/testing.md gives the checks' power)."""
    from cascade.testing.laws import engine_law_p_value

    e = engine(family(arch), sampled=sampled, block_size=5, max_new_tokens=4, ignore_eos=True, **sampling)
    assert engine_law_p_value(e, [PROMPT], 800) > 1e-3


def _siblings_pi_p_value(f) -> float:
    """token_v3 on a tree whose root has two sampled children (k = 2), 2000 draws: the p-value of the first token
    against π."""
    from cascade.testing.laws import law_p_value

    e = engine(f, sampled=True, rule="token_v3", alpha=0.5, temperature=1.0, top_k=4, block_size=5, max_new_tokens=3)
    ids = e.encode(PROMPT)
    with torch.no_grad():
        p_logits = e.target_model(input_ids=ids[None]).logits[0, -1]
        q_logits = e.drafter.model(input_ids=ids[None]).logits[0, -1]
    r = e.rule.defer(S.softmax(q_logits)[None], S.softmax(p_logits)[None])
    pi = S.mixture(r, S.warp(q_logits, e.params)[None], S.warp(p_logits, e.params)[None])[0]
    counts: dict[tuple[int, ...], int] = {}
    for seed in range(2000):
        y = (e.generate(ids.tolist(), seed=seed, record_decisions=False).token_ids[0],)
        counts[y] = counts.get(y, 0) + 1
    return law_p_value(counts, {(a,): float(pi[a]) for a in torch.nonzero(pi).flatten().tolist()})


@pytest.mark.slow
def test_a_cascade_through_sampled_siblings_draws_pi(family):
    """token_v3 on a tree whose root has two sampled children (k = 2): the first token follows π."""
    assert _siblings_pi_p_value(family("gpt2")) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize(
    "sampled,mutant",
    [(False, "tree-rejected-child-kept"), (True, "tree-rejected-sibling-stays"), (True, "tree-deep-node-vs-root")],
)
def test_the_tree_law_checks_reject_planted_bugs(family, sampled, mutant):
    """The engine-level tree checks above have power: each planted bug is rejected at p < 1e-6."""
    from cascade.testing.laws import engine_law_p_value
    from cascade.testing.mutation import BY_NAME, applied

    f = family("gpt2")
    e = engine(f, sampled=sampled, block_size=5, max_new_tokens=4, ignore_eos=True, temperature=1.0, top_k=3)
    with applied(BY_NAME[mutant]):
        assert engine_law_p_value(e, [PROMPT], 800) < 1e-6


@pytest.mark.slow
def test_the_siblings_pi_check_rejects_a_sibling_judged_against_pi(family):
    from cascade.testing.mutation import BY_NAME, applied

    with applied(BY_NAME["tree-sibling-residual-from-pi"]):
        assert _siblings_pi_p_value(family("gpt2")) < 1e-6


def test_a_cascade_rule_on_a_sampled_tree_decodes_and_logs(family):
    f = family("qwen2")
    e = engine(f, sampled=True, rule="token_v3", alpha=0.4, block_size=5)
    g = e.generate(PROMPT)
    m = g.metrics
    assert m.num_generated_tokens == m.num_accepted_tokens + m.target_calls == len(g.token_ids)
    for s in g.steps:
        drafts = [d for d in s.decisions if d.kind == "draft"]
        assert len(drafts) == s.drafted and sum(bool(d.accepted) for d in drafts) == s.accepted
    assert g.token_ids != plain(f, mode="target").generate(PROMPT).token_ids or m.num_deferred < m.num_draft_tokens


def test_trees_are_refused_where_they_are_not_defined(family):
    f = family("gpt2")
    with pytest.raises(CascadeError, match="tree"):
        engine(f, mode="lossy", lenience=0.5, sampled=True).generate(PROMPT)
    with pytest.raises(CascadeError, match="deterministic drafter's tree only losslessly"):
        engine(f, rule="token_v3", alpha=0.5).generate(PROMPT)


class FeatureReader(TreeDrafter):
    """A tree drafter that asks for the target's hidden states (as EAGLE's head reads them)."""

    name, reads_target_features = "tree-features", True

    def observe(self, feedbacks):  # every step's, drafted or not: the sequence grows by n_accepted + 1
        (feedback,) = feedbacks
        self.paths.append((self.at, feedback.n_accepted, feedback.hidden_states))
        self.at += feedback.n_accepted + 1

    def target_features(self, states):
        (hidden_states,) = states
        self.prompts.append(hidden_states)

    def start(self, prompts):
        self.prompts = getattr(self, "prompts", [])
        self.at = prompts[0].shape[0]


@pytest.mark.parametrize("runtime", ["lean", "transformers"])
def test_a_drafter_that_reads_features_gets_the_targets_hidden_states_on_the_accepted_path(family, runtime):
    module = types.ModuleType("tree-features")
    module.register_drafters = hookimpl(lambda register: register("tree-features", FeatureReader))
    f = family("qwen2")
    d = policy_dict(
        target=f["target"],
        plugin="tree-features",
        drafter_options={"model": str(f["near"])},
        block_size=5,
        ignore_eos=True,
        max_new_tokens=20,
    )
    d["target"]["runtime"] = runtime
    e = Engine.from_policy(parse_policy(d), registry=build_registry(extra=[("tree-features", module)]))
    g = e.generate(PROMPT)
    seq = torch.cat([e.encode(PROMPT), torch.tensor(g.token_ids)])
    with torch.no_grad():
        full = e.target_model(input_ids=seq[None], output_hidden_states=True).hidden_states[-1][0]  # (n, d)
    records = e.drafter.paths
    assert records and any(n > 0 for _, n, _ in records)
    prompt = e.encode(PROMPT).shape[0]  # after reset: the prompt's features but the last token's, from the prefill
    assert len(e.drafter.prompts) == 1 and torch.allclose(e.drafter.prompts[0], full[: prompt - 1], atol=1e-4)
    for at, n, states in records:  # the last emitted token (at - 1) and the n accepted after it
        assert states.shape == (n + 1, full.shape[-1])
        assert torch.allclose(states, full[at - 1 : at + n], atol=1e-4)
