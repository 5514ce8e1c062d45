"""Drafter plugin `sparse-kv`: self-speculation over a sparse KV cache (MagicDec; SPEC.md "Self-speculation
with a sparse cache").

The drafter is the target itself (its weights handed over through `DrafterContext.target_model`,
never loaded twice), or the model `model` names, reading only a sparse view of the context: the
`sink` first tokens and the `window` latest ones (StreamingLLM), and with `snap: N` the N tokens of the
prompt that its last `observe` tokens attend to most (SnapKV, chosen once at prefill, one set for every
layer and head). Its own KV cache keeps exactly
those: before each draft the tokens between them are evicted for good (their slots become holes
and are compacted away), and every later token keeps its true position. So a drafting step reads
at most sink + window + the block's tokens from its cache, whatever the context's length; the
verification reads the full cache and keeps decoding exact. With a window at least as long as the
context nothing is evicted and the drafter is the target: it drafts the target's own greedy tokens.

It drafts, batches and rolls back as every model drafter does (it is cascade's `ModelDrafter`, over
another cache). Drafting with the target's weights it never prefills: the engine hands it the
target's cache after its prefill (`adopt_target_cache`) and it copies each row's sink and window from
it (MagicDec shares the prefill the same way), so self-speculation costs no second pass over a long
prompt.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade import (
    CascadeError,
    DrafterContext,
    DraftRound,
    DraftStep,
    ModelDrafter,
    hookimpl,
    resolve_model_path,
)

__version__ = "0.4.0"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sink: int = Field(4, ge=0, le=4096, description="first tokens always kept (attention sinks)")
    window: int = Field(256, ge=1, le=65536, description="latest tokens kept")
    # 256, not 64: it beat 64 in every cell of the measured grid (docs/results/self-spec/grid.md)
    snap: int = Field(
        0,
        ge=0,
        le=65536,
        description="also keep this many prompt tokens chosen by SnapKV: those "
        "the prompt's last `observe` tokens attend to most",
    )
    observe: int = Field(
        16,
        ge=1,
        le=1024,
        description="SnapKV's observation window: the prompt's last tokens whose attention chooses the `snap` tokens",
    )
    model: str | None = Field(None, min_length=1, description="draft with this model instead of the target")
    runtime: Literal["auto", "lean", "transformers"] = "auto"

    @model_validator(mode="after")
    def _snap_needs_the_targets_prefill(self) -> Options:
        if self.snap and self.model is not None:
            raise ValueError("snap chooses tokens from the target's prefill: it needs self-speculation (no model)")
        if self.snap and self.runtime == "transformers":
            raise ValueError("snap reads attention scores from cascade's lean forward: use runtime auto or lean")
        return self


POOL = 5  # SnapKV pools the scores over neighbours, so that it keeps whole phrases rather than lone tokens


class SparseKVDrafter(ModelDrafter):
    name = "sparse-kv"
    adopts_target_cache = True
    Options = Options

    def __init__(self, options: Options, ctx: DrafterContext):
        if options.model is not None:
            path = resolve_model_path(options.model, ctx.base_dir)
            model = ctx.load_model(path, ctx.dtype, ctx.device)
        elif ctx.target_model is not None:
            model = ctx.target_model  # self-speculation: the target's own weights, shared
        else:
            raise CascadeError(
                "drafter 'sparse-kv' drafts with the target's weights, but this engine gave it no "
                "target (DrafterContext.target_model): name one with options.model"
            )
        self.sink, self.window, self.snap, self.observe_window = (
            options.sink,
            options.window,
            options.snap,
            options.observe,
        )
        self.context_tokens = options.sink + options.snap + options.window  # the most a drafting step reads
        self.use(model, ctx, options.runtime, options.model or ctx.target_name)
        # drafting with the target's weights, the target's prefill already holds our keys and values
        self.prefill_on_start = model is not ctx.target_model
        self.prompts: list = []
        self.kept = [0]  # row b's SnapKV picks, kept right after its sink

    def start(self, prompts) -> None:
        super().start(prompts)
        self.prompts, self.kept = list(prompts), [0] * len(prompts)

    def keep(self, rows) -> None:
        super().keep(rows)
        self.prompts, self.kept = [self.prompts[b] for b in rows], [self.kept[b] for b in rows]

    def join(self, prompts) -> None:
        """Joined rows read their whole prompt at their first draft (no target cache is handed over), then
        their sparse view as any row."""
        super().join(prompts)
        self.prompts, self.kept = self.prompts + list(prompts), self.kept + [0] * len(prompts)

    def capacity(self, prompts) -> int:
        if self.prefill_on_start:
            return super().capacity(prompts)
        return self.context_tokens + 128  # the view, a block and the holes compaction leaves (grown if ever short)

    def adopt_target_cache(self, lm) -> None:
        """The target's cache after its prefill: keep each row's sparse view of it, never prefill again."""
        if self.prefill_on_start or not (lm.slotted and self.runtime.slotted) or lm.model is not self.model:
            return  # another model's cache, or one we cannot copy: our first step prefills (lazily)
        views = [self.view(n) for n in lm.lengths]
        if self.snap:
            views = self.snapkv(lm, views)
        self.kept = [len(v) - len(self.view(n)) for v, n in zip(views, lm.lengths)]
        self.runtime.adopt(lm, views)

    def view(self, n: int) -> list[int]:
        """Indices of the tokens of an n-token context the sparse view keeps: the sink, then the window."""
        return sorted(set(range(min(self.sink, n))) | set(range(max(0, n - self.window), n)))

    def snapkv(self, lm, views: list[list[int]]) -> list[list[int]]:
        """SnapKV at prefill: add to each row's view the `snap` tokens between its sink and its window that the
        prompt's last `observe` tokens attend to most (summed over layers, heads and those queries, pooled over
        POOL neighbours). One forward of `observe` tokens per row over the target's cache, rolled back."""
        w = [min(self.observe_window, n + 1) for n in lm.lengths]  # row b's last w[b] prompt tokens: w[b] - 1 cached
        scores = lm.attention_scores([p[-k:] for p, k in zip(self.prompts, w)], overlap=[k - 1 for k in w])
        out = []
        for view, s in zip(views, scores):
            if s.numel() == 0:
                out.append(view)
                continue
            pooled = torch.nn.functional.avg_pool1d(s[None, None], POOL, 1, POOL // 2, count_include_pad=False)[0, 0]
            free = torch.ones_like(pooled, dtype=torch.bool)  # (n,) not kept yet
            free[view] = False
            top = pooled.masked_fill(~free, -1.0).topk(min(self.snap, int(free.sum()))).indices
            out.append(sorted(view + top.tolist()))
        return out

    def step(self, ask: DraftRound) -> DraftStep:
        if ask.drafted == 0:  # a new draft reads the sparse view: the sink (and the SnapKV picks) + the window
            self.runtime.evict([self.sink + k for k in self.kept], self.window)
        return super().step(ask)


@hookimpl
def register_drafters(register):
    register(SparseKVDrafter.name, SparseKVDrafter)
