"""The drafter contract: what a plugin's drafter receives and returns (cascade 0.3).

The engine owns the draft: how many tokens, when to stop, and every random draw. A
drafter is a model over rows of a batch that the engine drives round by round, as
gpt-fast drives its draft model (`decode_n_tokens`):

    start(prompts)                          # B sequences start (prefill a cache here)
    step(DraftRound) -> DraftStep          # the next position of each asked row: logits
                                            # (the engine draws the token) or a token
    observe(feedbacks)                      # the verdict per row: roll back, adapt
    keep(rows)                              # only these rows go on (the others finished)
    join(prompts)                           # more rows start after the live ones (a running batch)

A round's `contexts[i]` is row `rows[i]`'s sequence so far followed by the `drafted` tokens
this draft has drawn in it (the same count for every asked row: rows draft in lockstep,
and a row leaves the round once the engine stops it). A drafter with a KV cache feeds
what it has not seen and answers for the position after it. Nothing the engine asked
for is cut away afterwards: the verdict covers exactly the tokens it drew.

A drafter declares what else it does by class attributes, defaults on `DrafterBase`:

- `batched = True`: one instance drafts every row (one forward pass for all); otherwise
  the engine builds one instance per row and calls each as a batch of one;
- `reads_target_features = True`: the target's last hidden states come in each Feedback,
  and the prompt's, from the engine's prefill, through `target_features(states)`;
- `adopts_target_cache = True` (batched drafters over the target's weights): right after
  `start`, `adopt_target_cache(lm)` hands over the target's prefilled cache;
- `joins_rows = True` (batched drafters): `join(prompts)` starts rows after the live ones while
  they decode (a server's continuous batching); a drafter used one instance per row always can;
- `proposes_trees` (an instance attribute: it may depend on the options): the drafter
  proposes a whole tree in one call, `propose_trees(TreeRound)` (EAGLE-2); its size is
  the engine's `budgets`, its shape (and, when it draws its nodes, its draws) the drafter's.

`DraftStep.logits is None` marks a deterministic drafter: SPEC.md then treats q as one-hot
on the drafted tokens, and the rules that read q are refused for it at policy load.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from cascade.errors import PluginError
from cascade.runtime import models
from cascade.verify.sampling import SamplingParams


@dataclass(frozen=True)
class DraftRound:
    """One drafting round: what the engine asks of the drafter (rows draft in lockstep)."""

    contexts: Sequence[torch.Tensor]  # per asked row: its sequence so far and this draft's `drafted` tokens
    rows: Sequence[int]  # the asked rows, as indices into the live rows (the order of `start` and `keep`)
    drafted: int  # tokens this draft has drawn in each asked row before this round (0: a new draft)
    # per asked row: the most tokens its draft will draw (the engine's plan; it may stop sooner, and a
    # cascade asks one more round at the limit for q_{k+1}); e.g. the n-gram drafter picks its match by it
    limits: Sequence[int]


@dataclass(frozen=True)
class TreeRound:
    """What the engine asks of a tree drafter (`propose_trees`): one tree per live row, in one call."""

    contexts: Sequence[torch.Tensor]  # per live row: its sequence so far
    budgets: Sequence[int]  # per live row: at most this many nodes (0: none)
    params: SamplingParams  # the policy's sampling; a drafter that draws its nodes from q draws with these
    generators: Sequence[torch.Generator | None]  # row b's random stream (draw row b's nodes from it only)


@dataclass(frozen=True)
class DraftStep:
    """A drafter's answer for one round: the next position of each asked row, in the asked order.

    Exactly one of `logits` (a model: the engine draws each row's token from it with the row's own
    random stream, at the policy's temperature / top-k / top-p) and `tokens` (a deterministic drafter).
    """

    logits: torch.Tensor | None = None  # (R, V) unscaled, over the target's vocabulary
    tokens: torch.Tensor | None = None  # (R,) long; -1: no proposal here (the row's draft ends)
    # (R,) in [0, 1]: the predicted chance that the next token is accepted, known before it is drawn;
    # None: the top probability of softmax(logits) (a deterministic drafter's schedules need its own)
    confidence: torch.Tensor | None = None
    calls: int = 1  # forward passes (or lookups) this round cost


@dataclass(frozen=True)
class TreeDraft:
    """A tree proposed in one call (`propose_trees`), parents before children."""

    tokens: torch.Tensor  # (k,) long
    parents: torch.Tensor  # (k,) long: index of token i's parent in `tokens`, -1 = the last emitted token
    # (k, V) q at T = 1 at node i's parent. Under sampling: node i and its siblings were drawn i.i.d. from it
    # (None: the children were chosen, e.g. top-k, and the tree is verified losslessly without q); under greedy
    # decoding only a cascade rule reads it, so chosen children may carry it too
    probs: torch.Tensor | None = None
    calls: int = 1


@dataclass(frozen=True)
class Feedback:
    """The verdict on one row's draft."""

    n_accepted: int  # the first n_accepted drafted tokens were kept
    drafted: int  # tokens the engine drew in this draft (all verified): where a drafter's offers were taken
    next_token: int | None = None  # the token emitted after them (correction or bonus); None if none was
    # (n_accepted + 1, H): the target's last hidden states at the last emitted token and the accepted
    # positions (a tree: its path); `reads_target_features` drafters only, else None
    hidden_states: torch.Tensor | None = None
    path: tuple[int, ...] | None = None  # tree drafts: indices into TreeDraft.tokens of the accepted path


@dataclass(frozen=True)
class DrafterContext:
    """What the engine tells a drafter about the target it drafts for."""

    vocab_size: int  # the target's logits width; a drafter's logits must match it
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
    """A drafter class: built as `cls(options, context)`, then driven by the engine as above."""

    name: ClassVar[str]
    deterministic: ClassVar[bool]  # True: step() returns tokens, never logits
    Options: ClassVar[type]  # a pydantic model (extra="forbid") validated from the policy
    batched: ClassVar[bool]
    reads_target_features: ClassVar[bool]
    adopts_target_cache: ClassVar[bool]
    joins_rows: ClassVar[bool]
    proposes_trees: bool
    model: Any  # the HF model it runs, None for model-free drafters (benchmarks run peers on it)
    max_positions: int | None  # the drafter's own context length, when shorter than the target's (else None)
    runtime: Any  # the `cascade.runtime.ragged.RaggedLM` it runs its model through, None for none (benchmarks read it)

    def start(self, prompts: Sequence[torch.Tensor]) -> None:
        """B sequences start, `prompts[b]` (P_b,) long on the engine's device, row b in row b."""
        ...

    def step(self, ask: DraftRound) -> DraftStep:
        """The next position of each asked row."""
        ...

    def observe(self, feedbacks: Sequence[Feedback | None]) -> None:
        """The verdict per live row; None for a row nothing was drafted in this step."""
        ...

    def keep(self, rows: Sequence[int]) -> None:
        """Only these live rows (indices into the live order) go on."""
        ...

    def join(self, prompts: Sequence[torch.Tensor]) -> None:
        """`joins_rows`: rows start after the live ones (row B + i is prompts[i]), the others going on."""
        ...

    def target_features(self, states: Sequence[torch.Tensor]) -> None:
        """`reads_target_features`: right after `start` (or `join`), the started rows' prompt features but the
        last token's."""
        ...

    def adopt_target_cache(self, lm: Any) -> None:
        """`adopts_target_cache`: the target's `RaggedLM` after its prefill; copy, never keep or change it."""
        ...

    def propose_trees(self, ask: TreeRound) -> list[TreeDraft]:
        """`proposes_trees`: one tree of at most ask.budgets[b] nodes per live row."""
        ...


class DrafterBase:
    """The contract's defaults: subclass it and override what your drafter does."""

    name: ClassVar[str] = ""
    deterministic: ClassVar[bool] = False
    Options: ClassVar[type]
    batched: ClassVar[bool] = False
    reads_target_features: ClassVar[bool] = False
    adopts_target_cache: ClassVar[bool] = False
    joins_rows: ClassVar[bool] = False
    proposes_trees: bool = False
    model: Any = None
    max_positions: int | None = None
    runtime: Any = None

    def start(self, prompts: Sequence[torch.Tensor]) -> None:
        pass

    def step(self, ask: DraftRound) -> DraftStep:
        raise NotImplementedError(f"drafter {self.name!r} drafts no chains (it proposes trees)")

    def observe(self, feedbacks: Sequence[Feedback | None]) -> None:
        pass

    def keep(self, rows: Sequence[int]) -> None:
        pass

    def join(self, prompts: Sequence[torch.Tensor]) -> None:
        raise NotImplementedError(f"drafter {self.name!r} takes no rows joining a running batch (joins_rows)")

    def target_features(self, states: Sequence[torch.Tensor]) -> None:
        pass

    def adopt_target_cache(self, lm: Any) -> None:
        pass

    def propose_trees(self, ask: TreeRound) -> list[TreeDraft]:
        raise NotImplementedError(f"drafter {self.name!r} proposes no trees")


# ---------------------------------------------------------------------- load-time checks

OLD_CONTRACT = (
    "the drafter contract changed in cascade 0.3: the engine owns the draft's length and its random draws. "
    "reset/propose/observe(feedback) became start(prompts), step(DraftRound) -> DraftStep "
    "(one position per round: logits, or tokens for a deterministic drafter) and observe(feedbacks), one "
    "entry per row; subclass cascade.DrafterBase for the defaults; see docs/plugins.md"
)
OLDER_CONTRACT = (
    "the drafter contract changed in cascade 0.2 and again in 0.3: propose(context, k, min_confidence, "
    "lookahead) / observe(n_accepted) became step(DraftRound) -> DraftStep and "
    "observe(feedbacks); see docs/plugins.md"
)
REQUIRED = ("deterministic", "start", "step", "observe", "keep")
DECLARED = (
    "batched",
    "reads_target_features",
    "adopts_target_cache",
    "joins_rows",
    "proposes_trees",
    "model",
    "max_positions",
    "runtime",
)


def check_drafter_class(name: str, cls: type[Any]) -> None:
    """Refuse a drafter class that does not follow the contract, naming what to change."""
    if hasattr(cls, "propose") and not hasattr(cls, "step"):
        older = "k" in _params(cls.propose) or _params(getattr(cls, "observe", lambda self, f: None)) == ["n_accepted"]
        raise PluginError(f"drafter {name!r} ({cls.__name__}): {OLDER_CONTRACT if older else OLD_CONTRACT}")
    missing = [a for a in REQUIRED + DECLARED if not hasattr(cls, a)]
    if missing:
        raise PluginError(
            f"drafter {name!r} ({cls.__name__}) lacks {', '.join(missing)}: subclass cascade.DrafterBase "
            "for the defaults; see docs/plugins.md"
        )
    if len(_params(cls.step)) != 1:
        raise PluginError(f"drafter {name!r} ({cls.__name__}): step takes one DraftRound; {OLD_CONTRACT}")


def _params(fn: Callable[..., Any]) -> list[str]:
    """Parameter names after `self`, without *args / **kwargs."""
    sig = inspect.signature(fn)
    names = [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[1:] if names and names[0] == "self" else names


def drafter_model(drafter: Drafter | None) -> Any:
    """The HF model a drafter runs, or None (n-gram lookup, no drafter)."""
    return None if drafter is None else drafter.model
