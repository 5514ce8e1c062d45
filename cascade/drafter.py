"""The drafter contract: what a plugin's drafter receives and returns.

A drafter is built once per engine from its validated options and a
`DrafterContext`, then for every sequence:

    reset(prompt_ids, params, generator)   # new sequence; prefill if it has a cache
    propose(context, request) -> Draft     # up to request.k tokens after `context`
    observe(feedback)                      # the verdict: roll back, adapt

A drafter that reads the target's features sets `wants_hidden_states = True`: each
Feedback then carries them, and right after `reset` the engine calls its optional
`prompt_features(hidden_states)` with those of the prompt but its last token,
(P - 1, H), from the prefill it runs anyway (not called when there is none: a
one-token prompt, drafter-only mode; the drafter then computes what it needs).
Likewise a drafter with the batch methods (`cascade.drafter_rows`) that drafts with
the target's own weights may take the target's prefilled cache through its optional
`prompt_cache_rows(lm)` instead of prefilling again (the `sparse-kv` drafter does).

`context` is always the whole sequence so far (prompt + emitted tokens), a 1-D
long tensor on the engine's device; a drafter with a KV cache feeds only the
tokens it has not seen. `Draft.probs is None` marks a deterministic drafter:
SPEC.md then treats q as one-hot on the drafted tokens, and the rules that read q
are refused for it at policy load.

The request, the feedback, the draft and the context are frozen dataclasses that
grow by optional fields (defaulting to "not asked" / None), so a drafter written
today keeps working when later engines ask or tell more.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from cascade import models
from cascade.errors import PluginError
from cascade.sampling import SamplingParams


@dataclass(frozen=True)
class DraftRequest:
    """What the engine asks of one `propose` call."""

    k: int  # draft at most k tokens (0 is allowed: only `lookahead` is wanted)
    min_confidence: float = 0.0  # stop drafting when the top probability of q falls below this
    lookahead: bool = False  # also return Draft.next_probs: q at T = 1 after the last drafted token
    confidence: bool = False  # also return Draft.confidence: per-token predicted acceptance
    # the schedule's stopping rule (cascade.schedule.StopRule): before drawing token j, a drafter may
    # call stop([c_1, .., c_j]) with the confidences so far and stop when it returns True. Optional:
    # the engine cuts the draft where the rule says anyway; honouring it only saves drafting work
    stop: Callable[[Sequence[float]], bool] | None = None
    # a batch's shared rule (cascade.schedule.BatchStopRule), the same object in every row's request: a
    # drafter with the batch methods drafting the rows in lockstep may call it once per round, before
    # drawing round j's tokens, with every row's confidences (a row still drafting: c_1..c_j; one that
    # ended: all of its drafts'), and stop every row when it returns True. Optional, as `stop` is
    batch_stop: Callable[[Sequence[Sequence[float]]], bool] | None = None


@dataclass(frozen=True)
class Draft:
    """What a drafter proposes. Only `tokens` is required; every other field may stay None."""

    tokens: torch.Tensor  # (k,) long; k may be 0 (nothing to propose)
    probs: torch.Tensor | None = None  # (k, V) unscaled (T = 1) q at each drafted position; None = deterministic
    calls: int = 1  # forward passes (or lookups) the drafter spent on this draft
    next_probs: torch.Tensor | None = None  # (V,) q at T = 1 after the last drafted token (lookahead)
    # (k,) float in [0, 1]: the drafter's predicted chance that token i is accepted, computed
    # *before* token i was drawn (so a schedule may stop on it without biasing the output)
    confidence: torch.Tensor | None = None
    # (k,) long: tree drafts; parents[i] is the index of token i's parent in `tokens`, -1 = the
    # last emitted token. None = a chain (parents[i] = i - 1)
    parents: torch.Tensor | None = None


@dataclass(frozen=True)
class Feedback:
    """What the engine tells the drafter after verification."""

    n_accepted: int  # the first n_accepted drafted tokens were kept
    next_token: int | None = None  # the token emitted after them (correction or bonus); None if none was
    # (n_accepted + 1, H): the target's last hidden states at the accepted positions and the one
    # before them, for drafters that read the target's features (EAGLE); None unless asked for
    hidden_states: torch.Tensor | None = None
    path: tuple[int, ...] | None = None  # tree drafts: indices into Draft.tokens of the accepted path
    # how many of the drafted tokens were verified: fewer than it drafted when the engine cut the draft (a
    # schedule's stopping rule the drafter did not apply, a batch's shared width); None: not said (all of them)
    verified: int | None = None


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
    target_model: Any = None  # the target itself (HF model), for self-speculation: share it, never copy it
    batch_size: int = 1  # rows the engine decodes at once


@runtime_checkable
class Drafter(Protocol):
    """A drafter class: built as `cls(options, context)`, then used as below.

    An optional instance attribute `model` names the HF model the drafter runs
    (None or absent for model-free drafters); benchmarks use it to run peers on it.
    """

    name: ClassVar[str]
    deterministic: ClassVar[bool]  # True: propose() never returns probs
    Options: ClassVar[type]  # a pydantic model (extra="forbid") validated from the policy

    def reset(self, prompt_ids: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> None:
        """A new sequence starts with `prompt_ids` (P,), sampled with `params` from `generator`."""
        ...

    def propose(self, context: torch.Tensor, request: DraftRequest) -> Draft:
        """Up to request.k tokens continuing `context` (n,); stop early when the top probability
        falls below request.min_confidence. With request.lookahead, a probabilistic drafter also
        returns `next_probs` (a cascade draws the bonus token from π there)."""
        ...

    def observe(self, feedback: Feedback) -> None:
        """The verdict on the last draft; the next propose() shows what followed."""
        ...


# ---------------------------------------------------------------------- load-time checks

OLD_CONTRACT = (
    "the drafter contract changed in cascade 0.2: propose(context, k, min_confidence, lookahead) became "
    "propose(context, request: DraftRequest) (read request.k, request.min_confidence, request.lookahead) "
    "and observe(n_accepted) became observe(feedback: Feedback) (read feedback.n_accepted); "
    "see docs/plugins.md"
)


def check_drafter_class(name: str, cls: type[Any]) -> None:
    """Refuse a drafter class that does not follow the contract, naming what to change."""
    missing = [a for a in ("deterministic", "reset", "propose", "observe") if not hasattr(cls, a)]
    if missing:
        raise PluginError(f"drafter {name!r} ({cls.__name__}) lacks {', '.join(missing)}; see docs/plugins.md")
    propose = _params(cls.propose)
    observe = _params(cls.observe)
    if len(propose) != 2 or "k" in propose or len(observe) != 1 or observe[0] == "n_accepted":
        raise PluginError(f"drafter {name!r} ({cls.__name__}): {OLD_CONTRACT}")


def _params(fn: Callable[..., Any]) -> list[str]:
    """Parameter names after `self`, without *args / **kwargs."""
    sig = inspect.signature(fn)
    names = [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[1:] if names and names[0] == "self" else names


def drafter_model(drafter: Any) -> Any:
    """The HF model a drafter runs, or None (n-gram lookup, no drafter)."""
    return getattr(drafter, "model", None)
