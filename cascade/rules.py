"""Deferral rules of SPEC.md, each a small class behind one protocol.

A rule looks at the *unscaled* (T = 1) drafter distribution q and target
distribution p at k positions and returns the deferral indicator r:

- whole-distribution rules return r of shape (k, 1): defer the whole position;
- token-specific rules return r of shape (k, V): defer candidate token v.

`cascade.sampling.mixture` turns r into the verification target π, the same
formula for both kinds. r = 1 everywhere is lossless speculative decoding.

Rules are registered through the plugin hook `register_rules`, the same way a
third party (or the learned rule) adds one; this module's `BUILTIN_RULES` is what
cascade's own built-in plugin registers.
"""

from __future__ import annotations

import math
from typing import ClassVar, Protocol, runtime_checkable

import torch


@runtime_checkable
class Rule(Protocol):
    name: ClassVar[str]
    reads_q: ClassVar[bool]  # needs the drafter's distribution (refused for deterministic drafters)
    reads_p: ClassVar[bool]  # needs the target's distribution (refused in the sequential cascade)
    alpha_range: ClassVar[tuple[float, float]]  # (speculative end, drafter-only end)
    alpha: float

    def defer(self, q: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor:
        """r in {0, 1}, float, shape (k, 1) or (k, V).

        q, p: (k, V) at T = 1. q is one-hot for a deterministic drafter; p is None in the
        sequential cascade (the target has not run yet), which only admits rules with reads_p False.
        """
        ...


class _RuleBase:
    name: ClassVar[str] = ""
    reads_q: ClassVar[bool] = True
    reads_p: ClassVar[bool] = True
    alpha_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __init__(self, alpha: float = 0.0):
        self.alpha = float(alpha)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha})"


class NoDeferral(_RuleBase):
    """Lossless speculative decoding: always defer, π = p."""

    name = "none"
    reads_q = False
    reads_p = False
    alpha_range = (-math.inf, math.inf)  # α is ignored

    def defer(self, q, p):
        ref = p if p is not None else q
        return torch.ones(ref.shape[0], 1, device=ref.device)


class Chow(_RuleBase):
    """Chow's rule: defer iff max q < 1 − α (drafter confidence only)."""

    name = "chow"
    reads_p = False
    alpha_range = (0.0, 1.0)

    def defer(self, q, p):
        return (q.max(-1, keepdim=True).values < 1 - self.alpha).float()


class Diff(_RuleBase):
    """Defer iff max q < max p − α."""

    name = "diff"
    alpha_range = (-1.0, 1.0)

    def defer(self, q, p):
        return (q.max(-1, keepdim=True).values < p.max(-1, keepdim=True).values - self.alpha).float()


class Opt(_RuleBase):
    """Defer iff max q < max p − α·D_TV(p, q) (the loss gap weighed against the rejection rate)."""

    name = "opt"
    alpha_range = (-math.inf, math.inf)

    def defer(self, q, p):
        dtv = (p - q).clamp_min(0).sum(-1, keepdim=True)  # (k, 1)
        return (q.max(-1, keepdim=True).values < p.max(-1, keepdim=True).values - self.alpha * dtv).float()


class TokenV1(_RuleBase):
    """Token-specific: defer v iff q(v) < max p − α."""

    name = "token_v1"
    alpha_range = (-1.0, 1.0)

    def defer(self, q, p):
        return (q < p.max(-1, keepdim=True).values - self.alpha).float()


class TokenV2(_RuleBase):
    """Token-specific: defer v iff p(v) < max p − α."""

    name = "token_v2"
    reads_q = False
    alpha_range = (-1.0, 1.0)

    def defer(self, q, p):
        return (p < p.max(-1, keepdim=True).values - self.alpha).float()


class TokenV3(_RuleBase):
    """Token-specific: defer v iff p(v) < (1 − α)·max p; drafts in T_α are always accepted."""

    name = "token_v3"
    reads_q = False
    alpha_range = (0.0, 1.0)

    def defer(self, q, p):
        return (p < (1 - self.alpha) * p.max(-1, keepdim=True).values).float()


BUILTIN_RULES: dict[str, type] = {
    cls.name: cls for cls in (NoDeferral, Chow, Diff, Opt, TokenV1, TokenV2, TokenV3)
}
