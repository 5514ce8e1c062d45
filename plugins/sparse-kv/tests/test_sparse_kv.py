"""The sparse-kv drafter on tiny models: exact decoding, a sparse view only, the target itself at a wide window."""

import pytest
import torch
from pydantic import ValidationError

from cascade.decode.engine import Engine
from cascade.drafter import DrafterContext
from cascade.errors import CascadeError
from cascade.policy import parse_policy
from cascade.testing import ARCHS, policy_dict
from cascade_sparse_kv import Options, SparseKVDrafter

PROMPTS = ["def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self", "import os\n", "x"]


def engine(f, sink=2, window=8, **kw) -> Engine:
    options = {"sink": sink, "window": window, **kw.pop("options", {})}
    return Engine.from_policy(
        parse_policy(policy_dict(target=f["target"], plugin="sparse-kv", drafter_options=options, **kw))
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_output_is_the_targets_for_any_sink_and_window(family, arch):
    f = family(arch)
    reference = [
        g.token_ids
        for g in Engine.from_policy(parse_policy(policy_dict(target=f["target"], mode="target"))).generate(PROMPTS)
    ]
    for sink, window in ((0, 4), (2, 8), (4, 16), (4, 1000)):
        e = engine(f, sink, window, block_size=3)
        assert [g.token_ids for g in e.generate(PROMPTS)] == reference, (sink, window)
        assert [g.token_ids for g in e.generate(PROMPTS, batch_size=3)] == reference, (sink, window)


def test_a_window_wider_than_the_context_is_the_target_itself(family):
    f = family("gpt2")
    e = engine(f, sink=4, window=1000, block_size=4, ignore_eos=True, max_new_tokens=30)
    assert e.drafter.model is e.target_model  # shared, not loaded twice
    m = e.generate(PROMPTS[0]).metrics
    assert m.num_draft_tokens > 0 and m.acceptance_rate == 1.0
    narrow = engine(f, sink=1, window=2, block_size=4, ignore_eos=True, max_new_tokens=30).generate(PROMPTS[0])
    assert narrow.metrics.acceptance_rate < 1.0  # a sparse view drafts differently


def test_the_drafter_reads_only_sink_and_window(family):
    f = family("llama")
    sink, window, k = 3, 5, 4
    e = engine(f, sink, window, block_size=k, ignore_eos=True, max_new_tokens=40)
    lm = e.drafter.runtime
    seen = []
    forward = lm.forward

    def spy(ids, *a, **kw):
        # attended: the cache's kept slots + this block's tokens, for every row
        seen.append(max(n + int(x.shape[0]) for n, x in zip(lm.lengths, ids)))
        if lm.evicted[0]:  # once anything was evicted: the kept slots are the sink and the window's latest
            rank = lm.valid[0].nonzero().squeeze(-1)
            assert rank.numel() == lm.lengths[0]
        return forward(ids, *a, **kw)

    lm.forward = spy
    e.generate(PROMPTS[0])
    assert lm.evicted[0] > 0
    assert max(seen[1:]) <= sink + window + 2 + k  # never more than sink ∪ window, the unseen tokens and the drafts


def _law(f, rows: list[str]) -> float:
    """Lossless at T = 1, top-k 3, the rows decoded together: the smallest p-value of each row's first two
    tokens against the target's joint law (cascade.testing.laws)."""
    from cascade.testing.laws import engine_law_p_value

    e = engine(f, sink=1, window=3, temperature=1.0, top_k=3, block_size=3, max_new_tokens=3, ignore_eos=True)
    return engine_law_p_value(e, rows, 1200)


@pytest.mark.slow
def test_sampling_matches_the_target(family):
    """The sparse drafter's q differs from the target's p (it reads only sink + window): each row's two tokens
    still follow the target's law, alone and in a batch of rows of different lengths."""
    f = family("gpt2")
    assert _law(f, PROMPTS[:1]) > 1e-3
    assert _law(f, PROMPTS[:2]) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("mutant", ["chain-residual-is-pi", "first-rejection-one-late"])
def test_the_sparse_law_check_rejects_planted_bugs(family, mutant):
    from cascade.testing.mutation import BY_NAME, applied

    with applied(BY_NAME[mutant]):
        assert _law(family("gpt2"), PROMPTS[:1]) < 1e-6


def test_options_and_a_separate_drafter_model(family):
    f = family("qwen2")
    with pytest.raises(ValidationError):
        Options(window=0)
    with pytest.raises(ValidationError):
        Options(sink=2, window=4, spread=1)
    ctx = DrafterContext(
        vocab_size=320, tokenizer=None, target_name="t", device=torch.device("cpu"), dtype=torch.float32
    )
    with pytest.raises(CascadeError, match="target_model"):
        SparseKVDrafter(Options(), ctx)
    e = engine(f, sink=2, window=6, options={"model": str(f["near"])}, block_size=3)
    assert e.drafter.model is not e.target_model
    reference = Engine.from_policy(parse_policy(policy_dict(target=f["target"], mode="target"))).generate(PROMPTS[0])
    assert e.generate(PROMPTS[0]).token_ids == reference.token_ids


@pytest.mark.parametrize("arch", ARCHS)
def test_self_speculation_takes_the_targets_prefill_instead_of_its_own(family, arch, monkeypatch):
    f = family(arch)
    prompts = [PROMPTS[0], PROMPTS[0] + " = x\n", PROMPTS[1]]
    e = engine(f, sink=2, window=6, block_size=3, ignore_eos=True, max_new_tokens=12)
    fed = []
    forward = e.drafter.runtime.forward
    e.drafter.runtime.forward = lambda ids, *a, **kw: (
        fed.append(max(int(x.shape[0]) for x in ids)) or forward(ids, *a, **kw)
    )
    shared = e.generate(prompts, batch_size=3)
    assert max(fed) <= 1 + 3  # the unseen last prompt token (+ accepted ones) and drafts: never the prompt
    monkeypatch.setattr(type(e.drafter), "adopt_target_cache", lambda self, lm: None)
    e.drafter.prefill_on_start = True  # its own prefill, then evicted to the same view
    own = e.generate(prompts, batch_size=3)
    assert max(fed) > 10
    assert [g.token_ids for g in shared] == [g.token_ids for g in own]
    assert [g.metrics.acceptance_rate for g in shared] == [g.metrics.acceptance_rate for g in own]  # the same drafts


@pytest.mark.parametrize("arch", ARCHS)
def test_snapkv_keeps_the_most_attended_prompt_tokens_and_stays_exact(family, arch):
    f = family(arch)
    reference = [
        g.token_ids
        for g in Engine.from_policy(
            parse_policy(policy_dict(target=f["target"], mode="target", ignore_eos=True, max_new_tokens=30))
        ).generate(PROMPTS)
    ]
    sink, window, snap = 2, 6, 5
    e = engine(f, sink, window, block_size=3, options={"snap": snap, "observe": 4}, ignore_eos=True, max_new_tokens=30)
    assert [g.token_ids for g in e.generate(PROMPTS, batch_size=3)] == reference
    assert [g.token_ids for g in e.generate(PROMPTS)] == reference
    d = e.drafter
    views = {}
    adopt = d.runtime.adopt
    d.runtime.adopt = lambda source, picks: views.setdefault("picks", [list(p) for p in picks]) and adopt(source, picks)
    e.generate(PROMPTS[0], max_new_tokens=4)
    n = len(e.encode(PROMPTS[0])) - 1  # cached prompt tokens
    picks = views["picks"][0]
    assert len(picks) == sink + window + snap and d.kept == [snap]
    assert picks[:sink] == list(range(sink)) and picks[-window:] == list(range(n - window, n))
    middle = picks[sink:-window]
    assert all(sink <= i < n - window for i in middle)  # chosen from what the sink and window leave out
    seen = []
    forward = d.runtime.forward
    d.runtime.forward = lambda ids, *a, **kw: (
        seen.append(max(m + int(x.shape[0]) for m, x in zip(d.runtime.lengths, ids))) or forward(ids, *a, **kw)
    )
    e.generate(PROMPTS[0])
    assert d.runtime.evicted[0] > 0 and max(seen) <= sink + snap + window + 1 + 3  # never more than the view + a block


def test_snapkv_options_are_checked():
    with pytest.raises(ValidationError, match="self-speculation"):
        Options(snap=4, model="some/drafter")
    with pytest.raises(ValidationError, match="lean"):
        Options(snap=4, runtime="transformers")


def test_rows_joining_a_running_batch_stay_exact(family):
    """A row joining a running batch reads its whole prompt at its first draft, then its sparse view."""
    f = family("gpt2")
    e = engine(f, sink=1, window=3, max_new_tokens=12)
    target = Engine.from_policy(parse_policy(policy_dict(target=f["target"], mode="target", max_new_tokens=12)))
    from cascade.testing import decode_joining

    assert decode_joining(e, PROMPTS) == [target.generate(p).token_ids for p in PROMPTS]
