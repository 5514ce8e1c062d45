"""The bench's measurements turned into result rows.

Per row: tokens/s over the timed passes (Σ tokens / Σ seconds; single passes' spread), the speed-up over the
target-only row on the same target, τ / acceptance / deferral, calls per token, TTFT,
quality relative to target-only, the cost model's ceiling for our rows that use a drafter
(`ceiling`), and, for greedy lossless rows, whether their tokens are identical to
target-only's and the peers'.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from cascade.bench import quality, stats
from cascade.bench.results import BenchResult, BenchRow
from cascade.bench.rows import target_key
from cascade.metrics import QUALITY, Metrics, Quality
from cascade.runtime.costmodel import speedup_ceiling, verify_cost


@dataclass
class Measure:
    """What the run collected for one row."""

    outputs: list = field(default_factory=list)  # Generation per prompt and seed, the recorded pass
    prompt_index: list[int] = field(default_factory=list)  # the prompt of each output
    quality: list[Quality] = field(default_factory=list)  # the quality of each output
    chrf: float = math.nan  # corpus chrF over the outputs
    logprob: float = math.nan  # token-weighted mean over the outputs
    passes: list[Metrics] = field(default_factory=list)  # one total per timed pass
    prompt_tokens: dict[int, float] = field(default_factory=lambda: defaultdict(float))  # over the timed passes
    prompt_seconds: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    run_id: int | None = None

    def per_prompt(self, metric: str) -> dict[str, float]:
        """{prompt index: mean of `metric` over its seeds} (a prompt with no value left out)."""
        values: dict[str, list[float]] = defaultdict(list)
        for i, q in zip(self.prompt_index, self.quality):
            v = getattr(q, metric)
            if v is not None:
                values[str(i)].append(v)
        return stats.per_prompt(values)


def _pooled(m: Measure) -> float:
    """Σ tokens / Σ seconds over every timed pass of every prompt (the speed-up's own estimator)."""
    seconds = sum(m.prompt_seconds.values())
    return sum(m.prompt_tokens.values()) / seconds if seconds > 0 else math.nan


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarize(
    rows,
    measures: dict[str, Measure],
    cost: dict[tuple, dict[str, float]],
    n_prompts: int,
    clusters: dict[int, str] | None = None,
) -> BenchResult:
    """Result rows in the order of `rows`; `cost` holds c and v per `PolicyRow.cost_key()`; `clusters`: each
    prompt's source file (intervals then resample whole files), None for independent prompts."""
    baselines = {}
    for r in rows:
        if r.kind == "policy" and r.policy.mode == "target":
            baselines.setdefault(target_key(r.target_model), r.name)
    out_rows = [_row(r, measures, baselines.get(target_key(r.target_model)), cost, n_prompts, clusters) for r in rows]
    outputs = {r.name: [g.token_ids for g in measures[r.name].outputs] for r in rows}
    _compare(rows, out_rows, outputs, [measures[r.name] for r in rows], clusters)
    return BenchResult(out_rows, {}, outputs)


def _quality(m: Measure, metric: str, clusters: dict[int, str] | None) -> stats.Estimate:
    values = m.per_prompt(metric)  # {str(prompt index): mean over seeds}
    groups = None if clusters is None else [clusters[int(k)] for k in values]
    return stats.estimate(list(values.values()), clusters=groups)


def _row(
    r, measures: dict[str, Measure], base_name: str | None, cost, n_prompts: int, clusters: dict[int, str] | None
) -> BenchRow:
    m = measures[r.name]
    tps = [p.tokens_per_second for p in m.passes]
    q1, q3 = _quartiles(tps)
    base = measures[base_name] if base_name else None
    base_tps = [p.tokens_per_second for p in base.passes] if base else []
    paired = [a / b for a, b in zip(tps, base_tps)] if base_tps else [math.nan]
    # counters: ours from the timed passes (identical every pass); peers' calls from the recorded pass
    counted = m.passes[0] if r.kind == "policy" else Metrics.total([g.metrics for g in m.outputs])
    timed = m.passes[0]
    tcpt = counted.target_calls / timed.num_generated_tokens if timed.num_generated_tokens else math.nan
    dcpt = counted.drafter_calls / timed.num_generated_tokens if timed.num_generated_tokens else math.nan
    if r.kind == "peer":
        tau = timed.num_generated_tokens / counted.target_calls if counted.target_calls else math.nan
        acc = defer = math.nan
        if r.assistant is None:
            dcpt = math.nan  # lookups are not forward passes: not counted
        if r.shared:
            tau = tcpt = dcpt = math.nan
        ttft = counted.ttft_seconds / n_prompts
    else:
        tau, acc, defer = timed.mean_acceptance_length, timed.acceptance_rate, timed.deferral_rate
        ttft = statistics.median(p.ttft_seconds / n_prompts for p in m.passes)
    # one estimator for the figure and its interval: Σ tokens / Σ seconds over every timed pass, over target-only's
    # (the interval resamples prompts); the spread of single passes is speedup_min/max
    speed_ci = stats.NAN
    speedup = 1.0 if base is not None else math.nan
    if base is not None and r.name != base_name:
        speed_ci = stats.speedup(
            m.prompt_tokens, m.prompt_seconds, base.prompt_tokens, base.prompt_seconds, clusters=clusters
        )
        speedup = speed_ci.mean
    desc = r.describe()
    cost_model = None
    if r.kind == "policy" and r.policy.mode != "target" and r.cost_key() in cost:
        base_seconds = 1 / _pooled(base) if base is not None else math.nan
        cost_model = ceiling(cost[r.cost_key()], timed, tcpt, dcpt, base_seconds, r.policy.verifies)
    return BenchRow(
        name=r.name,
        kind="peer" if r.kind == "peer" else ("baseline" if r.auto else "policy"),
        mode=desc["mode"],
        rule=desc["rule"],
        alpha=desc["alpha"],
        lenience=desc["lenience"],
        block_size=desc["block_size"],
        temperature=desc["temperature"],
        target=desc["target"],
        drafter=desc["drafter"],
        tokens_per_second=_pooled(m),
        tokens_per_second_min=min(tps),
        tokens_per_second_max=max(tps),
        tokens_per_second_q1=q1,
        tokens_per_second_q3=q3,
        tokens_per_second_passes=tps,
        speedup=speedup,
        speedup_min=min(paired),
        speedup_max=max(paired),
        baseline=base_name,
        mean_acceptance_length=tau,
        acceptance_rate=acc,
        deferral_rate=defer,
        target_calls_per_token=tcpt,
        drafter_calls_per_token=dcpt,
        ttft_seconds=ttft,
        num_generated_tokens=timed.num_generated_tokens,
        decode_seconds=statistics.median(p.decode_seconds for p in m.passes),
        chrf=_quality(m, "chrf", clusters).mean,  # what the store and the dashboard show for the run
        chrf_corpus=m.chrf,
        chrf_rel=math.nan,
        target_logprob=m.logprob,
        target_logprob_delta=math.nan,
        lossless_greedy=bool(r.lossless),
        cost_model=cost_model,
        run_id=m.run_id,
        speedup_low=speed_ci.low,
        speedup_high=speed_ci.high,
        seeds=len(m.outputs) // max(len(set(m.prompt_index)), 1),
        quality={k: _quality(m, k, clusters).as_dict() for k in QUALITY},
    )


def ceiling(
    cost: dict, timed: Metrics, tcpt: float, dcpt: float, base_seconds_per_token: float, verifies: bool
) -> dict:
    """The cost model's numbers for one row and its ceiling (`cascade.runtime.costmodel`, module docstring there).

    `cost`: `step_costs` for the row's models; `timed`: its counters; tcpt, dcpt: its target and drafter
    calls per emitted token; `base_seconds_per_token`: target-only's, from its tokens/s over the timed passes.
    """
    block = 1.0  # tokens per target call: a verified block is its drafts + 1; a sequential call at least 1
    if verifies and timed.num_drafts:
        block = 1.0 + timed.num_draft_tokens / timed.num_drafts
    v_block = verify_cost(cost.get("verify_costs") or [1.0, cost["v"]], block)
    overhead = base_seconds_per_token / cost["target_step_seconds"] - 1.0
    overhead = 0.0 if math.isnan(overhead) else max(overhead, 0.0)
    return {
        **cost,
        "mean_block_tokens": block,
        "v_block": v_block,
        "overhead": overhead,
        "target_calls_per_token": tcpt,
        "drafter_calls_per_token": dcpt,
        "speedup_ceiling": speedup_ceiling(
            target_calls_per_token=tcpt, drafter_calls_per_token=dcpt, c=cost["c"], v=v_block, overhead=overhead
        ),
    }


def _compare(
    rows,
    out_rows: list[BenchRow],
    outputs: dict[str, list[list[int]]],
    measures: list[Measure],
    clusters: dict[int, str] | None = None,
) -> None:
    """Quality relative to the baseline; identical tokens between greedy lossless rows on one target."""
    by_name = {row.name: row for row in out_rows}
    measure_of = {r.name: m for r, m in zip(rows, measures)}
    for r, row in zip(rows, out_rows):
        if row.baseline:
            base = by_name[row.baseline]
            row.chrf_rel = quality.relative(row.chrf, base.chrf)
            row.target_logprob_delta = quality.delta(row.target_logprob, base.target_logprob)
            mine, theirs = measure_of[r.name], measure_of[row.baseline]
            # paired over the prompts both decoded: row − target-only, with its interval
            by_key = None if clusters is None else {str(i): c for i, c in clusters.items()}
            row.quality_delta = {
                k: stats.paired(mine.per_prompt(k), theirs.per_prompt(k), clusters=by_key).as_dict() for k in QUALITY
            }
        if not r.lossless:
            continue
        # greedy lossless rows on one target must agree token for token: say so for every pair
        # (ours vs target-only and the peers; target-only vs the peers; peers vs target-only)
        for other in rows:
            if other is r or not other.lossless or target_key(other.target_model) != target_key(r.target_model):
                continue
            other_is_target = other.kind == "policy" and other.policy.mode == "target"
            if r.kind == "peer" and not other_is_target:
                continue
            if r.kind == "policy" and other.kind == "policy" and not other_is_target:
                continue
            differ = sum(a != b for a, b in zip(outputs[r.name], outputs[other.name]))
            row.identical[other.name] = differ == 0
            row.differing_prompts[other.name] = differ
