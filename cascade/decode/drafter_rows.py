"""A drafter serving a batch of rows: the engine's one way of calling any drafter (SPEC.md "Batched decoding").

A drafter class that declares `batched = True` drafts every row itself (the hf-model drafter: one
forward pass for all rows, over a `RaggedLM` cache with per-row lengths). Any other drafter is used
one instance per row, built by the engine's factory (`Engine.from_policy` builds them as it built the
first), each called as a batch of one: a third party's single-row drafter batches unchanged.

Rows nothing is asked of are not called: a round asks only the rows still drafting, and a step in
which no row drafts calls no drafter at all (nor `observe` after it): a drafter catches a row up on
the tokens it has not seen when that row is next asked (the adaptive schedule's k = 0 steps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cascade.drafter import Drafter, DraftRound, DraftStep, Feedback, TreeDraft, TreeRound
from cascade.errors import CascadeError, PluginError


class RowDrafters:
    """The batch calls over one drafter: its own, or one single-row instance per row."""

    def __init__(self, drafter: Drafter, factory: Callable[[], Drafter] | None, name: str | None):
        self.batched = drafter.batched
        self.pool: list[Drafter] = [drafter]  # single-row instances, built as batches need them
        self.factory = factory
        self.name = name
        self.live: list[Drafter] = [drafter]

    @property
    def proposes_trees(self) -> bool:
        return self.pool[0].proposes_trees

    def start(self, prompts: Sequence[torch.Tensor]) -> None:
        if self.batched:
            self.pool[0].start(prompts)
            return
        while len(self.pool) < len(prompts):
            if self.factory is None:
                raise CascadeError(
                    f"drafter {self.name!r} decodes one row per instance and this engine cannot "
                    "build more: build it with Engine.from_policy to decode batches"
                )
            self.pool.append(self.factory())
        self.live = self.pool[: len(prompts)]
        for drafter, prompt in zip(self.live, prompts):
            drafter.start([prompt])

    @property
    def joins_rows(self) -> bool:
        """Whether rows can join while others decode: always, one instance per row; a batched drafter declares it."""
        return not self.batched or self.pool[0].joins_rows

    def join(self, prompts: Sequence[torch.Tensor]) -> None:
        """Rows start after the live ones (a running batch): a batched drafter's `join`, or an instance each."""
        if self.batched:
            if not self.pool[0].joins_rows:
                raise CascadeError(f"drafter {self.name!r} takes no rows joining a running batch (joins_rows)")
            self.pool[0].join(prompts)
            return
        free = [d for d in self.pool if all(d is not live for live in self.live)]
        while len(free) < len(prompts):
            if self.factory is None:
                raise CascadeError(
                    f"drafter {self.name!r} decodes one row per instance and this engine cannot "
                    "build more: build it with Engine.from_policy to decode batches"
                )
            drafter = self.factory()
            self.pool.append(drafter)
            free.append(drafter)
        for drafter, prompt in zip(free, prompts):
            drafter.start([prompt])
        self.live = self.live + free[: len(prompts)]

    def target_features(self, states: Sequence[torch.Tensor]) -> None:
        """After start (or join), to a drafter that `reads_target_features`: the started rows' prompt features but
        the last token's, (P_b - 1, d), from the prefill (the last len(states) live rows)."""
        if not self.pool[0].reads_target_features:
            return
        if self.batched:
            self.pool[0].target_features(list(states))
            return
        for drafter, s in zip(self.live[len(self.live) - len(states) :], states):
            drafter.target_features([s])

    def adopt_target_cache(self, lm: object) -> None:
        """After start, to a batched drafter that `adopts_target_cache`: the target's `RaggedLM` holding each prompt
        but its last token, row b in row b. Drafters used one instance per row are not given it (an instance would
        see every row's cache)."""
        if self.batched and self.pool[0].adopts_target_cache:
            self.pool[0].adopt_target_cache(lm)

    def step(self, ask: DraftRound) -> tuple[DraftStep, list[int]]:
        """One round over the asked rows: the drafter's answer and the calls each asked row took part in."""
        if self.batched:
            step = self.pool[0].step(ask)
            return step, [step.calls] * len(ask.rows)
        steps = [
            self.live[b].step(DraftRound([c], [0], ask.drafted, [limit]))
            for c, b, limit in zip(ask.contexts, ask.rows, ask.limits)
        ]
        return _stacked(steps, self.name), [s.calls for s in steps]

    def propose_trees(self, ask: TreeRound) -> list[TreeDraft]:
        if self.batched:
            trees = self.pool[0].propose_trees(ask)
        else:
            trees = [
                d.propose_trees(TreeRound([c], [k], ask.params, [g]))[0] if k > 0 else TreeDraft(c[:0], c[:0], calls=0)
                for d, c, k, g in zip(self.live, ask.contexts, ask.budgets, ask.generators)
            ]
        if len(trees) != len(ask.contexts):
            raise PluginError(f"drafter {self.name!r} returned {len(trees)} trees for {len(ask.contexts)} rows")
        return trees

    def observe(self, feedbacks: Sequence[Feedback | None]) -> None:
        if all(f is None for f in feedbacks):  # no row was drafted for: nothing to tell
            return
        if self.batched:
            self.pool[0].observe(feedbacks)
            return
        for drafter, feedback in zip(self.live, feedbacks):
            if feedback is not None:
                drafter.observe([feedback])

    def keep(self, rows: Sequence[int]) -> None:
        if self.batched:
            self.pool[0].keep(rows)
        else:
            self.live = [self.live[b] for b in rows]


def _stacked(steps: list[DraftStep], name: str | None) -> DraftStep:
    """Single-row instances' answers as one round's."""

    def cat(parts: list[torch.Tensor | None], what: str) -> torch.Tensor | None:
        if all(p is None for p in parts):
            return None
        if any(p is None for p in parts):
            raise PluginError(f"drafter {name!r} gave {what} for some rows of a round and not for others")
        return torch.cat([p.reshape(1, *p.shape[1:]) for p in parts])  # type: ignore[union-attr]

    return DraftStep(
        cat([s.logits for s in steps], "logits"),
        cat([s.tokens for s in steps], "tokens"),
        cat([s.confidence for s in steps], "confidences"),
        max((s.calls for s in steps), default=0),
    )
