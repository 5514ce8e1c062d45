"""The bench's results as a terminal table and a JSON file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cascade.bench import BenchResult, Row


COLUMNS = ("policy", "tok/s (median [min-max])", "speed-up", "τ", "accept", "defer", "target/tok", "drafter/tok",
           "TTFT ms", "chrF (vs target)", "logp (Δ target)", "identical", "ceiling")


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def identical_cell(row: Row) -> str:
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
        out.append([
            r.name + (" *" if r.kind == "baseline" else ""),
            f"{_num(r.tokens_per_second, '.1f')} [{_num(r.tokens_per_second_min, '.1f')}-"
            f"{_num(r.tokens_per_second_max, '.1f')}]",
            _num(r.speedup, ".2f") + ("x" if not math.isnan(r.speedup) else ""),
            _num(r.mean_acceptance_length, ".2f"),
            _num(r.acceptance_rate, ".2f"),
            _num(r.deferral_rate, ".2f"),
            _num(r.target_calls_per_token, ".2f"),
            _num(r.drafter_calls_per_token, ".2f"),
            _num(r.ttft_seconds * 1e3 if r.ttft_seconds is not None else None, ".1f"),
            f"{_num(r.chrf, '.1f')} ({_num(r.chrf_rel * 100 if not math.isnan(r.chrf_rel) else math.nan, '.1f')}%)",
            f"{_num(r.target_logprob, '.3f')} ({_num(r.target_logprob_delta, '+.3f')})",
            identical_cell(r),
            (_num(ceiling, ".2f") + "x") if ceiling is not None and not math.isnan(ceiling) else "",
        ])
    return out


def format_result(result: BenchResult) -> str:
    from cascade.cli import format_table

    meta = result.meta
    m = meta.get("machine", {})
    device = m.get("cuda") or f"CPU {m.get('processor')} ({m.get('torch_threads')} torch threads)"
    head = (f"{meta.get('n_prompts')} prompts, {meta.get('repeats')} timed passes (median [min-max]), "
            f"warm-up {meta.get('warmup')}; {device}; torch {m.get('torch')}, transformers {m.get('transformers')}")
    notes = ["* added by the bench: target-only on the same target, the reference for speed-up and quality",
             "identical: greedy lossless rows vs target-only and the peers, token for token on every prompt",
             "ceiling: SPEC.md cost model (1-a^(γ+1))/(1-a)/(γc+v) with c, v measured on this machine"]
    return "\n".join([head, "", format_table(list(COLUMNS), table_rows(result)), ""] + notes)


def write_json(result: BenchResult, path: Path) -> None:
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
