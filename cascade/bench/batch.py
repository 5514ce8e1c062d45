"""`cascade bench --batch-sizes 1,4,8,16`: the throughput of batched decoding (SPEC.md "Batched decoding").

Every policy, and a target-only row per target (as the plain bench adds one), decodes the
same N prompts (N = the largest batch size; the prompts are cycled when the file has fewer)
at each batch size B: N/B batches per pass (the last one smaller when B does not divide N).
Passes go round-robin over the (row, B) cells for `repeats` rounds, after a warm-up pass of
each cell. One estimator, as the plain bench's: a cell's tok/s is its tokens over its seconds
summed over the rounds, and each speed-up is the ratio of two cells' tok/s (so the columns
agree with each other), with [min-max] of the ratios taken within single rounds.

    total tok/s   all rows' tokens / the pass's wall time
    decode tok/s  the same without each batch's time to its first tokens (the prefill of its prompts
                  and its first step), which batching cannot amortise over generated tokens
    row tok/s     mean over rows of its tokens / the time from its batch's start to its finish
    vs target     speed-up over target-only at the same B
    vs B=1        speed-up over the same policy at B = 1
    pad waste     the target's slots computed for padding / all slots it computed
    holes         the target's attended cache slots that hold no row's token / all attended slots
    KV/row        the target's and the model drafter's keys + values per row, at the largest
    accept        accepted drafts / drafted tokens
    c, v          the cost model's batched drafter step and verification (of n̄ tokens), in batched target steps
    predicted     SPEC.md's cost model at this B: τ / (d·c_B + v_B(n̄)), with τ (tokens per target
                  call per row), d (drafter calls per step) and n̄ (tokens per verification) as
                  measured, and c_B, v_B from `costmodel.step_costs(rows=B)` (one batched drafter
                  step and one batched verification of n tokens, relative to one batched target step)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cascade.bench.run import ModelCache, plan_bench
from cascade.drafter import drafter_model
from cascade.errors import CascadeError
from cascade.runtime import costmodel
from cascade.schedules import profile
from cascade.tables import fmt, format_table


@dataclass
class Cell:
    """One row at one batch size: its passes and what they did."""

    row: str
    batch_size: int
    seconds: list[float] = field(default_factory=list)  # wall time per timed pass
    tokens: int = 0  # tokens per pass (all rows)
    row_tok_s: list[float] = field(default_factory=list)  # per pass: mean over rows of tokens / time to finish
    decode_seconds: list[float] = field(
        default_factory=list
    )  # per pass: wall time less each batch's time to first token
    counts: dict[str, float] = field(default_factory=dict)  # τ, d, n̄ of the last pass
    waste: dict[str, float] = field(default_factory=dict)  # pad waste, holes, KV bytes per row


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CascadeError(f"--batch-sizes takes a comma-separated list of integers, got {text!r}") from None
    if not sizes or any(b < 1 for b in sizes):
        raise CascadeError(f"--batch-sizes must list batch sizes of at least 1, got {text!r}")
    return sorted(set(sizes))


def run_batch_bench(
    policies,
    prompts: list[dict],
    batch_sizes: Sequence[int],
    *,
    repeats: int = 3,
    warmup: int = 1,
    max_new_tokens: int | None = None,
    progress: bool = True,
    meta: dict | None = None,
) -> dict:
    rows = [r for r in plan_bench(policies, ModelCache()) if r.kind == "policy"]
    for r in rows:
        if r.policy.mode == "sequential":
            raise CascadeError(f"{r.name}: mode 'sequential' decodes one row at a time; bench it without --batch-sizes")
    n = max(batch_sizes)
    texts = [prompts[i % len(prompts)]["prompt"] for i in range(n)]
    cells = {(r.name, b): Cell(r.name, b) for r in rows for b in batch_sizes}
    order = [(r, b) for r in rows for b in batch_sizes]
    for r, b in order:  # warm-up: every shape once (a cost table a schedule reads is timed for its B here)
        for _ in range(warmup):
            _pass(r.engine.with_batch_size(b), texts[:b], b, max_new_tokens)
    ratios: dict[tuple[str, int], list[float]] = {}
    for rnd in range(repeats):
        if progress:
            print(f"round {rnd + 1}/{repeats}", flush=True)
        times: dict[tuple[str, int], float] = {}
        for r, b in order:
            cell = cells[r.name, b]
            engine = r.engine.with_batch_size(b)  # the policy derived to this B: one source of the batch size
            before = _totals(engine)
            t, gens = _pass(engine, texts, b, max_new_tokens)
            times[r.name, b] = t
            cell.seconds.append(t)
            cell.tokens = sum(g.metrics.num_generated_tokens for g in gens)
            cell.row_tok_s.append(statistics.mean(g.metrics.tokens_per_second for g in gens))
            cell.decode_seconds.append(t - _first_tokens(gens, b))
            cell.counts = _counts(gens)
            cell.waste = _waste(before, _totals(engine), engine)
        for r, b in order:  # ratios within the round
            base = _baseline(rows, r)
            ratios.setdefault((r.name, b), []).append(times[base.name, b] / times[r.name, b])
            ratios.setdefault((r.name, -b), []).append(times[r.name, min(batch_sizes)] / times[r.name, b])
    predicted = {(r.name, b): _predict(r, b, cells[r.name, b].counts, texts[0]) for r, b in order}
    out = []

    def pooled(cell: Cell) -> float:  # tokens per second over every round
        return cell.tokens * len(cell.seconds) / sum(cell.seconds)

    for r, b in order:
        cell = cells[r.name, b]
        sec = statistics.fmean(cell.seconds)
        vs_t, vs_1 = ratios[r.name, b], ratios[r.name, -b]
        base_cell, b1_cell = cells[_baseline(rows, r).name, b], cells[r.name, min(batch_sizes)]
        out.append(
            {
                "row": r.name,
                "batch_size": b,
                "prompts": n,
                "tokens": cell.tokens,
                "seconds": sec,
                "total_tok_s": pooled(cell),
                "row_tok_s": statistics.median(cell.row_tok_s),
                "decode_tok_s": cell.tokens / statistics.median(cell.decode_seconds),
                "speedup_vs_target": pooled(cell) / pooled(base_cell),
                "speedup_vs_target_range": [min(vs_t), max(vs_t)],
                "speedup_vs_b1": pooled(cell) / pooled(b1_cell),
                "speedup_vs_b1_range": [min(vs_1), max(vs_1)],
                **cell.counts,
                **cell.waste,
                "predicted_vs_target": predicted[r.name, b],
            }
        )
    return {
        "meta": dict(
            meta or {},
            batch_sizes=list(batch_sizes),
            repeats=repeats,
            prompts_per_pass=n,
            note="tok/s: tokens / seconds summed over the rounds; speed-ups: ratios of those tok/s [min-max of "
            "single rounds' ratios]; min(batch_sizes) is the 'vs B=1' base",
        ),
        "rows": out,
    }


def _pass(engine, texts: list[str], b: int, max_new_tokens: int | None):
    t0 = time.perf_counter()
    gens = engine.generate(texts, max_new_tokens=max_new_tokens, batch_size=b, record_decisions=False)
    return time.perf_counter() - t0, gens


def _first_tokens(gens, b: int) -> float:
    """Σ over the pass's batches of the time to their first tokens (the prefill and the first step); the
    engine groups prompts by length (stable), so the batches are these runs of the sorted rows."""
    ordered = sorted(gens, key=lambda g: g.prompt_tokens) if b > 1 else gens
    return sum(min(g.metrics.ttft_seconds for g in ordered[i : i + b]) for i in range(0, len(ordered), b))


def _baseline(rows, r):
    for other in rows:
        if other.policy.mode == "target" and other.target_model is r.target_model:
            return other
    raise CascadeError(f"no target-only row for {r.name}")


def _totals(engine) -> dict[str, dict[str, int]]:
    lms = {"target": engine.target}
    lm = engine.drafter.runtime if engine.drafter is not None else None
    if lm is not None:
        lms["drafter"] = lm
    return {k: dict(v.totals) for k, v in lms.items()}


def _waste(before: dict, after: dict, engine) -> dict[str, float]:
    t0, t1 = before["target"], after["target"]
    computed = (t1["fed"] - t0["fed"]) + (t1["padded"] - t0["padded"])
    attended = t1["attended"] - t0["attended"]
    kv = sum(a["peak_row_bytes"] for a in after.values())
    return {
        "pad_waste": (t1["padded"] - t0["padded"]) / computed if computed else float("nan"),
        "hole_fraction": (t1["holes"] - t0["holes"]) / attended if attended else float("nan"),
        "kv_bytes_per_row": kv,
    }


def _counts(gens) -> dict[str, float]:
    tokens = sum(g.metrics.num_generated_tokens for g in gens)
    steps = sum(len(g.steps) for g in gens)
    target_calls = sum(g.metrics.target_calls for g in gens)
    verified = sum(s.drafted + 1 for g in gens for s in g.steps)
    drafted = sum(s.drafted for g in gens for s in g.steps)
    drafter_calls = sum(g.metrics.drafter_calls for g in gens)
    return {
        "tau": tokens / target_calls if target_calls else float("nan"),
        "acceptance": sum(s.accepted for g in gens for s in g.steps) / drafted if drafted else float("nan"),
        "drafter_calls_per_step": drafter_calls / steps if steps else 0.0,
        "tokens_per_verification": verified / steps if steps else float("nan"),
    }


def _predict(r, b: int, counts: dict[str, float], prompt: str) -> float:
    """SPEC.md's cost model at batch size b from this row's measured τ, d, n̄ and batched step costs."""
    if r.policy.mode == "target":
        return 1.0
    e = r.engine
    gamma = e.max_draft
    costs = costmodel.step_costs(
        e.target_model,
        drafter_model(e.drafter),
        e.encode(prompt).tolist(),
        gamma,
        trials=5,
        rows=b,
        runtimes=profile.runtimes(e),
        drafter_context=getattr(e.drafter, "context_tokens", None),
    )
    v = costmodel.verify_cost(costs["verify_costs"], counts["tokens_per_verification"])
    counts.update(c=costs["c"], v=v)
    return counts["tau"] / (counts["drafter_calls_per_step"] * costs["c"] + v)


def format_batch_result(result: dict) -> str:
    head = [
        "row",
        "B",
        "total tok/s",
        "decode tok/s",
        "row tok/s",
        "vs target",
        "vs B=1",
        "predicted",
        "τ",
        "accept",
        "c",
        "v",
        "pad waste",
        "holes",
        "KV/row",
    ]
    body: list[list[Any]] = []
    for x in result["rows"]:
        lo, hi = x["speedup_vs_target_range"]
        lo1, hi1 = x["speedup_vs_b1_range"]
        body.append(
            [
                x["row"],
                x["batch_size"],
                fmt(x["total_tok_s"], ".0f"),
                fmt(x["decode_tok_s"], ".0f"),
                fmt(x["row_tok_s"], ".1f"),
                f"{x['speedup_vs_target']:.2f}x [{lo:.2f}-{hi:.2f}]",
                f"{x['speedup_vs_b1']:.2f}x [{lo1:.2f}-{hi1:.2f}]",
                fmt(x["predicted_vs_target"], ".2f"),
                fmt(x["tau"], ".2f"),
                fmt(x.get("acceptance"), ".0%"),
                fmt(x.get("c"), ".2f"),
                fmt(x.get("v"), ".2f"),
                fmt(x["pad_waste"], ".1%"),
                fmt(x["hole_fraction"], ".1%"),
                f"{x['kv_bytes_per_row'] / 2**20:.1f} MiB",
            ]
        )
    return format_table(head, body)
