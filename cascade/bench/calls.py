"""`cascade bench --calls`: what one model call costs, and where the time goes, per runtime.

For each model of a policy (its target, and its drafter when that runs a model) and each
runtime (`transformers`, the model's own forward; `lean`, cascade's, see cascade/runtime/lean.py),
after a prefill of a held-out prompt: the median wall time of a drafter step (one token)
and of a target call over n = 1..k+1 tokens (a verification of k drafts), each rolled back
untimed, interleaved over sizes and runtimes round after round (so a change in the machine's
load hits all alike). Then one profiled round splits each call's time into arithmetic
(the ATen kernels that compute: matrix products, attention, norms, activations,
elementwise math, embedding lookups, cache writes) and the rest (Python, module dispatch,
mask and cache bookkeeping, allocation): `arithmetic` is that share of the profiled time.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from cascade.runtime.ragged import RaggedLM

ARITHMETIC = (
    "mm",
    "addmm",
    "bmm",
    "matmul",
    "linear",
    "scaled_dot_product",
    "flash_attention",
    "layer_norm",
    "native_layer_norm",
    "gelu",
    "silu",
    "add",
    "mul",
    "sub",
    "div",
    "neg",
    "rsqrt",
    "pow",
    "mean",
    "cos",
    "sin",
    "cat",
    "index",
    "embedding",
    "copy_",
    "masked_fill",
    "softmax",
    "baddbmm",
    "exp",
)
RUNTIMES = ("transformers", "lean")


def _is_arithmetic(name: str) -> bool:
    op = name.removeprefix("aten::")
    return any(op == a or op.startswith(a + "_") or op.startswith("_" + a) for a in ARITHMETIC)


@torch.inference_mode()
def measure_calls(model: Any, prompt: list[int], sizes: list[int], trials: int = 15) -> dict[str, dict[int, dict]]:
    """runtime -> n -> {"ms": median wall ms of a call over n tokens, "arithmetic": share of profiled time}."""
    ids = torch.tensor(prompt, dtype=torch.long, device=next(model.parameters()).device)
    lms = {rt: RaggedLM(model, rt) for rt in RUNTIMES if rt == "transformers" or RaggedLM(model).lean is not None}
    base = {}
    for rt, lm in lms.items():
        lm.reset(1, len(prompt) + max(sizes) + 4)
        lm.forward([ids[:-1]], last_only=True)
        base[rt] = list(lm.lengths)
    samples: dict[tuple[str, int], list[float]] = {(rt, n): [] for rt in lms for n in sizes}
    for _ in range(trials + 2):  # two warm-up rounds
        for n in sizes:
            for rt, lm in lms.items():
                block = [ids[-1:].repeat(n)]
                t0 = time.perf_counter()
                lm.forward(block)
                samples[rt, n].append(time.perf_counter() - t0)
                lm.rollback(base[rt])
    out: dict[str, dict[int, dict]] = {}
    for rt, lm in lms.items():
        out[rt] = {}
        for n in sizes:
            share = _arithmetic_share(lm, [ids[-1:].repeat(n)], base[rt])
            out[rt][n] = {"ms": 1000 * statistics.median(samples[rt, n][2:]), "arithmetic": share}
    return out


def _arithmetic_share(lm: RaggedLM, block: list[torch.Tensor], base: list[int], reps: int = 10) -> float:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(reps):
            lm.forward(block)
            lm.rollback(base)
        wall = time.perf_counter() - t0
    busy = sum(e.self_cpu_time_total for e in prof.key_averages() if _is_arithmetic(e.key)) / 1e6
    return min(1.0, busy / wall) if wall > 0 else float("nan")


def compare_runtimes(engine: Any, prompt: str, max_k: int, trials: int = 15) -> list[dict]:
    """Rows for the table: the drafter's one-token step and the target's calls over 1..max_k+1 tokens."""
    from cascade.drafter import drafter_model

    ids = engine.encode(prompt).tolist()[-256:]
    rows = []
    dm = drafter_model(engine.drafter) if engine.drafter is not None else None
    jobs = [("drafter step", dm, [1])] if dm is not None else []
    jobs.append(("target", engine.target_model, list(range(1, max_k + 2))))
    for what, model, sizes in jobs:
        result = measure_calls(model, ids, sizes, trials)
        for n in sizes:
            row = {
                "call": what if what != "target" else f"target, {n} token{'s' if n > 1 else ''}",
                "model": model.config.model_type,
                "tokens": n,
            }
            for rt, by_n in result.items():
                row[f"{rt}_ms"] = by_n[n]["ms"]
                row[f"{rt}_arithmetic"] = by_n[n]["arithmetic"]
            if "lean_ms" in row:
                row["speedup"] = row["transformers_ms"] / row["lean_ms"]
            rows.append(row)
    return rows


def format_calls(rows: list[dict]) -> str:
    from cascade.tables import fmt, format_table

    head = ["call", "transformers ms", "arithmetic", "lean ms", "arithmetic", "lean speed-up"]
    return format_table(
        head,
        [
            [
                r["call"],
                fmt(r["transformers_ms"], ".2f"),
                fmt(r["transformers_arithmetic"], ".0%"),
                fmt(r.get("lean_ms"), ".2f"),
                fmt(r.get("lean_arithmetic"), ".0%"),
                fmt(r.get("speedup"), ".2f", "x"),
            ]
            for r in rows
        ],
    )
