"""The hf-model drafter on tiny models: caching, rollback, probabilities, errors."""

import pytest
import torch
from pydantic import ValidationError

from cascade.drafter import DrafterContext, Feedback
from cascade.errors import CascadeError
from cascade.runtime import models
from cascade.schedules.base import DraftPlan
from cascade.schedules.builtin import ConfidenceFloor
from cascade.testing import Driver, build_model, make_tokenizer
from cascade.verify import sampling
from cascade_hf_model import HFModelDrafter, Options


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    tok = root / "tok"
    make_tokenizer(tok)
    build_model("llama", root / "d", 0, tok)
    build_model("llama", root / "wide", 1, tok, vocab=352)
    build_model("llama", root / "narrow", 1, tok, vocab=200)
    return root


def ctx(vocab=320, tokenizer=None):
    return DrafterContext(
        vocab_size=vocab, tokenizer=tokenizer, target_name="t", device=torch.device("cpu"), dtype=torch.float32
    )


def logits_from_scratch(model, ids):
    with torch.no_grad():
        return model(input_ids=ids[None]).logits[0, -1]


def test_greedy_draft_equals_greedy_decoding_and_probs_are_q(dirs):
    d = HFModelDrafter(Options(model=str(dirs / "d")), ctx())
    prompt = torch.tensor([5, 9, 11, 40, 7])
    drv = Driver(d, sampling.SamplingParams(0.0))
    drv.start([prompt])
    (draft,) = drv.draft([prompt], [4])
    assert draft.tokens.shape == (4,) and draft.probs.shape == (4, 320) and draft.calls == 4
    ids = prompt.clone()
    for i in range(4):
        logits = logits_from_scratch(d.runtime.model, ids)
        assert draft.tokens[i].item() == logits.argmax().item()
        assert torch.allclose(draft.probs[i], torch.softmax(logits, -1), atol=1e-5)
        ids = torch.cat([ids, draft.tokens[i : i + 1]])


@pytest.mark.parametrize("n_accepted", [0, 2, 4])
@pytest.mark.parametrize("lookahead", [False, True])
def test_rollback_keeps_exactly_the_accepted_prefix(dirs, n_accepted, lookahead):
    d = HFModelDrafter(Options(model=str(dirs / "d")), ctx())
    prompt = torch.tensor([5, 9, 11, 40, 7])
    drv = Driver(d, sampling.SamplingParams(0.0), lookahead=lookahead)
    drv.start([prompt])
    (draft,) = drv.draft([prompt], [4])
    assert (draft.next_probs is not None) == lookahead
    drv.observe([Feedback(n_accepted=n_accepted, drafted=4)])
    context = torch.cat([prompt, draft.tokens[:n_accepted], torch.tensor([3])])  # + the target's token
    (nxt,) = Driver(d, sampling.SamplingParams(0.0)).draft([context], [1])
    assert d.runtime.length == context.shape[0]
    assert torch.allclose(nxt.probs[0], torch.softmax(logits_from_scratch(d.runtime.model, context), -1), atol=1e-5)


def test_confidence_is_the_top_q_before_each_token(dirs):
    d = HFModelDrafter(Options(model=str(dirs / "d")), ctx())
    prompt = torch.tensor([5, 9, 11, 40, 7])
    drv = Driver(d, sampling.SamplingParams(1.0))
    drv.start([prompt], [torch.Generator().manual_seed(0)])
    drv.draft([prompt], [3])
    drv.observe([Feedback(n_accepted=0, drafted=3, next_token=3)])
    seen = []

    def never(rows):  # a stop rule that records what it is shown and never stops
        seen.append(list(rows[0]))
        return [False]

    (draft,) = drv.draft([torch.cat([prompt, torch.tensor([3])])], [3], [DraftPlan(3, never)])
    assert [len(c) for c in seen] == [1, 2, 3]  # asked before each draw, with the confidences so far
    assert torch.allclose(torch.tensor(seen[-1]), draft.probs.max(-1).values)
    assert d.model is d.runtime.model  # the contract's `model` attribute


def test_confidence_stops_early(dirs):
    d = HFModelDrafter(Options(model=str(dirs / "d")), ctx())
    prompt = torch.tensor([5, 9, 11])
    drv = Driver(d, sampling.SamplingParams(0.0))
    drv.start([prompt])
    assert drv.draft([prompt], [4], [DraftPlan(4, ConfidenceFloor(1.01))])[0].tokens.numel() == 0


def test_vocabulary_mismatch_is_a_clear_error(dirs):
    with pytest.raises(CascadeError, match="200 tokens but target 't' has 320"):
        HFModelDrafter(Options(model=str(dirs / "narrow")), ctx(320))


def test_padded_vocabularies_are_fitted_to_the_target(dirs):
    """Widths that differ by padding rows only (the tokenizer has 320 tokens) are fine."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dirs / "tok")
    wide = HFModelDrafter(Options(model=str(dirs / "wide")), ctx(320, tok))  # drafter 352 -> target 320
    narrow_target = HFModelDrafter(Options(model=str(dirs / "d")), ctx(352, tok))  # drafter 320 -> target 352
    prompt = torch.tensor([5, 9, 11])
    for d, width in ((wide, 320), (narrow_target, 352)):
        drv = Driver(d, sampling.SamplingParams(1.0), lookahead=True)
        drv.start([prompt], [torch.Generator().manual_seed(0)])
        (draft,) = drv.draft([prompt], [3])
        assert draft.probs.shape == (3, width) and draft.next_probs.shape == (width,)
        assert torch.all(draft.tokens < 320)
    drv.observe([Feedback(n_accepted=0, drafted=3)])
    (nxt,) = drv.draft([torch.cat([prompt, torch.tensor([4])])], [1])
    assert torch.all(nxt.probs[0, 320:] == 0)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(CascadeError, match="no model folder at .*nothing"):
        HFModelDrafter(Options(model=str(tmp_path / "nothing")), ctx())
    (tmp_path / "empty").mkdir()
    with pytest.raises(CascadeError, match="could not load model"):
        HFModelDrafter(Options(model=str(tmp_path / "empty")), ctx())


def test_options_are_typed():
    with pytest.raises(ValidationError):
        Options()
    with pytest.raises(ValidationError):
        Options(model="x", dtype="float8")
    assert Options(model="x").trust_remote_code is False
    assert models.resolve_model_path("no/such-dir") == "no/such-dir"  # a hub id stays as it is


def test_a_batch_drafts_each_row_as_it_would_alone(dirs):
    """Rows of different lengths, asked for different k (one for q_{k+1} only), sampled from their own streams."""
    prompts = [torch.tensor([5, 9, 11, 40, 7]), torch.tensor([3]), torch.tensor([8, 8, 2])]
    ks = [3, 0, 2]
    params = sampling.SamplingParams(1.0, top_k=20)

    def gens():
        return [torch.Generator().manual_seed(i) for i in range(3)]

    alone = []
    for p, k, g in zip(prompts, ks, gens()):
        drv = Driver(HFModelDrafter(Options(model=str(dirs / "d")), ctx()), params, lookahead=True)
        drv.start([p], [g])
        (first,) = drv.draft([p], [k])
        drv.observe([Feedback(n_accepted=min(1, first.tokens.shape[0]), drafted=first.tokens.shape[0])])
        nxt = torch.cat([p, first.tokens[:1], torch.tensor([4])])
        alone.append((first, drv.draft([nxt], [2])[0]))
    b = HFModelDrafter(Options(model=str(dirs / "d")), ctx())
    drv = Driver(b, params, lookahead=True)
    drv.start(prompts, gens())
    firsts = drv.draft(prompts, ks)
    drv.observe([Feedback(n_accepted=min(1, x.tokens.shape[0]), drafted=x.tokens.shape[0]) for x in firsts])
    nxts = [torch.cat([p, x.tokens[:1], torch.tensor([4])]) for p, x in zip(prompts, firsts)]
    seconds = drv.draft(nxts, [2] * 3)
    for (a1, a2), b1, b2 in zip(alone, firsts, seconds):
        for x, y in ((a1, b1), (a2, b2)):
            assert x.tokens.tolist() == y.tokens.tolist() and x.calls == y.calls
            assert (x.probs is None) == (y.probs is None)
            if x.probs is not None:
                assert torch.allclose(x.probs, y.probs, atol=1e-5)
            if x.next_probs is not None:
                assert torch.allclose(x.next_probs, y.next_probs, atol=1e-5)
    drv.keep([2])  # rows 0 and 1 finished: row 2 goes on alone
    assert b.runtime.rows == 1 and len(b.base) == 1


def test_a_row_asking_for_nothing_is_not_fed_and_catches_up_when_next_asked(dirs):
    """k = 0 without lookahead (the adaptive schedule's target-only steps): no forward for that row; the
    tokens emitted meanwhile are fed when it next drafts, and its q is what drafting from scratch gives."""
    d = HFModelDrafter(Options(model=str(dirs / "d")), ctx())
    prompts = [torch.tensor([5, 9, 11, 40, 7]), torch.tensor([3, 4])]
    drv = Driver(d, sampling.SamplingParams(0.0))
    drv.start(prompts)
    seen = list(d.runtime.seen)
    drafts = drv.draft(prompts, [0, 0])
    assert [x.calls for x in drafts] == [0, 0] and list(d.runtime.seen) == seen  # nothing was run
    drv.observe([None, None])
    later = [torch.cat([prompts[0], torch.tensor([12, 13, 14])]), torch.cat([prompts[1], torch.tensor([6])])]
    drafts = drv.draft(later, [1, 0])  # row 1 still asks for nothing
    assert drafts[0].calls == 1 and drafts[1].calls == 0 and drafts[1].tokens.numel() == 0
    assert d.runtime.seen[0] == later[0].shape[0] and d.runtime.seen[1] == seen[1]
    expected = torch.softmax(logits_from_scratch(d.runtime.model, later[0]), -1)
    assert torch.allclose(drafts[0].probs[0], expected, atol=1e-5)


def test_a_wrong_model_path_names_the_folders_looked_at(tmp_path):
    with pytest.raises(CascadeError, match=r"no model folder at .*/models/targt \(resolved from the policy's folder"):
        models.resolve_model_path("../models/targt", tmp_path / "policies")
    with pytest.raises(CascadeError, match=r"'/nowhere/model' is not a hub id"):
        models.resolve_model_path("/nowhere/model")
    assert models.resolve_model_path("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
