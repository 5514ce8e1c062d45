"""A drafter that is a causal LM with a KV cache: the engine drives it round by round (SPEC.md "Batched decoding").

`ModelDrafter` is the core of every model drafter (the `hf-model` and `sparse-kv` plugins subclass it):
each `step` feeds every asked row the tokens its cache has not seen (at a new draft the emitted ones,
later the token the engine drew last round) in one forward pass for the whole batch, and returns the
logits of the next position; `observe` crops each row's cache back to its accepted prefix. The cache is
a `RaggedLM` (per-row lengths and true positions, holes masked out): it batches natively. A subclass
builds its model and calls `use(model, context, kind, label)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cascade.drafter import DrafterBase, DrafterContext, DraftRound, DraftStep, Feedback
from cascade.errors import CascadeError
from cascade.runtime.ragged import RaggedLM


class ModelDrafter(DrafterBase):
    deterministic = False
    batched = True
    joins_rows = True
    prefill_on_start = True  # False: the first step feeds the whole prompt (or a subclass fills the cache)

    def use(self, model: Any, ctx: DrafterContext, kind: str, label: str) -> None:
        """Draft with `model` (checked against the target's vocabulary), run as `kind` says (auto, lean or
        transformers)."""
        self.width = model.get_output_embeddings().weight.shape[0]
        self.target_width = ctx.vocab_size
        real = len(ctx.tokenizer) if ctx.tokenizer is not None else ctx.vocab_size
        if self.width != ctx.vocab_size and min(self.width, ctx.vocab_size) < real:
            raise CascadeError(
                f"drafter {label!r} has a vocabulary of {self.width} tokens but target {ctx.target_name!r} "
                f"has {ctx.vocab_size} (its tokenizer {real}): the drafter must share the target's tokenizer"
            )
        # widths may differ by padding rows only (e.g. Qwen2.5 0.5B vs 7B); logits are fitted to the target's
        self.model = model  # what peers and benchmarks run
        self.runtime = RaggedLM(model, kind)
        self.max_positions = self.runtime.max_positions  # the engine drafts no further than the drafter's context
        self.base = [0]  # row b's cached tokens when its current draft began: its verified context

    # ------------------------------------------------------------------ the contract

    def start(self, prompts: Sequence[torch.Tensor]) -> None:
        self.runtime.reset(len(prompts), self.capacity(prompts))
        self.base = [0] * len(prompts)
        if self.prefill_on_start and any(p.shape[0] > 1 for p in prompts):
            self.runtime.forward([p[:-1] for p in prompts], last_only=True)  # prefill: all but each last prompt token

    def capacity(self, prompts: Sequence[torch.Tensor]) -> int:
        """Slots to allocate per row: the model's context, or the longest prompt and room to grow."""
        return (self.runtime.max_positions or max(p.shape[0] for p in prompts) + 512) + 64

    def keep(self, rows: Sequence[int]) -> None:
        self.runtime.select(rows)
        self.base = [self.base[b] for b in rows]

    def join(self, prompts: Sequence[torch.Tensor]) -> None:
        """Rows join the running batch: their prompts but the last token prefilled apart, then copied in after the
        live rows (`RaggedLM.absorb`; a drafter that prefills nothing at start lets its first `step` feed them)."""
        joining = self.runtime.sibling(len(prompts), max(p.shape[0] for p in prompts) + 1)
        if self.prefill_on_start and self.runtime.width and any(p.shape[0] > 1 for p in prompts):
            joining.forward([p[:-1] for p in prompts], last_only=True)
        self.runtime.absorb(joining)
        self.base = self.base + [0] * len(prompts)

    def step(self, ask: DraftRound) -> DraftStep:
        """One forward pass feeds every asked row what its cache has not seen; the logits of what comes next."""
        seen = self.runtime.seen
        feed = [ask.contexts[0][:0]] * self.runtime.rows  # (0,): rows not asked are not fed
        for b, c in zip(ask.rows, ask.contexts):
            feed[b] = c[seen[b] :]  # a new draft: the tokens emitted since (more after steps it skipped); else x_j
        if ask.drafted == 0:  # room for what is fed now and the draft's later tokens
            self.runtime.maybe_compact(incoming=max(feed[b].shape[0] for b in ask.rows) + max(ask.limits) + 1)
        logits = self._fit(self.runtime.forward(feed, last_only=True))  # (B, V) every asked row's next position
        if ask.drafted == 0:
            for b in ask.rows:
                self.base[b] = self.runtime.lengths[b]
        return DraftStep(logits=logits[list(ask.rows)])

    def observe(self, feedbacks: Sequence[Feedback | None]) -> None:
        # each drafted row's cache holds its context + the drafts fed; keep the context + the accepted ones
        lengths = self.runtime.lengths
        self.runtime.rollback(
            [n if f is None else min(n, s + f.n_accepted) for n, s, f in zip(lengths, self.base, feedbacks)]
        )

    def _fit(self, logits: torch.Tensor) -> torch.Tensor:
        """Drafter logits (..., W) on the target's vocabulary (..., V): padding ids dropped or never drawn."""
        if self.width > self.target_width:
            return logits[..., : self.target_width]
        if self.width < self.target_width:
            return torch.nn.functional.pad(logits, (0, self.target_width - self.width), value=float("-inf"))
        return logits
