"""The n-gram prompt-lookup drafter on its own (no models needed)."""

import pytest
import torch
from pydantic import ValidationError

from cascade.drafter import Feedback
from cascade.schedules.base import DraftPlan
from cascade.testing import Driver
from cascade_ngram import NgramDrafter, Options


def drafter(**kw) -> NgramDrafter:
    d = NgramDrafter(Options(**kw))
    d.start([torch.tensor([0])])
    return d


def propose(d: NgramDrafter, context: torch.Tensor, k: int, stop=None):
    """Up to k tokens after `context`, drawn as the engine draws them (`stop`: a stop rule over confidences)."""
    return Driver(d).draft([context], [k], None if stop is None else [DraftPlan(k, stop)])[0]


def test_proposes_what_followed_the_most_recent_match():
    d = drafter(min_ngram=1, max_ngram=3)
    ctx = torch.tensor([5, 6, 7, 8, 1, 5, 6, 7, 9, 2, 5, 6, 7])
    draft = propose(d, ctx, 3)
    assert draft.tokens.tolist() == [9, 2, 5]  # latest earlier "5 6 7" is followed by 9 2 5
    assert draft.probs is None and draft.calls == 1


def test_longest_ngram_wins_and_falls_back_to_shorter():
    d = drafter(min_ngram=1, max_ngram=2)
    ctx = torch.tensor([1, 2, 3, 9, 2, 4, 1, 2])
    assert propose(d, ctx, 2).tokens.tolist() == [3, 9]  # "1 2" -> 3 9 (not "2" -> 4)
    d = drafter(min_ngram=1, max_ngram=2)
    assert propose(d, torch.tensor([7, 8, 3, 4, 8]), 2).tokens.tolist() == [3, 4]  # only "8" matches


def test_no_match_proposes_nothing_and_respects_min_ngram():
    assert propose(drafter(), torch.tensor([1, 2, 3]), 4).tokens.numel() == 0
    assert propose(drafter(min_ngram=2, max_ngram=2), torch.tensor([1, 5, 1]), 4).tokens.numel() == 0


def test_incremental_index_matches_a_fresh_one():
    gen = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 6, (200,), generator=gen)
    d = drafter(min_ngram=1, max_ngram=3)
    for n in range(5, 200, 7):
        fresh = drafter(min_ngram=1, max_ngram=3)
        assert propose(d, seq[:n], 4).tokens.tolist() == propose(fresh, seq[:n], 4).tokens.tolist()


def test_deterministic():
    ctx = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 1, 4])
    assert propose(drafter(), ctx, 5).tokens.tolist() == propose(drafter(), ctx, 5).tokens.tolist()


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


def test_a_match_near_the_end_reads_on_into_what_it_predicts_whatever_k():
    """The latest earlier "4" is followed by only 2 tokens ("9 4"): the draft reads on into the tokens it predicts
    (the text repeats "4 9"), and a shorter request is the start of a longer one, never another occurrence."""
    ctx = torch.tensor([4, 1, 2, 3, 5, 4, 9, 4])
    drafts = {k: propose(drafter(min_ngram=1, max_ngram=1), ctx, k).tokens.tolist() for k in (1, 2, 3, 6)}
    assert drafts[6] == [9, 4, 9, 4, 9, 4]
    assert all(drafts[k] == drafts[6][:k] for k in drafts)
    loop = torch.tensor([7, 1, 2, 3, 1, 2, 3, 1, 2])  # "1 2" last seen 3 back: period 3
    assert propose(drafter(min_ngram=2, max_ngram=2), loop, 7).tokens.tolist() == [3, 1, 2, 3, 1, 2, 3]


def test_positions_the_engine_did_not_draw_are_not_learned_as_rejected():
    """A stop rule ends the draft before the match runs out: positions never drawn keep their confidence (they
    are neither offered nor rejected); the confidences come with the tokens, before each is drawn."""
    d = NgramDrafter(Options(min_ngram=1, max_ngram=2))
    ids = torch.tensor([1, 2, 3, 4, 5, 6, 7, 1, 2])
    d.start([ids])
    before = [d.rows[0].confidence(2, j) for j in range(5)]
    shown = []

    def two(rows):  # stops before the third draw
        shown.append(list(rows[0]))
        return [len(rows[0]) > 2]

    draft = propose(d, ids, 5, two)
    assert draft.tokens.tolist() == [3, 4] and shown[-1] == pytest.approx(before[:3])
    d.observe([Feedback(n_accepted=2, drafted=2, next_token=5)])  # both drawn drafts kept; the third never drawn
    after = [d.rows[0].confidence(2, j) for j in range(5)]
    assert after[0] > before[0] and after[1] > before[1] and after[2] == before[2]
    assert propose(d, torch.cat([ids, torch.tensor([3, 4, 5])]), 5).tokens.tolist() == [6, 7, 1, 2, 3]
    d.observe([Feedback(n_accepted=2, drafted=5, next_token=9)])  # all 5 drawn and verified, the third rejected
    assert d.rows[0].confidence(2, 2) < after[2]
