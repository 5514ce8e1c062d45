"""The cost model's ceiling for eagle rows of a bench (`cascade eagle costs BENCH_JSON`).

`cascade bench` times one drafter call of a model drafter (c, relative to a one-token target step) to
put its "ceiling" beside each row (SPEC.md cost model: speed-up <= (1 + ω) / (T·(v(n̄) + ω) + D·c),
T and D target and drafter calls per token, v(n̄) the mean verified block's cost, ω the loop's
overhead). The eagle drafter runs no HF model of its own, so the bench's rows carry c = 0 for it. This
measures c for the head, as the drafter calls it (one pass over a frontier of `top_k` nodes, the
LM head included, after a realistic context), and recomputes the ceiling with it from the row's own
T, D, v(n̄) and ω.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch


def pass_seconds(engine: Any, prompt: str, width: int, trials: int = 30) -> float:
    """Median seconds of one head pass over `width` frontier nodes (embedding, layer, LM head, top-k)."""
    d = engine.drafter
    ids = engine.encode(prompt)
    d.start([ids])
    d.prepare(ids)  # prompt features and the catch-up pass: a realistic cache
    assert d.past is not None
    g = torch.zeros(1, width, d.head.cfg.hidden, dtype=d.dtype, device=d.device)
    x = ids[-width:].view(1, -1) if ids.shape[0] >= width else ids[:1].repeat(width).view(1, -1)
    position = torch.full((1, width), d.fed, device=d.device)
    times = []
    with torch.inference_mode():
        for _ in range(trials + 2):
            t = time.perf_counter()
            out, _, _ = d.head.step(g, d._embed(x), position, d.past, None if width == 1 else _bias(d, width))
            torch.topk(d._logits(out[0]), width, dim=-1)
            times.append(time.perf_counter() - t)
    return statistics.median(times[2:])


def _bias(d: Any, width: int) -> torch.Tensor:
    s = d.past[0].shape[2]
    bias = torch.full((width, s + width), float("-inf"), dtype=d.dtype, device=d.device)
    bias[:, :s] = 0
    bias[:, s:].fill_diagonal_(0)
    return bias


def ceilings(bench: dict[str, Any], c_by_row: dict[str, float]) -> list[dict[str, Any]]:
    """Per eagle row: measured speed-up, the bench's ceiling (c = 0) and the ceiling with the head's c."""
    out = []
    for row in bench["rows"]:
        if row["name"] not in c_by_row or not row.get("cost_model"):
            continue
        cm = row["cost_model"]
        c = c_by_row[row["name"]]
        omega, t, dcalls = cm["overhead"], cm["target_calls_per_token"], cm["drafter_calls_per_token"]
        ceiling = (1 + omega) / (t * (cm["v_block"] + omega) + dcalls * c)
        out.append(
            {
                "name": row["name"],
                "tau": row["mean_acceptance_length"],
                "speedup": row["speedup"],
                "speedup_min": row["speedup_min"],
                "speedup_max": row["speedup_max"],
                "ceiling_free_drafts": cm["speedup_ceiling"],
                "c_head_pass": round(c, 4),
                "v_block": round(cm["v_block"], 3),
                "drafter_calls_per_token": round(dcalls, 3),
                "target_calls_per_token": round(t, 3),
                "ceiling": round(ceiling, 3),
            }
        )
    return out


def write(rows: list[dict[str, Any]], out: Path) -> None:
    out.write_text(json.dumps(rows, indent=2) + "\n")
