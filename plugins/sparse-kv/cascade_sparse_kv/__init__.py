"""Drafter plugin `sparse-kv`: self-speculation over a sparse KV cache (MagicDec; SPEC.md "Self-speculation
with a sparse cache").

The drafter is the target itself (its weights handed over through `DrafterContext.target_model`,
never loaded twice), or the model `model` names, reading only a sparse view of the context: the
`sink` first tokens and the `window` latest ones (StreamingLLM). Its own KV cache keeps exactly
those: before each draft the tokens between them are evicted for good (their slots become holes
and are compacted away), and every later token keeps its true position. So a drafting step reads
at most sink + window + the block's tokens from its cache, whatever the context's length; the
verification reads the full cache and keeps decoding exact. With a window at least as long as the
context nothing is evicted and the drafter is the target: it drafts the target's own greedy tokens.

It drafts, batches and rolls back as the `hf-model` drafter does (it is one, over another cache).
Drafting with the target's weights it never prefills: the engine hands it the target's cache after
its prefill (`prompt_cache_rows`) and it copies each row's sink and window from it (MagicDec shares
the prefill the same way), so self-speculation costs no second pass over a long prompt.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cascade import models
from cascade.drafter import DrafterContext
from cascade.errors import CascadeError
from cascade.hookspecs import hookimpl
from cascade_hf_model import HFModelDrafter

__version__ = "0.2.0"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sink: int = Field(4, ge=0, le=4096, description="first tokens always kept (attention sinks)")
    window: int = Field(64, ge=1, le=65536, description="latest tokens kept")
    model: str | None = Field(None, min_length=1, description="draft with this model instead of the target")
    runtime: Literal["auto", "lean", "transformers"] = "auto"


class SparseKVDrafter(HFModelDrafter):
    name = "sparse-kv"
    deterministic = False
    Options = Options  # type: ignore[assignment]

    def __init__(self, options: Options, ctx: DrafterContext):  # type: ignore[override]
        if options.model is not None:
            path = models.resolve_model_path(options.model, ctx.base_dir)
            model = ctx.load_model(path, ctx.dtype, ctx.device)
        elif ctx.target_model is not None:
            model = ctx.target_model  # self-speculation: the target's own weights, shared
        else:
            raise CascadeError("drafter 'sparse-kv' drafts with the target's weights, but this engine gave it no "
                               "target (DrafterContext.target_model): name one with options.model")
        self.sink, self.window = options.sink, options.window
        self.use(model, ctx, options.runtime, options.model or ctx.target_name)
        # drafting with the target's weights, the target's prefill already holds our keys and values
        self.prefill_on_reset = model is not ctx.target_model

    def prompt_cache_rows(self, lm) -> None:
        """The target's cache after its prefill: keep each row's sparse view of it, never prefill again."""
        if self.prefill_on_reset or not (lm.slotted and self.lm.slotted) or lm.model is not self.model:
            return  # another model's cache, or one we cannot copy: our first propose prefills (lazily)
        self.lm.adopt(lm, [self.view(n) for n in lm.lengths])

    def view(self, n: int) -> list[int]:
        """Indices of the tokens of an n-token context the sparse view keeps: the sink, then the window."""
        return sorted(set(range(min(self.sink, n))) | set(range(max(0, n - self.window), n)))

    def propose_rows(self, contexts, requests):
        self.lm.evict(self.sink, self.window)  # the sparse view: sink + window, true positions kept
        return super().propose_rows(contexts, requests)


@hookimpl
def register_drafters(register):
    register(SparseKVDrafter.name, SparseKVDrafter)
