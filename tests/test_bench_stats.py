"""cascade.bench.stats: bootstrap intervals over prompts, and over whole source files (a cluster bootstrap)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cascade.bench import stats


def test_a_file_cut_into_several_prompts_counts_once_in_the_interval():
    """50 files cut into 4 prompts each, the 4 cuts of a file alike (as cuts of one file are): resampling prompts
    as if independent gives an interval about √4 = 2 times too narrow; resampling files gives the honest one,
    about as wide as the interval of the 50 file means."""
    rng = np.random.default_rng(1)
    file_means = rng.normal(0, 1, 50)
    values = [float(m + rng.normal(0, 0.05)) for m in file_means for _ in range(4)]
    files = [f"file-{i}.py" for i in range(50) for _ in range(4)]
    naive = stats.estimate(values)
    clustered = stats.estimate(values, clusters=files)
    per_file = stats.estimate([float(np.mean(values[4 * i : 4 * i + 4])) for i in range(50)])
    assert clustered.mean == pytest.approx(naive.mean)
    assert clustered.half_width / naive.half_width == pytest.approx(2.0, rel=0.2)
    assert clustered.half_width == pytest.approx(per_file.half_width, rel=0.15)


def test_independent_prompts_in_files_of_one_give_the_same_interval_width():
    rng = np.random.default_rng(2)
    values = list(rng.normal(0, 1, 100))
    naive = stats.estimate(values)
    own = stats.estimate(values, clusters=[str(i) for i in range(100)])
    assert own.half_width == pytest.approx(naive.half_width, rel=0.1)


def test_the_speedup_and_paired_intervals_resample_files_too():
    rng = np.random.default_rng(3)
    n = 40
    files = {i: f"f{i // 4}" for i in range(n)}
    slow = {i: 1.0 + 0.5 * (i // 4 % 2) for i in range(n)}  # whole files fast or slow
    tokens = {i: 64.0 for i in range(n)}
    base_seconds = {i: slow[i] * (1 + rng.normal(0, 0.01)) for i in range(n)}
    seconds = {i: base_seconds[i] / (1.5 + 0.3 * (i // 4 % 3)) for i in range(n)}
    naive = stats.speedup(tokens, seconds, tokens, base_seconds)
    clustered = stats.speedup(tokens, seconds, tokens, base_seconds, clusters=files)
    assert clustered.mean == naive.mean and clustered.half_width > 1.5 * naive.half_width
    a = {str(i): float(i // 4) for i in range(n)}
    b = {str(i): 0.0 for i in range(n)}
    by_key = {str(i): f for i, f in files.items()}
    assert stats.paired(a, b, clusters=by_key).half_width > 1.5 * stats.paired(a, b).half_width


def test_one_file_has_no_interval():
    est = stats.estimate([1.0, 2.0, 3.0], clusters=["a", "a", "a"])
    assert est.mean == 2.0 and math.isnan(est.low) and math.isnan(est.high)
