"""Means with confidence intervals for the bench and the sweep.

Per-prompt values are the unit: several seeds of one prompt are averaged first (they
share the prompt, so they are not independent), then the interval is a percentile
bootstrap over prompts (`RESAMPLES` resamples with a fixed seed, so a report is
reproducible). Prompts cut from one source file are not independent either: given
`clusters` (each prompt's source), the bootstrap resamples whole files, each drawn
file bringing all of its prompts (a cluster bootstrap), which widens the interval as
much as the files differ. Paired comparisons (a policy against target-only on the same
prompts) resample the per-prompt differences, which is much tighter than comparing two
independent intervals.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float  # the interval's ends (NaN when fewer than two prompts)
    high: float
    n: int  # prompts behind it

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}

    def __format__(self, spec: str) -> str:
        if math.isnan(self.mean):
            return "-"
        spec = spec or ".3g"
        if math.isnan(self.low):
            return format(self.mean, spec)
        return f"{self.mean:{spec}} ±{self.half_width:{spec}}"


NAN = Estimate(math.nan, math.nan, math.nan, 0)


def cluster_weights(clusters: Sequence[Hashable], rng: np.random.Generator) -> np.ndarray:
    """(RESAMPLES, N) weights of N values in a cluster bootstrap: each resample draws as many clusters as there
    are, with replacement; a value weighs as many times as its cluster was drawn."""
    _, member = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    k = int(member.max()) + 1
    draws = rng.integers(0, k, size=(RESAMPLES, k)) + k * np.arange(RESAMPLES)[:, None]
    counts = np.bincount(draws.ravel(), minlength=RESAMPLES * k).reshape(RESAMPLES, k)
    return counts[:, member].astype(float)


def per_prompt(values: Mapping[str, Sequence[float | None]]) -> dict[str, float]:
    """{prompt key: mean over its seeds}, NaN values dropped (a prompt with none is dropped)."""
    out = {}
    for key, vals in values.items():
        kept = [v for v in vals if v is not None and not math.isnan(v)]
        if kept:
            out[key] = sum(kept) / len(kept)
    return out


def estimate(values: Sequence[float], level: float = LEVEL, clusters: Sequence[Hashable] | None = None) -> Estimate:
    """Mean and percentile-bootstrap interval of per-prompt values (NaN dropped): over independent prompts, or
    over whole clusters (`clusters[i]`: value i's source file) when given."""
    keep = [i for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    x = np.asarray([values[i] for i in keep], dtype=float)
    if x.size == 0:
        return NAN
    mean = float(x.mean())
    groups = None if clusters is None else [clusters[i] for i in keep]
    if x.size < 2 or (groups is not None and len(set(groups)) < 2):
        return Estimate(mean, math.nan, math.nan, int(x.size))
    rng = np.random.default_rng(SEED)
    if groups is not None:
        w = cluster_weights(groups, rng)
        means = (w * x).sum(axis=1) / w.sum(axis=1)
    else:
        means = x[rng.integers(0, x.size, size=(RESAMPLES, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(mean, float(low), float(high), int(x.size))


def paired(
    values: Mapping[str, float],
    baseline: Mapping[str, float],
    level: float = LEVEL,
    clusters: Mapping[str, Hashable] | None = None,
) -> Estimate:
    """values − baseline over the prompts both have: mean difference and its interval (`clusters`: each prompt's
    source, for a cluster bootstrap)."""
    keys = [k for k in values if k in baseline]
    groups = None if clusters is None else [clusters[k] for k in keys]
    return estimate([values[k] - baseline[k] for k in keys], level, groups)


def speedup(
    tokens: Mapping[int, float],
    seconds: Mapping[int, float],
    base_tokens: Mapping[int, float],
    base_seconds: Mapping[int, float],
    level: float = LEVEL,
    clusters: Mapping[int, Hashable] | None = None,
) -> Estimate:
    """(Σ tokens / Σ seconds) / (Σ base tokens / Σ base seconds) over the shared prompts, bootstrapped over prompts
    (or over whole source files, `clusters`: each prompt's)."""
    keys = [k for k in tokens if k in base_tokens and seconds.get(k) and base_seconds.get(k)]
    if not keys:
        return NAN
    a, b, c, d = (np.asarray([m[k] for k in keys], dtype=float) for m in (tokens, seconds, base_tokens, base_seconds))

    def ratio_of(idx: np.ndarray) -> np.ndarray:
        return (a[idx].sum(-1) / b[idx].sum(-1)) / (c[idx].sum(-1) / d[idx].sum(-1))

    point = float(ratio_of(np.arange(len(keys))))
    groups = None if clusters is None else [clusters[k] for k in keys]
    if len(keys) < 2 or (groups is not None and len(set(groups)) < 2):
        return Estimate(point, math.nan, math.nan, len(keys))
    rng = np.random.default_rng(SEED)
    if groups is not None:
        w = cluster_weights(groups, rng)
        boots = ((w * a).sum(-1) / (w * b).sum(-1)) / ((w * c).sum(-1) / (w * d).sum(-1))
    else:
        boots = ratio_of(rng.integers(0, len(keys), size=(RESAMPLES, len(keys))))
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(point, float(low), float(high), len(keys))
