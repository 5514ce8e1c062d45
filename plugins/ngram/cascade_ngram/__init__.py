"""Drafter plugin `ngram`: prompt lookup (Saxena 2023) over the prompt and the generated text.

Find an earlier occurrence of the last n tokens (n from max_ngram down to
min_ngram) and propose the tokens that followed it: the most recent occurrence
when k tokens follow it, else the first one (a recent match close to the end
would propose a truncated block). Deterministic: the draft carries no
probabilities, so SPEC.md treats q as one-hot. Indexes of n-gram -> first and
latest end positions are updated incrementally, so a lookup is O(1).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.drafter import Draft, DrafterContext, DraftRequest, Feedback
from cascade.hookspecs import hookimpl

__version__ = "0.2.0"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_ngram: int = Field(1, ge=1, le=16)  # shortest suffix worth matching
    max_ngram: int = Field(3, ge=1, le=16)  # longest suffix tried first

    @model_validator(mode="after")
    def _order(self):
        if self.min_ngram > self.max_ngram:
            raise ValueError(f"min_ngram ({self.min_ngram}) must be <= max_ngram ({self.max_ngram})")
        return self


class NgramDrafter:
    name = "ngram"
    deterministic = True
    Options = Options

    def __init__(self, options: Options, ctx: DrafterContext | None = None):
        self.options = options
        self.ids: list[int] = []
        self.index: dict[tuple[int, ...], int] = {}  # n-gram -> latest end position (exclusive)
        self.first: dict[tuple[int, ...], int] = {}  # n-gram -> first end position
        self.indexed = 0  # n-grams ending at positions <= indexed are in the index

    def reset(self, prompt_ids, params=None, generator=None) -> None:
        self.ids, self.index, self.first, self.indexed = [], {}, {}, 0

    def _extend(self, context: torch.Tensor) -> None:
        if context.shape[0] > len(self.ids):
            self.ids.extend(context[len(self.ids) :].tolist())
        # index every n-gram that ends before the current end (the suffix itself is the query)
        lo, hi = self.options.min_ngram, self.options.max_ngram
        for end in range(self.indexed + 1, len(self.ids)):
            for n in range(lo, min(hi, end) + 1):
                key = tuple(self.ids[end - n : end])
                self.index[key] = end
                self.first.setdefault(key, end)
        self.indexed = max(self.indexed, len(self.ids) - 1)

    def lookup(self, k: int) -> list[int]:
        for n in range(self.options.max_ngram, self.options.min_ngram - 1, -1):
            if n > len(self.ids):
                continue
            key = tuple(self.ids[-n:])
            end = self.index.get(key)
            if end is None:
                continue
            if end + k > len(self.ids):  # too close to the end for a full block: the first occurrence
                end = self.first[key]
            return self.ids[end : end + k]
        return []

    def propose(self, context: torch.Tensor, request: DraftRequest) -> Draft:
        self._extend(context)
        return Draft(torch.tensor(self.lookup(request.k), dtype=torch.long, device=context.device), None, calls=1)

    def observe(self, feedback: Feedback) -> None:
        pass  # rejected tokens never entered self.ids: propose() reads the emitted context


@hookimpl
def register_drafters(register):
    register(NgramDrafter.name, NgramDrafter)
