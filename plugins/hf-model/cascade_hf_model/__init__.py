"""Drafter plugin `hf-model`: a small HF causal LM that shares the target's tokenizer.

It is cascade's `ModelDrafter` over the model `options.model` names: a causal LM with a
KV cache that the engine drives round by round, one forward pass per round for every row
of a batch (`cascade.model_drafter`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cascade import DrafterContext, ModelDrafter, hookimpl, resolve_dtype, resolve_model_path

__version__ = "0.3.0"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="hub id or local folder of the drafter")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None  # None: the target's dtype
    revision: str | None = None
    trust_remote_code: bool = False
    gguf_file: str | None = Field(default=None, min_length=1)  # a GGUF checkpoint in the `model` folder
    # lean: cascade's own forward over the drafter's weights (GPT-2, Llama, Qwen2); transformers: the model's
    # own forward; auto: lean where it applies
    runtime: Literal["auto", "lean", "transformers"] = "auto"


class HFModelDrafter(ModelDrafter):
    name = "hf-model"
    Options = Options

    def __init__(self, options: Options, ctx: DrafterContext):
        path = resolve_model_path(options.model, ctx.base_dir)
        dtype = ctx.dtype if options.dtype is None else resolve_dtype(options.dtype, ctx.device)
        model = ctx.load_model(path, dtype, ctx.device, options.trust_remote_code, options.revision, options.gguf_file)
        self.use(model, ctx, options.runtime, options.model)


@hookimpl
def register_drafters(register):
    register(HFModelDrafter.name, HFModelDrafter)
