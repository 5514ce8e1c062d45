"""Drafter plugin `ngram`: prompt lookup (Saxena 2023) over the prompt and the generated text.

Find the most recent earlier occurrence of the last n tokens (n from max_ngram down
to min_ngram) and propose the tokens that followed it. A match close to the end reads
on into the tokens it predicts itself (after "4 9 4" the match "4" → "9 4" goes on "9
4 ..."), so a loop keeps drafting and the draft never depends on how many tokens were
asked for: a draft of 2 is the first 2 tokens of a draft of 8. Deterministic: the draft
carries no probabilities, so SPEC.md treats q as one-hot. An index of n-gram -> latest
end position is updated incrementally, so a lookup is O(1). One instance serves every
row of a batch (`batched`), each row with its own index and history (`Lookup`); the engine asks
for one position per round, and a draft's match is looked up at its first.

With each token it gives its confidence (the `adaptive` schedule reads it): the predicted
acceptance of draft position j from the match length n that proposed it and this
sequence's history: the posterior mean (accepted + 2) / (offered + 3) of drafts at
position j of an n-token match whose earlier positions were accepted (prior 2/3), older
verifications weighing less (×0.95 each), so a position the schedule stopped offering
drifts back to the prior and is tried again. It depends only on what was verified before
the draft, never on the draft's own verdict.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade import DrafterBase, DrafterContext, DraftRound, DraftStep, Feedback, hookimpl

__version__ = "0.3.0"
PRIOR_ACCEPTED, PRIOR_OFFERED = 2.0, 3.0  # confidence before any history: 2/3
FORGET = 0.95  # per verification, the weight left to older history (an untried position drifts back to 2/3)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_ngram: int = Field(1, ge=1, le=16)  # shortest suffix worth matching
    max_ngram: int = Field(3, ge=1, le=16)  # longest suffix tried first

    @model_validator(mode="after")
    def _order(self):
        if self.min_ngram > self.max_ngram:
            raise ValueError(f"min_ngram ({self.min_ngram}) must be <= max_ngram ({self.max_ngram})")
        return self


class Lookup:
    """One row's lookup: its n-gram index, its acceptance history and the current draft's match."""

    def __init__(self, options: Options):
        self.options = options
        self.ids: list[int] = []
        self.index: dict[tuple[int, ...], int] = {}  # n-gram -> latest end position (exclusive)
        self.indexed = 0  # n-grams ending at positions <= indexed are in the index
        self.offered: dict[tuple[int, int], float] = {}  # (match length, position) -> drafts verified there
        self.accepted: dict[tuple[int, int], float] = {}  # ... and accepted (forgetful counts)
        self.current: tuple[int, list[int]] = (0, [])  # the draft's match: (its length n, the tokens it offers)

    def _extend(self, context: torch.Tensor) -> None:
        if context.shape[0] > len(self.ids):
            self.ids.extend(context[len(self.ids) :].tolist())
        # index every n-gram that ends before the current end (the suffix itself is the query)
        lo, hi = self.options.min_ngram, self.options.max_ngram
        for end in range(self.indexed + 1, len(self.ids)):
            for n in range(lo, min(hi, end) + 1):
                key = tuple(self.ids[end - n : end])
                self.index[key] = end
        self.indexed = max(self.indexed, len(self.ids) - 1)

    def lookup(self, k: int) -> list[int]:
        return self.match(k)[1]

    def match(self, k: int) -> tuple[int, list[int]]:
        """(the length n of the matched suffix, the k tokens that followed its latest occurrence, read on into
        the ones predicted when the context ends first); (0, []) for none."""
        for n in range(self.options.max_ngram, self.options.min_ngram - 1, -1):
            if n > len(self.ids):
                continue
            end = self.index.get(tuple(self.ids[-n:]))
            if end is None:
                continue
            period = len(self.ids) - end  # the match ends this far back: what follows repeats with this period
            return n, [self.ids[end + i % period] for i in range(k)]
        return 0, []

    def offer(self, context: torch.Tensor, limit: int, j: int) -> tuple[int, float]:
        """Token j of this draft's match (-1: the match has no more) and its confidence; j = 0 starts a draft."""
        if j == 0:  # a new draft: the context is all verified; look up the match for up to `limit` tokens
            self._extend(context)
            self.current = self.match(limit)
        n, tokens = self.current
        return (tokens[j] if j < len(tokens) else -1), self.confidence(n, j)

    def confidence(self, n: int, j: int) -> float:
        """Predicted acceptance of draft position j (0-based) of an n-token match, given j − 1 accepted."""
        return (self.accepted.get((n, j), 0) + PRIOR_ACCEPTED) / (self.offered.get((n, j), 0) + PRIOR_OFFERED)

    def observe(self, feedback: Feedback) -> None:
        # rejected tokens never entered self.ids: `offer` reads the emitted context. Learn the acceptance
        # of the positions that were tried: all up to the first rejection
        n = self.current[0]
        self.offered = {key: FORGET * v for key, v in self.offered.items()}  # every verification ages the history
        self.accepted = {key: FORGET * v for key, v in self.accepted.items()}
        for j in range(min(feedback.n_accepted + 1, feedback.drafted)):
            self.offered[n, j] = self.offered.get((n, j), 0) + 1
            self.accepted[n, j] = self.accepted.get((n, j), 0) + int(j < feedback.n_accepted)
        self.current = (n, [])


class NgramDrafter(DrafterBase):
    """Every row of a batch in one instance (`batched`): one call per round answers every asked row."""

    name = "ngram"
    deterministic = True
    batched = True
    joins_rows = True
    Options = Options

    def __init__(self, options: Options, ctx: DrafterContext | None = None):
        self.options = options
        self.rows: list[Lookup] = []

    def start(self, prompts) -> None:
        self.rows = [Lookup(self.options) for _ in prompts]

    def step(self, ask: DraftRound) -> DraftStep:
        """Token `drafted` of each asked row's match (-1: its match has no more), with its confidence."""
        offers = [self.rows[b].offer(c, limit, ask.drafted) for b, c, limit in zip(ask.rows, ask.contexts, ask.limits)]
        device = ask.contexts[0].device
        return DraftStep(
            tokens=torch.tensor([t for t, _ in offers], device=device),
            confidence=torch.tensor([c for _, c in offers], device=device),
            calls=int(ask.drafted == 0),  # one lookup per draft; later rounds read the match
        )

    def observe(self, feedbacks) -> None:
        for row, feedback in zip(self.rows, feedbacks):
            if feedback is not None:
                row.observe(feedback)

    def keep(self, rows) -> None:
        self.rows = [self.rows[b] for b in rows]

    def join(self, prompts) -> None:
        self.rows = self.rows + [Lookup(self.options) for _ in prompts]


@hookimpl
def register_drafters(register):
    register(NgramDrafter.name, NgramDrafter)
