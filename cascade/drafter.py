"""The drafter contract: what a plugin's drafter receives and returns.

A drafter is built once per engine from its validated options and a
`DrafterContext`, then for every sequence:

    reset(prompt_ids, params, generator)   # new sequence; prefill if it has a cache
    propose(context, k, min_confidence, lookahead)  # -> Draft: up to k tokens after `context`
    observe(n_accepted)                    # the verdict: roll back, adapt

`context` is always the whole sequence so far (prompt + emitted tokens), a 1-D
long tensor on the engine's device; a drafter with a KV cache feeds only the
tokens it has not seen. `Draft.probs is None` marks a deterministic drafter:
SPEC.md then treats q as one-hot on the drafted tokens, and the rules that read q
are refused for it at policy load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from cascade import models
from cascade.sampling import SamplingParams


@dataclass(frozen=True)
class Draft:
    tokens: torch.Tensor  # (k,) long; k may be 0 (nothing to propose)
    probs: torch.Tensor | None = None  # (k, V) unscaled (T = 1) q at each drafted position; None = deterministic
    calls: int = 1  # forward passes (or lookups) the drafter spent on this draft
    next_probs: torch.Tensor | None = None  # (V,) q at T = 1 after the last drafted token (lookahead)


@dataclass(frozen=True)
class DrafterContext:
    """What the engine tells a drafter about the target it drafts for."""

    vocab_size: int  # the target's logits width; a drafter's probs must match it
    tokenizer: Any  # the target's tokenizer (HF PreTrainedTokenizer)
    target_name: str  # the target's hub id or folder, for error messages
    device: torch.device
    dtype: torch.dtype
    max_positions: int | None = None  # the target's context length, if known
    base_dir: Path | None = None  # the policy file's folder: relative model folders resolve against it
    load_model: Callable[..., Any] = models.load_model  # use this to load a model (the engine may share loads)


@runtime_checkable
class Drafter(Protocol):
    name: ClassVar[str]
    deterministic: ClassVar[bool]  # True: propose() never returns probs
    Options: ClassVar[type]  # a pydantic model (extra="forbid") validated from the policy

    def reset(self, prompt_ids: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> None: ...

    def propose(self, context: torch.Tensor, k: int, min_confidence: float = 0.0, lookahead: bool = False) -> Draft:
        """Up to k tokens continuing `context`; stop early when the top probability < min_confidence.

        With `lookahead`, a probabilistic drafter also returns `next_probs`, its q for the
        position after the last drafted token (a cascade draws the bonus token from π there).
        """
        ...

    def observe(self, n_accepted: int) -> None:
        """The first n_accepted drafted tokens were kept; the next propose() shows what followed."""
        ...
