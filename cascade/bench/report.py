"""The bench's results as a terminal table and a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from cascade.bench.results import BenchResult, BenchRow
from cascade.tables import fmt, format_table, is_missing

COLUMNS = (
    "policy",
    "tok/s [min-max]",
    "speed-up [95% CI]",
    "τ",
    "accept",
    "defer",
    "target/tok",
    "drafter/tok",
    "TTFT ms",
    "edit sim ±CI (Δ target ±CI)",
    "EM",
    "parses",
    "rep-4",
    "chrF (vs target)",
    "logp (Δ target)",
    "identical",
    "ceiling",
)


DROP_FIRST = (  # to fit a terminal, columns leave in this order; policy, speed-up, τ and edit sim always stay
    "ceiling",
    "logp (Δ target)",
    "rep-4",
    "EM",
    "TTFT ms",
    "drafter/tok",
    "chrF (vs target)",
    "parses",
    "defer",
    "accept",
    "tok/s [min-max]",
    "target/tok",
    "identical",
)


Table = tuple[list[str], list[list[str]], list[str]]


def fitted(headers: list[str], rows: list[list[str]], width: int | None) -> Table:
    """The table's columns that fit in `width` characters (None: all), dropping DROP_FIRST's in order until it
    fits; and the names of those dropped."""
    dropped: list[str] = []
    for name in DROP_FIRST:
        if width is None or max(len(line) for line in format_table(headers, rows).splitlines()) <= width:
            break
        i = headers.index(name)
        headers = headers[:i] + headers[i + 1 :]
        rows = [r[:i] + r[i + 1 :] for r in rows]
        dropped.append(name)
    return headers, rows, dropped


def _estimate(d: dict | None, spec: str, signed: bool = False) -> str:
    """`mean ±half-width` of a {"mean", "low", "high"} estimate; "-" when missing."""
    if not d or is_missing(d.get("mean")):
        return "-"
    mean = fmt(d["mean"], ("+" if signed else "") + spec)
    if is_missing(d.get("low")) or is_missing(d.get("high")):
        return mean
    return f"{mean} ±{fmt((d['high'] - d['low']) / 2, spec)}"


def quality_cell(row: BenchRow, metric: str, spec: str) -> str:
    """The row's mean ±CI and, for rows with a baseline, the paired difference to target-only ±CI."""
    own = _estimate(row.quality.get(metric), spec)
    if not row.baseline or row.baseline == row.name:
        return own
    return f"{own} ({_estimate(row.quality_delta.get(metric), spec, signed=True)})"


def identical_cell(row: BenchRow) -> str:
    if not row.identical:
        return ""
    bad = {k: v for k, v in row.differing_prompts.items() if v}
    if not bad:
        return "yes = " + ", ".join(row.identical)
    return "NO: " + ", ".join(f"{k} differs on {v}" for k, v in bad.items())


def table_rows(result: BenchResult) -> list[list[str]]:
    out = []
    for r in result.rows:
        ceiling = r.cost_model.get("speedup_ceiling") if r.cost_model else None
        out.append(
            [
                r.name + (" *" if r.kind == "baseline" else ""),
                f"{fmt(r.tokens_per_second, '.1f')} [{fmt(r.tokens_per_second_min, '.1f')}-"
                f"{fmt(r.tokens_per_second_max, '.1f')}]",
                fmt(r.speedup, ".2f", "x")
                + ("" if is_missing(r.speedup_low) else f" [{fmt(r.speedup_low, '.2f')}-{fmt(r.speedup_high, '.2f')}]"),
                fmt(r.mean_acceptance_length, ".2f"),
                fmt(r.acceptance_rate, ".2f"),
                fmt(r.deferral_rate, ".2f"),
                fmt(r.target_calls_per_token, ".2f"),
                fmt(r.drafter_calls_per_token, ".2f"),
                fmt(r.ttft_seconds * 1e3 if r.ttft_seconds is not None else None, ".1f"),
                quality_cell(r, "edit_similarity", ".1f"),
                _estimate(r.quality.get("exact_match"), ".2f"),
                _estimate(r.quality.get("parses"), ".2f"),
                _estimate(r.quality.get("repeat_4"), ".2f"),
                f"{fmt(r.chrf, '.1f')} ({fmt(r.chrf_rel * 100 if not is_missing(r.chrf_rel) else None, '.1f')}%)",
                f"{fmt(r.target_logprob, '.3f')} ({fmt(r.target_logprob_delta, '+.3f')})",
                identical_cell(r),
                "" if is_missing(ceiling) else fmt(ceiling, ".2f", "x"),
            ]
        )
    return out


def format_result(result: BenchResult, width: int | None = None) -> str:
    """The table with its notes; `width`: fit a terminal of that many columns (columns dropped are named)."""
    meta = result.meta
    m = meta.get("machine", {})
    device = m.get("cuda") or f"CPU {m.get('processor')} ({m.get('torch_threads')} torch threads)"
    seeds = meta.get("seeds") or 1
    head = (
        f"{meta.get('n_prompts')} prompts"
        + (f" × {seeds} seeds" if seeds > 1 else "")
        + f", {meta.get('repeats')} timed passes (tok/s over all of them [single passes' min-max]), "
        f"warm-up {meta.get('warmup')}; {device}; torch {m.get('torch')}, transformers {m.get('transformers')}"
    )
    notes = [
        "* added by the bench: target-only on the same target, the reference for speed-up and quality",
        "speed-up: tokens/s over target-only's, each Σ tokens / Σ seconds over all timed passes, with its 95% CI "
        f"(bootstrapped over {meta.get('bootstrap', 'prompts')}; single passes' spread in the JSON: speedup_min/max)",
        "edit sim: normalised Levenshtein similarity (0-100) of the first generated line to the reference's "
        "(CodeXGLUE line-level), mean over prompts ±95% CI, (paired difference to target-only ±95% CI); "
        "EM: first line exact; parses: prompt + completion is Python (or only unfinished); "
        "rep-4: share of repeated code-token 4-grams (loops; the references score about 0.1)",
        "chrF: the mean over prompts of each completion's chrF against its reference (what the store and the "
        "dashboard show for the run; the corpus statistic is chrf_corpus in the JSON), and its share of target-only's",
        "identical: greedy lossless rows vs target-only and the peers, token for token on every prompt",
        "ceiling: upper bound on the speed-up from the row's own calls per token and forward costs measured "
        "here: (1+ω)/(target/tok·(v+ω) + drafter/tok·c), v for its mean block, ω target-only's overhead "
        "(cascade/runtime/costmodel.py)",
    ]
    headers, rows, dropped = fitted(list(COLUMNS), table_rows(result), width)
    if dropped:
        left = ", ".join(dropped)
        notes.insert(0, f"left out to fit {width} columns: {left} (--wide shows every column; --json keeps all)")
    return "\n".join([head, "", format_table(headers, rows), ""] + notes)


def write_json(result: BenchResult, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
