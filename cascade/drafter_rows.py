"""A drafter serving a batch of rows: the engine's one way of calling any drafter (SPEC.md "Batched decoding").

A drafter class may implement the batch methods itself (the hf-model drafter does:
one forward pass drafts a token for every row):

    reset_rows(prompts, params, generators)   # B sequences start; generators[b] is row b's random stream
    propose_rows(contexts, requests) -> [Draft]  # one draft per live row, in the batch's order
    observe_rows(feedbacks)                   # the verdict for each live row
    keep_rows(rows)                           # only these rows (indices into the live order) go on
    prompt_features_rows(states)              # optional, for drafters with wants_hidden_states (below)
    prompt_cache_rows(lm)                     # optional: the target's cache after its prefill (below)

Any other drafter is used one instance per row, built by the engine's factory
(`Engine.from_policy` builds them as it built the first): a third party's single-row
drafter batches unchanged. Where a row asks for nothing this step (`None` request:
no token wanted, no lookahead), it is not called, exactly as when it decodes alone; a
drafter with the batch methods gets `DraftRequest(k=0)` for it (and `Feedback(n_accepted=0)`) while
other rows ask, and no call at all in a step where no row asks: it catches up on the
tokens it has not seen when it is next asked (the adaptive schedule's k = 0 steps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cascade.drafter import Draft, Drafter, DraftRequest, Feedback
from cascade.errors import CascadeError
from cascade.sampling import SamplingParams

EMPTY_DRAFT = Draft(torch.empty(0, dtype=torch.long), calls=0)


def batches_natively(drafter: object) -> bool:
    return all(hasattr(drafter, m) for m in ("reset_rows", "propose_rows", "observe_rows", "keep_rows"))


class RowDrafters:
    """The batch methods over one drafter: its own, or one single-row instance per row."""

    def __init__(self, drafter: Drafter, factory: Callable[[], Drafter] | None, name: str | None):
        self.native = batches_natively(drafter)
        self.pool: list[Drafter] = [drafter]  # single-row instances, built as batches need them
        self.factory = factory
        self.name = name
        self.live: list[Drafter] = [drafter]

    def reset(self, prompts: Sequence[torch.Tensor], params: SamplingParams,
              generators: Sequence[torch.Generator | None]) -> None:
        if self.native:
            self.pool[0].reset_rows(prompts, params, generators)  # type: ignore[attr-defined]
            return
        while len(self.pool) < len(prompts):
            if self.factory is None:
                raise CascadeError(f"drafter {self.name!r} decodes one row per instance and this engine cannot "
                                   "build more: build it with Engine.from_policy to decode batches")
            self.pool.append(self.factory())
        self.live = self.pool[: len(prompts)]
        for drafter, prompt, generator in zip(self.live, prompts, generators):
            drafter.reset(prompt, params, generator)

    def prompt_features(self, states: Sequence[torch.Tensor]) -> None:
        """After reset, to a drafter that reads the target's features: each row's prompt features but the last
        token's, (P_b - 1, d), from the prefill (`prompt_features_rows` / `prompt_features`, when it has it)."""
        if self.native:
            method = getattr(self.pool[0], "prompt_features_rows", None)
            if method is not None:
                method(list(states))
            return
        for drafter, s in zip(self.live, states):
            method = getattr(drafter, "prompt_features", None)
            if method is not None:
                method(s)

    def prompt_cache(self, lm: object) -> None:
        """After reset, to a drafter with the batch methods that may start from the target's own prefill
        (its optional `prompt_cache_rows(lm)`): `lm` is the target's `RaggedLM`, holding each prompt but its last
        token, row b of the batch in row b. The drafter copies what it needs; it must not keep or change `lm`.
        Drafters used one instance per row are not given it (an instance would see every row's cache)."""
        method = getattr(self.pool[0], "prompt_cache_rows", None) if self.native else None
        if method is not None:
            method(lm)

    def propose(self, contexts: Sequence[torch.Tensor], requests: Sequence[DraftRequest | None]) -> list[Draft]:
        if self.native:
            if all(r is None for r in requests):  # nothing asked of any row: the drafter is not called
                return [EMPTY_DRAFT] * len(requests)
            asked = [r if r is not None else DraftRequest(k=0) for r in requests]
            drafts = self.pool[0].propose_rows(contexts, asked)  # type: ignore[attr-defined]
            if len(drafts) != len(contexts):
                raise CascadeError(f"drafter {self.name!r} returned {len(drafts)} drafts for {len(contexts)} rows")
            return [d if r is not None else EMPTY_DRAFT for d, r in zip(drafts, requests)]
        return [EMPTY_DRAFT if r is None else d.propose(c, r) for d, c, r in zip(self.live, contexts, requests)]

    def observe(self, feedbacks: Sequence[Feedback | None]) -> None:
        if self.native:
            if all(f is None for f in feedbacks):  # no row was drafted for: nothing to tell
                return
            self.pool[0].observe_rows([f if f is not None else Feedback(n_accepted=0) for f in feedbacks])  # type: ignore[attr-defined]
            return
        for drafter, feedback in zip(self.live, feedbacks):
            if feedback is not None:
                drafter.observe(feedback)

    def keep(self, rows: Sequence[int]) -> None:
        if self.native:
            self.pool[0].keep_rows(rows)  # type: ignore[attr-defined]
        else:
            self.live = [self.live[b] for b in rows]
