"""What `cascade calibrate` measures and where it starts: the target-decided share, rule scores, quantiles.

**The share of target-decided tokens** of a replay: of the tokens it emitted, the share that
is not a drafted token the rule kept (r(x) = 0) and emitted:

    share = 1 − kept / emitted,   kept = drafted positions with deferred = False and accepted = True

A draft the rule deferred (r = 1) and the target then accepted counts as target-decided (the
target's distribution judged it), and so does every token the target produced itself: a
correction, a bonus (including a cascade's bonus drawn from π_{k+1}, which the log does not
split by source), a sequential-cascade deferral, a target-only step. It reads the same in the
sequential cascade (deferrals / tokens) and in speculative modes, it is 1 at a rule's
speculative end (every position deferred, lossless), and it falls as α moves toward the
drafter-only end, where speculative decoding keeps one target-decided token (the bonus) per
block: its floor there is about 1 / (block size + 1), not 0.

**Rule scores.** For the first guess, calibration needs each logged position's *critical α*:
the α below which the rule defers that drafted token (the rule defers iff α < c): each rule's own
`critical_alpha(columns)` (`cascade.rules`: closed forms for the built-ins, its score for the learned
rule). `columns` are arrays named as the store's columns: FEATURES, `position` and CONTEXT.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from cascade.features import CONTEXT, FEATURES
from cascade.rules import DEFAULT_INF_CLIP

Columns = Mapping[str, np.ndarray]


def critical_alphas(rule: Any, columns: Columns) -> np.ndarray | None:
    """Each logged position's critical α for `rule` (NaN where its inputs are absent); None when the rule
    cannot be re-applied from logged features (its `critical_alpha` says so)."""
    out = rule.critical_alpha(columns)
    return None if out is None else np.asarray(out, dtype=np.float64)


def replay_columns(steps: Iterable[Any]) -> dict[str, np.ndarray]:
    """The drafted positions of a replay's `StepRecord`s as store-named columns (FEATURES, position, CONTEXT)."""
    out: dict[str, list[float]] = {name: [] for name in (*FEATURES, "position", *CONTEXT)}
    for step in steps:
        ctx = getattr(step, "context", None)
        for d in step.decisions:
            if d.kind != "draft":
                continue
            for name in FEATURES:
                v = getattr(d, name, None)
                out[name].append(math.nan if v is None else float(v))
            out["position"].append(float(d.position))
            for name in CONTEXT:
                v = getattr(ctx, name, None) if ctx is not None else None
                out[name].append(math.nan if v is None else float(v))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def kept_and_emitted(steps: Iterable[Any]) -> tuple[int, int]:
    """(drafted tokens the rule kept and that were emitted, tokens emitted) over `StepRecord`s with decisions."""
    kept = emitted = 0
    for step in steps:
        emitted += len(step.emitted)
        kept += sum(1 for d in step.decisions if d.kind == "draft" and d.accepted and d.deferred is False)
    return kept, emitted


def target_share(kept: int, emitted: int) -> float:
    """1 − kept / emitted (see the module docstring); NaN with nothing emitted."""
    return 1.0 - kept / emitted if emitted else math.nan


class AlphaMap:
    """α as a function of u ∈ [0, 1], the share of logged positions the rule would defer.

    u = 1 is the speculative end (every position deferred), u = 0 the drafter-only end (none).
    Between them α(u) is the (1 − u)-quantile of the logged critical α (RouteLLM's quantile step);
    without scores, α moves linearly between the working ends. Searching over u rather than α
    keeps rules with very different α scales (opt's is unbounded) equally well conditioned.
    """

    def __init__(self, spec_end: float, drafter_end: float, scores: np.ndarray | None):
        finite = scores[np.isfinite(scores)] if scores is not None else np.empty(0)
        self.scores = np.sort(finite)
        self.spec_end, self.drafter_end = self._working_ends(spec_end, drafter_end)

    def _working_ends(self, spec: float, drafter: float) -> tuple[float, float]:
        """Infinite ends become finite just past the logged scores (or the sweep's clip without scores)."""
        up = drafter > spec
        lo_s, hi_s = (float(self.scores[0]), float(self.scores[-1])) if len(self.scores) else DEFAULT_INF_CLIP
        pad = max(1e-6, 1e-3 * (hi_s - lo_s))
        if math.isinf(spec):
            spec = lo_s - pad if up else hi_s + pad
        if math.isinf(drafter):
            drafter = hi_s + pad if up else lo_s - pad
        return float(spec), float(drafter)

    def alpha(self, u: float) -> float:
        u = min(1.0, max(0.0, u))
        if u >= 1.0:
            return self.spec_end
        if u <= 0.0:
            return self.drafter_end
        if len(self.scores) == 0:
            return self.drafter_end + u * (self.spec_end - self.drafter_end)
        a = float(np.quantile(self.scores, 1.0 - u))
        lo, hi = sorted((self.spec_end, self.drafter_end))
        return min(hi, max(lo, a))

    def u_of(self, alpha: float) -> float:
        """The share of logged positions with a critical α above `alpha` (the inverse, for a known point)."""
        if len(self.scores) == 0:
            span = self.spec_end - self.drafter_end
            return float(min(1.0, max(0.0, (alpha - self.drafter_end) / span))) if span else 0.0
        return float(np.mean(self.scores > alpha))
