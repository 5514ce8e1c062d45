"""Deferral rules of SPEC.md, each a small class behind one protocol.

A rule looks at the *unscaled* (T = 1) drafter distribution q and target
distribution p at k positions and returns the deferral indicator r:

- whole-distribution rules return r of shape (k, 1): defer the whole position;
- token-specific rules return r of shape (k, V): defer candidate token v.

`cascade.verify.sampling.mixture` turns r into the verification target π, the same
formula for both kinds. r = 1 everywhere is lossless speculative decoding.

A rule is built as `cls(alpha, options)`, `options` an instance of its pydantic
`Options` (validated from the policy's `rule.options`, errors naming the field).
A rule with `reads_features = True` also receives `DeferralInputs`: the decision
features of `cascade.features` for the block and where the block sits (a learned
rule reads these).

Each rule is also the one home of its semantics on logged features: `critical_alpha(columns)`
gives, per logged drafted position, the α below which the rule defers it (it defers iff
α < critical α), in closed form for the built-in rules. Calibration's first guess and the
dashboard's what-if re-apply a rule through it, so they agree with `defer` by construction.

Rules are registered through the plugin hook `register_rules`, the same way a
third party (or the learned rule) adds one; this module's `BUILTIN_RULES` is what
cascade's own built-in plugin registers.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel

from cascade.errors import PluginError
from cascade.features import FEATURES, BlockContext, model_features
from cascade.options import NoOptions


@dataclass(frozen=True)
class DeferralInputs:
    """Per-position inputs beyond q and p, for rules with `reads_features` (computed once per block)."""

    features: torch.Tensor  # (k, len(names)) float, NaN = absent (no q, or no p yet)
    positions: torch.Tensor  # (k,) long: position of each drafted token in its block, 0-based
    sequence_position: int  # tokens in the sequence (prompt + emitted) before the block
    recent_acceptance: float  # accepted / drafted over the last few verification steps; NaN before any
    names: tuple[str, ...] = FEATURES  # column names of `features`, in order
    logq_q10: float = math.nan  # running quantiles of the drafter's log q(x) in this sequence (BlockContext)
    logq_q50: float = math.nan

    @property
    def context(self) -> BlockContext:
        return BlockContext(self.sequence_position, self.recent_acceptance, self.logq_q10, self.logq_q50)

    def model_features(self) -> torch.Tensor:
        """`cascade.features.MODEL_FEATURES` for the block, on the features' device. (k, M)"""
        return model_features(self.features, self.positions, self.context)


@runtime_checkable
class Rule(Protocol):
    name: ClassVar[str]
    reads_q: ClassVar[bool]  # needs the drafter's distribution (refused for deterministic drafters)
    reads_p: ClassVar[bool]  # needs the target's distribution (refused in the sequential cascade)
    alpha_range: ClassVar[tuple[float, float]]  # (speculative end, drafter-only end)
    reads_features: ClassVar[bool]  # receives DeferralInputs
    Options: ClassVar[type[BaseModel]]  # validated from the policy's rule.options (extra="forbid")
    alpha: float

    def defer(
        self, q: torch.Tensor | None, p: torch.Tensor | None, inputs: DeferralInputs | None = None
    ) -> torch.Tensor:
        """r in [0, 1], float, shape (k, 1) or (k, V) (SPEC's rules give 0 or 1).

        q, p: (k, V) at T = 1. q is one-hot for a deterministic drafter. p is None when the rule
        does not read it (reads_p False), and in the sequential cascade (the target has not run
        yet), which only admits such rules. `inputs` is given when the rule `reads_features`.
        """
        ...

    def critical_alpha(self, columns: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Per logged drafted position, the α below which this rule defers it (NaN where an input is absent);
        None: the rule cannot be re-applied from logged features. `columns`: FEATURES, `position` and CONTEXT."""
        ...

    @classmethod
    def requirements(cls, options: BaseModel) -> tuple[bool, bool]:
        """(reads_q, reads_p) with these options (a learned head's depend on its card): what the policy check reads."""
        ...

    def provenance(self) -> dict[str, Any]:
        """What the rule was built from, for the store's records (e.g. a learned head's folder and sha256)."""
        ...


DEFAULT_INF_CLIP = (-2.0, 5.0)  # (lower, upper): the finite stand-ins for an infinite end of a rule's α range


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b


class RuleBase:
    """The contract's defaults: subclass it and override what your rule does."""

    name: ClassVar[str] = ""
    reads_q: ClassVar[bool] = True
    reads_p: ClassVar[bool] = True
    reads_features: ClassVar[bool] = False
    alpha_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, alpha: float = 0.0, options: BaseModel | None = None):
        self.alpha = float(alpha)
        self.options = options if options is not None else self.Options()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={vars(self).get('alpha')})"

    def critical_alpha(self, columns: Mapping[str, np.ndarray]) -> np.ndarray | None:
        return None

    @classmethod
    def requirements(cls, options: BaseModel) -> tuple[bool, bool]:
        return cls.reads_q, cls.reads_p

    def provenance(self) -> dict[str, Any]:
        return {}


class NoDeferral(RuleBase):
    """Lossless speculative decoding: always defer, π = p."""

    name = "none"
    reads_q = False
    reads_p = False
    alpha_range = (-math.inf, math.inf)  # α is ignored

    def defer(self, q, p, inputs=None):
        ref = p if p is not None else q
        return torch.ones(ref.shape[0], 1, device=ref.device)

    def critical_alpha(self, columns):
        return np.full(len(next(iter(columns.values()))), np.inf)  # every position, whatever α


class Chow(RuleBase):
    """Chow's rule: defer iff max q < 1 − α (drafter confidence only)."""

    name = "chow"
    reads_p = False
    alpha_range = (0.0, 1.0)

    def defer(self, q, p, inputs=None):
        return (q.max(-1, keepdim=True).values < 1 - self.alpha).float()

    def critical_alpha(self, columns):
        return 1.0 - columns["q_max"]


class Diff(RuleBase):
    """Defer iff max q < max p − α."""

    name = "diff"
    alpha_range = (-1.0, 1.0)

    def defer(self, q, p, inputs=None):
        return (q.max(-1, keepdim=True).values < p.max(-1, keepdim=True).values - self.alpha).float()

    def critical_alpha(self, columns):
        return columns["p_max"] - columns["q_max"]


class Opt(RuleBase):
    """Defer iff max q < max p − α·D_TV(p, q) (the loss gap weighed against the rejection rate)."""

    name = "opt"
    alpha_range = (-math.inf, math.inf)

    def defer(self, q, p, inputs=None):
        dtv = (p - q).clamp_min(0).sum(-1, keepdim=True)  # (k, 1)
        return (q.max(-1, keepdim=True).values < p.max(-1, keepdim=True).values - self.alpha * dtv).float()

    def critical_alpha(self, columns):
        return _ratio(columns["p_max"] - columns["q_max"], columns["d_tv"])


class TokenV1(RuleBase):
    """Token-specific: defer v iff q(v) < max p − α."""

    name = "token_v1"
    alpha_range = (-1.0, 1.0)

    def defer(self, q, p, inputs=None):
        return (q < p.max(-1, keepdim=True).values - self.alpha).float()

    def critical_alpha(self, columns):
        return columns["p_max"] - columns["q_x"]


class TokenV2(RuleBase):
    """Token-specific: defer v iff p(v) < max p − α."""

    name = "token_v2"
    reads_q = False
    alpha_range = (-1.0, 1.0)

    def defer(self, q, p, inputs=None):
        return (p < p.max(-1, keepdim=True).values - self.alpha).float()

    def critical_alpha(self, columns):
        return columns["p_max"] - columns["p_x"]


class TokenV3(RuleBase):
    """Token-specific: defer v iff p(v) < (1 − α)·max p; drafts in T_α are always accepted."""

    name = "token_v3"
    reads_q = False
    alpha_range = (0.0, 1.0)

    def defer(self, q, p, inputs=None):
        return (p < (1 - self.alpha) * p.max(-1, keepdim=True).values).float()

    def critical_alpha(self, columns):
        return 1.0 - _ratio(columns["p_x"], columns["p_max"])


def check_rule_class(name: str, cls: type[Any]) -> None:
    """Refuse a rule class that does not follow the contract, naming what to change."""
    missing = [a for a in ("reads_q", "reads_p", "alpha_range", "defer") if not hasattr(cls, a)]
    if missing:
        raise PluginError(f"rule {name!r} ({cls.__name__}) lacks {', '.join(missing)}; see docs/plugins.md")
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(
            f"rule {name!r} ({cls.__name__}): since cascade 0.2 a rule declares `Options` (a pydantic model, "
            'extra="forbid"; `cascade.NoOptions` for none) and is built as cls(alpha, options), '
            "not cls(alpha, **options); see docs/plugins.md"
        )
    init = list(inspect.signature(cls).parameters.values())  # the constructor's, without self
    if any(p.kind is p.VAR_KEYWORD for p in init) or len(init) < 2:
        raise PluginError(
            f"rule {name!r} ({cls.__name__}): the constructor must be cls(alpha, options), "
            "not cls(alpha, **options); see docs/plugins.md"
        )
    declared = [a for a in ("critical_alpha", "requirements", "provenance") if not hasattr(cls, a)]
    if declared:
        raise PluginError(
            f"rule {name!r} ({cls.__name__}) lacks {', '.join(declared)}: subclass cascade.RuleBase for "
            "their defaults; see docs/plugins.md"
        )


BUILTIN_RULES: dict[str, type] = {cls.name: cls for cls in (NoDeferral, Chow, Diff, Opt, TokenV1, TokenV2, TokenV3)}
