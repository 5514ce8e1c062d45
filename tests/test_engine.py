"""The engine end to end on tiny models built from configs (GPT-2, Llama, Qwen2)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from cascade.decode.engine import Engine
from cascade.drafter import DrafterBase, DraftRound
from cascade.policy import parse_policy
from cascade.rules import BUILTIN_RULES
from cascade.testing import ARCHS, assert_first_tokens_follow, policy_dict
from cascade.verify import sampling as S

PROMPT = "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self"


def engine(**kw) -> Engine:
    return Engine.from_policy(parse_policy(policy_dict(**kw)))


def tokens(**kw) -> list[int]:
    return engine(**kw).generate(PROMPT).token_ids


@pytest.mark.parametrize("arch", ARCHS)
def test_lossless_greedy_equals_target_for_both_drafters_and_all_block_sizes(family, arch):
    f = family(arch)
    reference = tokens(target=f["target"], mode="target")
    assert len(reference) > 0
    for k in range(1, 9):
        assert tokens(target=f["target"], drafter=f["near"], block_size=k) == reference, ("hf-model", k)
        assert tokens(target=f["target"], plugin="ngram", block_size=k) == reference, ("ngram", k)
    assert tokens(target=f["target"], drafter=f["small"], block_size=3) == reference


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_transformers_assisted_and_prompt_lookup(family, arch):
    f = family(arch)
    e = engine(target=f["target"], drafter=f["near"], block_size=4, max_new_tokens=20)
    ids = e.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    target = AutoModelForCausalLM.from_pretrained(f["target"])
    assistant = AutoModelForCausalLM.from_pretrained(f["near"])
    hf = target.generate(ids, assistant_model=assistant, do_sample=False, max_new_tokens=20)[0, ids.shape[1] :]
    assert e.generate(PROMPT).token_ids == hf.tolist()
    hf_pl = target.generate(ids, prompt_lookup_num_tokens=4, do_sample=False, max_new_tokens=20)[0, ids.shape[1] :]
    ours = engine(target=f["target"], plugin="ngram", block_size=4, max_new_tokens=20).generate(PROMPT)
    assert ours.token_ids == hf_pl.tolist()


@pytest.mark.parametrize("rule", sorted(set(BUILTIN_RULES) - {"none"}))
def test_alpha_ends_reproduce_lossless_and_drafter_only(family, rule):
    f = family("gpt2")
    lo, hi = BUILTIN_RULES[rule].alpha_range
    lo, hi = max(lo, -1e9), min(hi, 1e9)
    lossless = tokens(target=f["target"], drafter=f["near"])
    drafter_only = tokens(target=f["target"], drafter=f["near"], mode="drafter")
    assert lossless != drafter_only  # the test would prove nothing otherwise
    assert tokens(target=f["target"], drafter=f["near"], rule=rule, alpha=lo) == lossless
    assert tokens(target=f["target"], drafter=f["near"], rule=rule, alpha=hi) == drafter_only
    # a budget that leaves exactly one token for the last step (k = 0, the bonus alone)
    odd = dict(target=f["target"], drafter=f["near"], max_new_tokens=21)
    assert tokens(**odd, rule=rule, alpha=hi) == tokens(**odd, mode="drafter")


def test_sequential_cascade_ends(family):
    f = family("gpt2")
    target_only = tokens(target=f["target"], mode="target")
    drafter_only = tokens(target=f["target"], drafter=f["near"], mode="drafter")
    assert tokens(target=f["target"], drafter=f["near"], mode="sequential", rule="chow", alpha=0.0) == target_only
    assert tokens(target=f["target"], drafter=f["near"], mode="sequential", rule="chow", alpha=1.0) == drafter_only
    deferred = []
    for alpha in (0.5, 0.7, 0.8, 0.9, 0.95):
        mid = engine(target=f["target"], drafter=f["near"], mode="sequential", rule="chow", alpha=alpha).generate(
            PROMPT
        )
        assert mid.metrics.target_calls == mid.metrics.num_deferred
        deferred.append(mid.metrics.num_deferred / mid.metrics.num_draft_tokens)
    assert deferred == sorted(deferred, reverse=True) and any(0 < d < 1 for d in deferred)


def test_lossy_greedy_equals_lossless(family):
    f = family("llama")
    assert tokens(target=f["target"], drafter=f["near"], mode="lossy", lenience=0.5) == tokens(
        target=f["target"], drafter=f["near"]
    )


@pytest.mark.parametrize("schedule", ["heuristic", "confidence"])
def test_block_schedules_stay_lossless(family, schedule):
    f = family("qwen2")
    ref = tokens(target=f["target"], mode="target")
    varied = False
    for threshold in (0.3, 0.2, 0.1, 0.05):
        floor = {"confidence": threshold} if schedule == "confidence" else {}  # heuristic reads no confidence
        out = engine(target=f["target"], drafter=f["near"], schedule=schedule, **floor).generate(PROMPT)
        assert out.token_ids == ref
        varied |= len({s.drafted for s in out.steps}) > 1  # the schedule actually changed the block
    assert varied


def recompute_cache(model, ids):
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[None], past_key_values=cache, use_cache=True)
    return cache


def assert_cache_equal(cached, ids):
    fresh = recompute_cache(cached.model, ids)
    assert cached.length == ids.shape[0]
    for a, b in zip(cached.cache.layers, fresh.layers):
        assert a.keys.shape == b.keys.shape
        assert torch.allclose(a.keys, b.keys, atol=1e-4) and torch.allclose(a.values, b.values, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("temperature,rule", [(0.0, "none"), (1.0, "none"), (1.0, "token_v3")])
def test_caches_hold_exactly_the_emitted_prefix(family, arch, temperature, rule):
    f = family(arch)
    e = engine(
        target=f["target"],
        drafter=f["near"],
        temperature=temperature,
        block_size=5,
        ignore_eos=True,
        rule=rule,
        alpha=0.3,
    )
    prompt_ids = e.encode(PROMPT)
    checked = 0

    def check(step):
        nonlocal checked
        seq = torch.cat([prompt_ids, torch.tensor(generated + list(step.emitted))])
        generated.extend(step.emitted)
        assert_cache_equal(e.target, seq[:-1])  # everything but the last emitted token
        if step.accepted < step.drafted:
            checked += 1

    generated: list[int] = []
    e.generate(PROMPT, on_step=check)
    assert checked > 0  # rejections happened
    # the drafter's cache: after the next draft's first round it has caught up with the emitted prefix
    seq = torch.cat([prompt_ids, torch.tensor(generated)])
    e.drafter.step(DraftRound([seq], [0], 0, [1]))
    assert_cache_equal(e.drafter.runtime, seq)


@pytest.mark.parametrize(
    "mode,rule,plugin",
    [
        ("speculative", "none", "hf-model"),
        ("speculative", "token_v3", "hf-model"),
        ("speculative", "none", "ngram"),
        ("lossy", "none", "hf-model"),
        ("sequential", "chow", "hf-model"),
        ("target", "none", "hf-model"),
        ("drafter", "none", "hf-model"),
    ],
)
def test_metrics_add_up(family, mode, rule, plugin):
    f = family("gpt2")
    g = engine(
        target=f["target"],
        drafter=f["near"],
        mode=mode,
        rule=rule,
        alpha=0.5,
        plugin=plugin,
        temperature=1.0,
        ignore_eos=True,
        max_new_tokens=40,
    ).generate(PROMPT)
    m = g.metrics
    assert m.num_generated_tokens == len(g.token_ids) == 40
    assert m.num_accepted_tokens <= m.num_draft_tokens
    assert sum(s.drafted for s in g.steps) == m.num_draft_tokens
    assert sum(len(s.emitted) for s in g.steps) == m.num_generated_tokens
    if mode in ("speculative", "lossy"):
        assert m.num_generated_tokens == m.num_accepted_tokens + m.target_calls
        assert sum(m.accepted_per_position) == m.num_accepted_tokens
        assert m.num_drafts == m.target_calls == len(g.steps)
        assert m.mean_acceptance_length == pytest.approx(m.num_generated_tokens / m.target_calls)
    if mode == "target":
        assert m.target_calls == m.num_generated_tokens and m.drafter_calls == 0
    for s in g.steps:
        drafts = [d for d in s.decisions if d.kind == "draft"]
        assert len(drafts) == s.drafted and sum(d.accepted for d in drafts) == s.accepted
        assert [d.emitted_token for d in s.decisions if d.emitted_token is not None] == list(s.emitted)


END_TO_END_RULES = {
    "none": 0.0,
    "chow": 0.5,
    "diff": 0.05,
    "opt": 0.5,
    "token_v1": 0.05,
    "token_v2": 0.1,
    "token_v3": 0.5,
}


@pytest.mark.slow
@pytest.mark.parametrize("rule", sorted(END_TO_END_RULES))
def test_sampling_end_to_end_matches_pi(family, rule):
    """First token of speculative sampling with top-k: histogram vs π computed from the models."""
    f = family("gpt2")
    alpha = END_TO_END_RULES[rule]
    e = engine(
        target=f["target"],
        drafter=f["near"],
        rule=rule,
        alpha=alpha,
        temperature=1.0,
        top_k=4,
        block_size=1,
        max_new_tokens=2,
        ignore_eos=True,
    )
    params = e.params
    ids = e.encode(PROMPT)
    with torch.no_grad():
        p_logits = e.target.model(input_ids=ids[None]).logits[0, -1]
        q_logits = e.drafter.runtime.model(input_ids=ids[None]).logits[0, -1]
    q_raw, p_raw = S.softmax(q_logits)[None], S.softmax(p_logits)[None]
    r = e.rule.defer(q_raw, p_raw)
    pi = S.mixture(r, S.warp(q_logits, params)[None], S.warp(p_logits, params)[None])[0]
    assert_first_tokens_follow(
        lambda seed: e.generate(ids.tolist(), seed=seed, record_decisions=False).token_ids[0], pi, 1500
    )
    if rule == "none":
        assert torch.allclose(pi, S.warp(p_logits, params), atol=1e-6)


def test_ngram_with_token_rule_and_sampling_runs(family):
    f = family("gpt2")
    g = engine(
        target=f["target"], plugin="ngram", rule="token_v3", alpha=0.5, temperature=0.8, ignore_eos=True
    ).generate(PROMPT)
    assert len(g.token_ids) == 24


def test_metrics_add_up_when_stop_strings_cut_a_block(family):
    f = family("gpt2")
    e = engine(target=f["target"], drafter=f["near"], ignore_eos=True, max_new_tokens=40)
    full = e.generate(PROMPT)
    cut = next(s for s in full.steps if len(s.emitted) > 2)  # cut inside a multi-token block
    stop = e.tokenizer.decode(list(cut.emitted[:2]))
    g = engine(target=f["target"], drafter=f["near"], ignore_eos=True, max_new_tokens=40, stop=[stop]).generate(PROMPT)
    m, last = g.metrics, g.steps[-1]
    assert g.finish_reason == "stop" and len(last.emitted) < len(cut.emitted)
    assert m.num_generated_tokens == sum(len(s.emitted) for s in g.steps) == len(g.token_ids)
    assert m.num_generated_tokens == m.num_accepted_tokens + m.target_calls - (last.accepted == len(last.emitted))
    assert sum(m.accepted_per_position) == m.num_accepted_tokens
    drafts = [d for s in g.steps for d in s.decisions if d.kind == "draft"]
    assert sum(d.accepted for d in drafts) == m.num_accepted_tokens


def test_eos_and_stop_strings(family):
    f = family("gpt2")
    e = engine(target=f["target"], drafter=f["near"], ignore_eos=True, max_new_tokens=30)
    full = e.generate(PROMPT)
    stop = full.text[5:8]
    assert stop
    e2 = engine(target=f["target"], drafter=f["near"], ignore_eos=True, max_new_tokens=30, stop=[stop])
    g = e2.generate(PROMPT)
    assert g.finish_reason == "stop" and stop not in g.text and full.text.startswith(g.text)
    # EOS: make the first generated token the eos id and check we stop right there
    e3 = engine(target=f["target"], drafter=f["near"], max_new_tokens=30)
    e3.stopper.eos_id = full.token_ids[0]
    g3 = e3.generate(PROMPT)
    assert g3.token_ids == full.token_ids[:1] and g3.finish_reason == "eos"


def test_seeded_sampling_is_reproducible(family):
    f = family("gpt2")
    e = engine(target=f["target"], drafter=f["near"], rule="token_v3", alpha=0.3, temperature=1.0, ignore_eos=True)
    assert e.generate(PROMPT, seed=7).token_ids == e.generate(PROMPT, seed=7).token_ids
    assert e.generate(PROMPT, seed=7).token_ids != e.generate(PROMPT, seed=8).token_ids


def test_one_engine_serves_many_generations_in_turn(family):
    """Nothing about a generation stays on the engine: interleaved calls equal fresh engines' output."""
    f = family("gpt2")
    kw = dict(
        target=f["target"],
        drafter=f["near"],
        rule="token_v3",
        alpha=0.3,
        temperature=1.0,
        schedule="heuristic",
        ignore_eos=True,
    )
    other = "import os\n\ndef main():\n"
    shared = engine(**kw)
    first = shared.generate(PROMPT, seed=1).token_ids
    second = shared.generate(other, seed=2, record_decisions=False).token_ids
    again = shared.generate(PROMPT, seed=1).token_ids
    assert first == again == engine(**kw).generate(PROMPT, seed=1).token_ids
    assert second == engine(**kw).generate(other, seed=2).token_ids
    assert not {"generator", "record", "schedule"} & set(vars(shared))


def _in_process_plugin(name: str, **hooks):
    import types

    from cascade.hookspecs import hookimpl
    from cascade.plugins import build_registry

    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return build_registry(extra=[(name, module)])


def test_a_rule_that_reads_features_gets_them_per_block(family):
    from cascade.features import FEATURES
    from cascade.rules import NoDeferral

    seen = []

    class Spy(NoDeferral):  # defers everything (lossless), and records what it was given
        name = "spy"
        reads_features = True

        def defer(self, q, p, inputs=None):
            seen.append(inputs)
            return super().defer(q, p, inputs)

    reg = _in_process_plugin("spy-rule", register_rules=lambda register: register("spy", Spy))
    f = family("gpt2")
    policy = parse_policy(policy_dict(target=f["target"], drafter=f["near"], rule="spy", block_size=3))
    gen = Engine.from_policy(policy, registry=reg).generate(PROMPT)
    assert gen.token_ids == tokens(target=f["target"], drafter=f["near"], block_size=3)  # r = 1: lossless
    blocks = [i for i in seen if i.positions.numel() and i.positions[0] == 0]
    assert blocks and all(
        i.names == FEATURES and i.features.shape == (i.positions.numel(), len(FEATURES)) for i in seen
    )
    assert not torch.isnan(blocks[0].features).any()  # q and p were both there
    starts = [i.sequence_position for i in blocks]
    assert starts == sorted(starts) and starts[1] > starts[0]
    assert torch.isnan(torch.tensor(blocks[0].recent_acceptance)) and 0 <= blocks[-1].recent_acceptance <= 1


def test_a_drafter_that_raises_is_named_in_one_error(family):
    from cascade.errors import PluginError

    class Broken(DrafterBase):
        name, deterministic = "broken", True

        class Options(__import__("pydantic").BaseModel):
            pass

        def __init__(self, options, ctx):
            pass

        def step(self, ask):
            raise ZeroDivisionError("boom")

    reg = _in_process_plugin("broken-drafter", register_drafters=lambda register: register("broken", Broken))
    f = family("gpt2")
    policy = parse_policy(policy_dict(target=f["target"], plugin="broken", drafter_options={}))
    with pytest.raises(PluginError, match=r"drafter 'broken' raised in step\(\): ZeroDivisionError: boom"):
        Engine.from_policy(policy, registry=reg).generate(PROMPT)
