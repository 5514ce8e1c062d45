"""The n-gram prompt-lookup drafter on its own (no models needed)."""

import pytest
import torch
from pydantic import ValidationError

from cascade.drafter import DraftRequest, Feedback
from cascade_ngram import NgramDrafter, Options


def drafter(**kw) -> NgramDrafter:
    d = NgramDrafter(Options(**kw))
    d.reset(torch.tensor([0]))
    return d


def test_proposes_what_followed_the_most_recent_match():
    d = drafter(min_ngram=1, max_ngram=3)
    ctx = torch.tensor([5, 6, 7, 8, 1, 5, 6, 7, 9, 2, 5, 6, 7])
    draft = d.propose(ctx, DraftRequest(k=3))
    assert draft.tokens.tolist() == [9, 2, 5]  # latest earlier "5 6 7" is followed by 9 2 5
    assert draft.probs is None and draft.calls == 1


def test_longest_ngram_wins_and_falls_back_to_shorter():
    d = drafter(min_ngram=1, max_ngram=2)
    ctx = torch.tensor([1, 2, 3, 9, 2, 4, 1, 2])
    assert d.propose(ctx, DraftRequest(k=2)).tokens.tolist() == [3, 9]  # "1 2" -> 3 9 (not "2" -> 4)
    d = drafter(min_ngram=1, max_ngram=2)
    assert d.propose(torch.tensor([7, 8, 3, 4, 8]), DraftRequest(k=2)).tokens.tolist() == [3, 4]  # only "8" matches


def test_no_match_proposes_nothing_and_respects_min_ngram():
    assert drafter().propose(torch.tensor([1, 2, 3]), DraftRequest(k=4)).tokens.numel() == 0
    assert drafter(min_ngram=2, max_ngram=2).propose(torch.tensor([1, 5, 1]), DraftRequest(k=4)).tokens.numel() == 0


def test_incremental_index_matches_a_fresh_one():
    gen = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 6, (200,), generator=gen)
    d = drafter(min_ngram=1, max_ngram=3)
    for n in range(5, 200, 7):
        fresh = drafter(min_ngram=1, max_ngram=3)
        assert d.propose(seq[:n], DraftRequest(k=4)).tokens.tolist() == fresh.propose(seq[:n], DraftRequest(k=4)).tokens.tolist()


def test_deterministic():
    ctx = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 1, 4])
    assert drafter().propose(ctx, DraftRequest(k=5)).tokens.tolist() == drafter().propose(ctx, DraftRequest(k=5)).tokens.tolist()


def test_options_are_validated():
    with pytest.raises(ValidationError):
        Options(min_ngram=3, max_ngram=2)
    with pytest.raises(ValidationError):
        Options(min_ngram=0)
    with pytest.raises(ValidationError):
        Options(window=3)


def test_registered_through_the_entry_point():
    from cascade.plugins import build_registry

    assert build_registry().drafters["ngram"] is NgramDrafter


def test_recent_match_too_close_to_the_end_falls_back_to_the_first():
    d = drafter(min_ngram=1, max_ngram=1)
    ctx = torch.tensor([4, 1, 2, 3, 5, 4, 9, 4])  # latest earlier "4" is followed by only 2 tokens
    assert d.propose(ctx, DraftRequest(k=3)).tokens.tolist() == [1, 2, 3]
    assert drafter(min_ngram=1, max_ngram=1).propose(ctx, DraftRequest(k=2)).tokens.tolist() == [9, 4]


def test_drafts_the_engine_cut_away_are_not_learned_as_rejected():
    """A batch's shared width cuts the draft after it was proposed: positions never verified keep their
    confidence (they are neither offered nor rejected)."""
    d = NgramDrafter(Options(min_ngram=1, max_ngram=2))
    ids = torch.tensor([1, 2, 3, 4, 5, 6, 7, 1, 2])
    d.reset(ids)
    draft = d.propose(ids, DraftRequest(k=5, confidence=True))
    assert draft.tokens.tolist() == [3, 4, 5, 6, 7]
    before = [d.confidence(2, j) for j in range(5)]
    d.observe(Feedback(n_accepted=2, next_token=5, verified=2))  # both verified drafts kept; 3 cut away
    after = [d.confidence(2, j) for j in range(5)]
    assert after[0] > before[0] and after[1] > before[1] and after[2] == before[2]
    d.propose(torch.cat([ids, torch.tensor([3, 4, 5])]), DraftRequest(k=5, confidence=True))
    d.observe(Feedback(n_accepted=2, next_token=9))  # not said: all 5 were verified, the third rejected
    assert d.confidence(2, 2) < after[2]
