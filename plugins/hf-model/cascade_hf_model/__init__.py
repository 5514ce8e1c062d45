"""Drafter plugin `hf-model`: a small HF causal LM that shares the target's tokenizer.

It keeps its own KV cache across steps: `propose` feeds only the tokens it has not
seen (the last emitted one, or two after a fully accepted block), drafts k tokens
one forward pass each, and `observe` crops the cache back to the accepted prefix.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from cascade import models, sampling
from cascade.drafter import Draft, DrafterContext, DraftRequest, Feedback
from cascade.errors import CascadeError
from cascade.hookspecs import hookimpl

__version__ = "0.2.0"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="hub id or local folder of the drafter")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None  # None: the target's dtype
    revision: str | None = None
    trust_remote_code: bool = False


class HFModelDrafter:
    name = "hf-model"
    deterministic = False
    Options = Options

    def __init__(self, options: Options, ctx: DrafterContext):
        path = models.resolve_model_path(options.model, ctx.base_dir)
        dtype = ctx.dtype if options.dtype is None else models.resolve_dtype(options.dtype, ctx.device)
        model = ctx.load_model(path, dtype, ctx.device, options.trust_remote_code, options.revision)
        self.width = model.get_output_embeddings().weight.shape[0]
        self.target_width = ctx.vocab_size
        real = len(ctx.tokenizer) if ctx.tokenizer is not None else ctx.vocab_size
        if self.width != ctx.vocab_size and min(self.width, ctx.vocab_size) < real:
            raise CascadeError(
                f"drafter {options.model!r} has a vocabulary of {self.width} tokens but target {ctx.target_name!r} "
                f"has {ctx.vocab_size} (its tokenizer {real}): the drafter must share the target's tokenizer"
            )
        # widths may differ by padding rows only (e.g. Qwen2.5 0.5B vs 7B); logits are fitted to the target's
        self.model = model  # the contract's optional attribute: what peers and benchmarks run
        self.lm = models.CachedLM(model)
        self.params = sampling.SamplingParams()
        self.generator: torch.Generator | None = None
        self.start = 0  # context length at the last propose()
        self.fed = 0  # drafted tokens fed into the cache beyond `start`

    def reset(self, prompt_ids, params, generator) -> None:
        self.lm.reset()
        self.params, self.generator = params, generator
        if prompt_ids.shape[0] > 1:
            self.lm.forward(prompt_ids[:-1], last_only=True)  # prefill: all but the last prompt token

    def _fit(self, logits: torch.Tensor) -> torch.Tensor:
        """Drafter logits (W,) on the target's vocabulary (V,): padding ids dropped or never drawn."""
        if self.width > self.target_width:
            return logits[: self.target_width]
        if self.width < self.target_width:
            return torch.nn.functional.pad(logits, (0, self.target_width - self.width), value=float("-inf"))
        return logits

    def propose(self, context: torch.Tensor, request: DraftRequest) -> Draft:
        k, min_confidence, lookahead = request.k, request.min_confidence, request.lookahead
        self.start, self.fed = context.shape[0], 0
        limit = self.lm.max_positions
        if limit is not None and context.shape[0] + k + int(lookahead) > limit:  # the drafter's own context
            k, lookahead = max(0, limit - context.shape[0] - 1), False
            if context.shape[0] >= limit:
                return Draft(torch.empty(0, dtype=torch.long, device=context.device), None, calls=0)
        logits = self._fit(self.lm.forward(context[self.lm.length :], last_only=True)[-1])  # (V,) unseen tokens at once
        tokens: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        q = sampling.softmax(logits)  # (V,) T = 1, what the rules read
        seen: list[float] = []  # confidences of the tokens drawn so far (a schedule's stopping rule reads them)
        for i in range(k):
            if min_confidence > 0 or request.stop is not None:
                c = q.max().item()  # predicted acceptance of the next token, before it is drawn
                if c < min_confidence:
                    break  # `confidence` schedule: stop drafting when unsure
                seen.append(c)
                if request.stop is not None and request.stop(seen):
                    break  # the schedule's stopping rule (`adaptive`): one more draft does not pay
            x = sampling.pick(logits, self.params, self.generator)  # 0-d
            tokens.append(x)
            probs.append(q)
            if i < k - 1 or lookahead:
                logits = self._fit(self.lm.forward(x.view(1))[-1])
                self.fed += 1
                q = sampling.softmax(logits)
        next_probs = q if (lookahead or len(tokens) < k) else None
        if not tokens:
            return Draft(torch.empty(0, dtype=torch.long, device=context.device), None, calls=1, next_probs=next_probs)
        q_drafted = torch.stack(probs)  # (k, V)
        # predicted acceptance of token i, known before it was drawn: the drafter's own top probability
        confidence = q_drafted.max(-1).values if request.confidence else None  # (k,)
        return Draft(torch.stack(tokens), q_drafted, calls=1 + self.fed, next_probs=next_probs, confidence=confidence)

    def observe(self, feedback: Feedback) -> None:
        # the cache holds context + the fed drafts; keep context + the accepted ones
        self.lm.rollback(self.start + min(feedback.n_accepted, self.fed))


@hookimpl
def register_drafters(register):
    register(HFModelDrafter.name, HFModelDrafter)
