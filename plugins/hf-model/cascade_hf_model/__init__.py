"""Drafter plugin `hf-model`: a small HF causal LM that shares the target's tokenizer.

It keeps its own KV cache across steps: `propose` feeds only the tokens it has not
seen (the last emitted one, or two after a fully accepted block), drafts k tokens
one forward pass each, and `observe` crops the cache back to the accepted prefix.
It batches natively (`propose_rows`: one forward pass drafts the next token of every
row, each row drawing from its own random stream, over a `RaggedLM` cache with
per-row lengths); the single-row methods are its batch of one.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from cascade import models, sampling
from cascade.drafter import Draft, DrafterContext, DraftRequest, Feedback
from cascade.errors import CascadeError
from cascade.hookspecs import hookimpl
from cascade.ragged import RaggedLM

__version__ = "0.2.0"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="hub id or local folder of the drafter")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None  # None: the target's dtype
    revision: str | None = None
    trust_remote_code: bool = False
    # lean: cascade's own forward over the drafter's weights (GPT-2, Llama, Qwen2); transformers: the model's
    # own forward; auto: lean where it applies
    runtime: Literal["auto", "lean", "transformers"] = "auto"


class HFModelDrafter:
    name = "hf-model"
    deterministic = False
    prefill_on_reset = True  # False: the first propose feeds the whole prompt (or a subclass fills the cache)
    Options = Options

    def __init__(self, options: Options, ctx: DrafterContext):
        path = models.resolve_model_path(options.model, ctx.base_dir)
        dtype = ctx.dtype if options.dtype is None else models.resolve_dtype(options.dtype, ctx.device)
        model = ctx.load_model(path, dtype, ctx.device, options.trust_remote_code, options.revision)
        self.use(model, ctx, options.runtime, options.model)

    def use(self, model, ctx: DrafterContext, runtime: str, label: str) -> None:
        """Draft with `model` (checked against the target's vocabulary), run as `runtime` says."""
        self.width = model.get_output_embeddings().weight.shape[0]
        self.target_width = ctx.vocab_size
        real = len(ctx.tokenizer) if ctx.tokenizer is not None else ctx.vocab_size
        if self.width != ctx.vocab_size and min(self.width, ctx.vocab_size) < real:
            raise CascadeError(
                f"drafter {label!r} has a vocabulary of {self.width} tokens but target {ctx.target_name!r} "
                f"has {ctx.vocab_size} (its tokenizer {real}): the drafter must share the target's tokenizer"
            )
        # widths may differ by padding rows only (e.g. Qwen2.5 0.5B vs 7B); logits are fitted to the target's
        self.model = model  # the contract's optional attribute: what peers and benchmarks run
        self.lm = RaggedLM(model, runtime)
        self.params = sampling.SamplingParams()
        self.generators: list[torch.Generator | None] = [None]  # row b's random stream
        self.start = [0]  # row b's cached tokens at the last propose (its context)
        self.fed = [0]  # drafted tokens of row b fed into the cache beyond `start`

    # ------------------------------------------------------------------ one row: the batch of one

    def reset(self, prompt_ids, params, generator) -> None:
        self.reset_rows([prompt_ids], params, [generator])

    def propose(self, context: torch.Tensor, request: DraftRequest) -> Draft:
        return self.propose_rows([context], [request])[0]

    def observe(self, feedback: Feedback) -> None:
        self.observe_rows([feedback])

    # ------------------------------------------------------------------ a batch of rows

    def reset_rows(self, prompts, params, generators) -> None:
        self.lm.reset(len(prompts), self.capacity(prompts))
        self.params, self.generators = params, list(generators)
        self.start, self.fed = [0] * len(prompts), [0] * len(prompts)
        if self.prefill_on_reset and any(p.shape[0] > 1 for p in prompts):
            self.lm.forward([p[:-1] for p in prompts], last_only=True)  # prefill: all but each last prompt token

    def capacity(self, prompts) -> int:
        """Slots to allocate per row: the model's context, or the longest prompt and room to grow."""
        return (self.lm.max_positions or max(p.shape[0] for p in prompts) + 512) + 64

    def keep_rows(self, rows) -> None:
        self.lm.select(rows)
        self.generators = [self.generators[b] for b in rows]
        self.start, self.fed = [self.start[b] for b in rows], [self.fed[b] for b in rows]

    def _fit(self, logits: torch.Tensor) -> torch.Tensor:
        """Drafter logits (..., W) on the target's vocabulary (..., V): padding ids dropped or never drawn."""
        if self.width > self.target_width:
            return logits[..., : self.target_width]
        if self.width < self.target_width:
            return torch.nn.functional.pad(logits, (0, self.target_width - self.width), value=float("-inf"))
        return logits

    def propose_rows(self, contexts, requests) -> list[Draft]:
        rows = range(len(contexts))
        limit = self.lm.max_positions
        ks = [r.k for r in requests]
        look = [r.lookahead for r in requests]
        room = [True] * len(contexts)  # the row's context still fits the drafter's own
        for b, c in enumerate(contexts):
            if limit is not None and c.shape[0] + ks[b] + int(look[b]) > limit:
                ks[b], look[b] = max(0, limit - c.shape[0] - 1), False
                room[b] = c.shape[0] < limit
        # a row asking for nothing (k = 0, no lookahead) is not fed: it catches up when it next drafts
        room = [room[b] and (ks[b] > 0 or look[b]) for b in rows]
        if not any(room):
            self.start, self.fed = list(self.lm.lengths), [0] * len(contexts)  # observe_rows keeps what is there
            return [Draft(torch.empty(0, dtype=torch.long, device=c.device), None, calls=0) for c in contexts]
        # room for the tokens it has not seen (more than one after steps it skipped) and its drafts
        behind = max(c.shape[0] - n for c, n, r in zip(contexts, self.lm.seen, room) if r)
        self.lm.maybe_compact(incoming=behind + max(ks) + 1)
        fed = self.lm.seen
        unseen = [c[fed[b] :] if room[b] else c[:0] for b, c in enumerate(contexts)]
        logits = self._fit(self.lm.forward(unseen, last_only=True))  # (B, V) every row's unseen tokens at once
        self.start, self.fed = list(self.lm.lengths), [0] * len(contexts)
        q = sampling.softmax(logits)  # (B, V) T = 1, what the rules read
        tokens: list[list[torch.Tensor]] = [[] for _ in rows]
        probs: list[list[torch.Tensor]] = [[] for _ in rows]
        seen: list[list[float]] = [[] for _ in rows]  # confidences so far (a schedule's stopping rule reads them)
        last_q = list(q)  # (V,) per row: q after the row's last fed token
        drafting = [room[b] and ks[b] > 0 for b in rows]
        batch_stop = next((r.batch_stop for r in requests if r.batch_stop is not None), None)  # one for the batch
        for i in range(max(ks, default=0)):
            watch = [b for b in rows if drafting[b] and (requests[b].min_confidence > 0 or requests[b].stop
                                                         or requests[b].batch_stop is not None)]
            top = q.max(-1).values.tolist() if watch else []  # predicted acceptance of the next token, before it is drawn
            for b in watch:
                if top[b] < requests[b].min_confidence:
                    drafting[b] = False  # `confidence` schedule: stop drafting when unsure
                    continue
                seen[b].append(top[b])
                stop = requests[b].stop
                if stop is not None and stop(seen[b]):
                    drafting[b] = False  # the schedule's stopping rule (`adaptive`): one more draft does not pay
                    seen[b].pop()  # what it drafted, for the batch's rule
            if batch_stop is not None and any(drafting[b] for b in watch) and batch_stop(seen):
                for b in rows:  # the batch's shared budget (`adaptive` at B > 1): no row draws this round
                    drafting[b] = drafting[b] and requests[b].batch_stop is None
            picks = logits.argmax(-1) if self.params.greedy else None  # (B,)
            feed = [q[b, :0].long() for b in rows]  # (0,) for rows not fed this round
            for b in rows:
                if not drafting[b]:
                    continue
                x = picks[b] if picks is not None else sampling.pick(logits[b], self.params, self.generators[b])
                tokens[b].append(x)
                probs[b].append(q[b])
                if i < ks[b] - 1 or look[b]:
                    feed[b] = x.view(1)
                    self.fed[b] += 1
                if len(tokens[b]) == ks[b]:
                    drafting[b] = False
            if not any(f.numel() for f in feed):
                break
            logits = self._fit(self.lm.forward(feed, last_only=True))  # (B, V) one pass drafts for every row
            q = sampling.softmax(logits)
            for b in rows:
                if feed[b].numel():
                    last_q[b] = q[b]
        return [self._draft(tokens[b], probs[b], last_q[b], ks[b], look[b], requests[b], room[b], self.fed[b],
                            contexts[b].device) for b in rows]

    @staticmethod
    def _draft(tokens, probs, q_next, k, lookahead, request, room, fed, device) -> Draft:
        if not room:
            return Draft(torch.empty(0, dtype=torch.long, device=device), None, calls=0)
        next_probs = q_next if (lookahead or len(tokens) < k) else None
        if not tokens:
            return Draft(torch.empty(0, dtype=torch.long, device=device), None, calls=1, next_probs=next_probs)
        q_drafted = torch.stack(probs)  # (k, V)
        # predicted acceptance of token i, known before it was drawn: the drafter's own top probability
        confidence = q_drafted.max(-1).values if request.confidence else None  # (k,)
        return Draft(torch.stack(tokens), q_drafted, calls=1 + fed, next_probs=next_probs, confidence=confidence)

    def observe_rows(self, feedbacks) -> None:
        # each row's cache holds its context + the fed drafts; keep context + the accepted ones
        self.lm.rollback([s + min(f.n_accepted, fed) for s, f, fed in zip(self.start, feedbacks, self.fed)])


@hookimpl
def register_drafters(register):
    register(HFModelDrafter.name, HFModelDrafter)
