"""What the adaptive schedule reads: a `CostTable` (seconds per drafter step and per target call over n tokens,
the loop's own time per step, per-position confidence temperatures) and the calibration that maps a drafter's
confidence through a position's temperature. Pure numbers: measuring them is `cascade.schedules.profile`'s."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TEMPERATURE_GRID = tuple(round(0.25 * 1.15**i, 4) for i in range(30))  # 0.25 .. ~14
MIN_ROWS_PER_POSITION = 30  # fewer logged drafts at a position: its temperature stays 1


@dataclass(frozen=True)
class CostTable:
    draft_seconds: float  # one drafter step (one token); 0 for a model-free drafter
    verify_seconds: tuple[float, ...]  # [n - 1]: one target call over n tokens, n = 1..K+1, non-decreasing
    temperatures: tuple[float, ...] = ()  # per draft position (1-based j at [j - 1]); missing = 1
    step_seconds: float = 0.0  # the decode loop's own time per step beyond the forwards (sampling, bookkeeping)
    provenance: Mapping[str, Any] = field(default_factory=dict)  # identity, when, host, trials, calibration source

    @property
    def max_k(self) -> int:
        return len(self.verify_seconds) - 1

    def relative(self) -> dict[str, Any]:
        """In units of one target step (cascade.runtime.costmodel's c and v(n))."""
        t1 = self.verify_seconds[0]
        return {
            "c": self.draft_seconds / t1,
            "verify_costs": [v / t1 for v in self.verify_seconds],
            "target_step_seconds": t1,
        }


def calibrate(c: float, temperature: float) -> float:
    """σ(logit(c) / T): temperature scaling of a probability (T = 1 leaves it, T > 1 softens it)."""
    if temperature == 1.0 or not 0.0 < c < 1.0:
        return min(max(c, 0.0), 1.0)
    return 1.0 / (1.0 + math.exp(-math.log(c / (1.0 - c)) / temperature))


def monotone(values: Sequence[float]) -> tuple[float, ...]:
    """The running maximum: a target call over more tokens never costs less than one over fewer."""
    out, best = [], -math.inf
    for v in values:
        best = max(best, float(v))
        out.append(best)
    return tuple(out)


def fit_temperatures(rows: Sequence[tuple[int, float, bool]], max_k: int) -> tuple[list[float], list[dict]]:
    """Per-position temperatures T_j minimising the log-loss of σ(logit(c)/T_j) against acceptance.

    rows: (position in block, 0-based; the drafter's confidence c; accepted) for drafts whose
    earlier positions in the block were all accepted (acceptance given the prefix survived). A
    position with fewer than MIN_ROWS_PER_POSITION rows keeps T = 1. Returns the temperatures
    (j = 1..max_k) and, per position, n, mean confidence, acceptance, and log-loss before and after.
    """
    by_pos: dict[int, list[tuple[float, bool]]] = {}
    for pos, c, acc in rows:
        if pos < max_k and c is not None and not math.isnan(c):
            by_pos.setdefault(int(pos), []).append((float(c), bool(acc)))

    def loss(pairs: list[tuple[float, bool]], t: float) -> float:
        total = 0.0
        for c, acc in pairs:
            a = min(max(calibrate(c, t), 1e-6), 1 - 1e-6)
            total -= math.log(a if acc else 1 - a)
        return total / len(pairs)

    temps, report = [], []
    for j in range(max_k):
        pairs = by_pos.get(j, [])
        if len(pairs) < MIN_ROWS_PER_POSITION:
            temps.append(1.0)
            report.append({"position": j + 1, "n": len(pairs), "temperature": 1.0})
            continue
        best = min(TEMPERATURE_GRID, key=lambda t: loss(pairs, t))
        temps.append(best)
        report.append(
            {
                "position": j + 1,
                "n": len(pairs),
                "temperature": best,
                "mean_confidence": statistics.fmean(c for c, _ in pairs),
                "acceptance": statistics.fmean(float(a) for _, a in pairs),
                "logloss_before": loss(pairs, 1.0),
                "logloss_after": loss(pairs, best),
            }
        )
    return temps, report
