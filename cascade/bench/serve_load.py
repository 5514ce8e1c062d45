"""`cascade bench serve --url URL`: a load generator for a running `cascade serve` (what serving benchmarks report).

For each concurrency level it sends streaming completions for the prompts (round-robin) with that many in
flight (or, with `--rate R`, arriving as a Poisson process of R requests per second, at most that many in
flight), bounded by a request count and a wall-clock cap, and reports vLLM bench's fields: completed and
failed requests, request and output-token throughput, and TTFT, TPOT (per request: after the first token,
per token), ITL (between streamed chunks, each a decoding step's tokens) and end-to-end latency at the
mean, median and p99, in milliseconds; plus the spec-decode acceptance from `/metrics` before and after.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cascade.errors import CascadeError

SPEC = (
    "spec_decode_num_drafts",
    "spec_decode_num_draft_tokens",
    "spec_decode_num_accepted_tokens",
)


@dataclass
class Outcome:
    ok: bool
    tokens: int = 0
    ttft: float = 0.0
    e2e: float = 0.0
    itls: list[float] = field(default_factory=list)
    error: str = ""


def one(client: Any, url: str, model: str, prompt: str, max_tokens: int) -> Outcome:
    """One streaming completion, timed."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = last = None
    itls: list[float] = []
    tokens = 0
    try:
        with client.stream("POST", url + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return Outcome(False, error=f"HTTP {r.status_code}: {r.read().decode(errors='replace')[:200]}")
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return Outcome(False, error=chunk["error"].get("message", "error"))
                now = time.perf_counter()
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    if first is None:
                        first = now
                    elif last is not None:
                        itls.append(now - last)
                    last = now
                if chunk.get("usage"):
                    tokens = int(chunk["usage"]["completion_tokens"])
    except Exception as exc:  # a dropped connection counts as a failure, not a crash of the benchmark
        return Outcome(False, error=f"{type(exc).__name__}: {exc}")
    end = time.perf_counter()
    return Outcome(True, tokens, (first or end) - start, end - start, itls)


def spec_counters(client: Any, url: str, model: str) -> dict[str, float]:
    """The spec-decode counters of `model` on the server's /metrics, summed over its series (one server's
    `cascade:` names, or Ray's `ray_cascade_` names with a series per replica)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = dict.fromkeys(SPEC, 0.0)
    text = client.get(url + "/metrics").text
    for family in text_string_to_metric_families(text):
        name = family.name.removeprefix("cascade:").removeprefix("ray_cascade_")
        if name in out:
            out[name] = sum(s.value for s in family.samples if s.labels.get("policy") == model)
    return out


def level(
    url: str,
    model: str,
    prompts: Sequence[str],
    concurrency: int,
    requests: int,
    max_seconds: float,
    max_tokens: int,
    rate: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """One concurrency level: vLLM bench serve's summary fields."""
    import httpx

    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds
    with httpx.Client(timeout=max(60.0, max_seconds)) as client:
        before = spec_counters(client, url, model)
        start = time.perf_counter()

        def task(i: int) -> None:
            if time.perf_counter() > deadline:
                return
            o = one(client, url, model, prompts[i % len(prompts)], max_tokens)
            with lock:
                outcomes.append(o)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            at = start
            for i in range(requests):
                if rate:  # Poisson arrivals
                    at += rng.expovariate(rate)
                    wait = at - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                if time.perf_counter() > deadline:
                    break
                pool.submit(task, i)
        wall = time.perf_counter() - start
        after = spec_counters(client, url, model)
    done = [o for o in outcomes if o.ok]
    tokens = sum(o.tokens for o in done)
    tpots = [(o.e2e - o.ttft) / (o.tokens - 1) for o in done if o.tokens > 1]
    itls = [x for o in done for x in o.itls]
    delta = {k: after[k] - before[k] for k in SPEC}
    drafted, accepted, drafts = (
        delta["spec_decode_num_draft_tokens"],
        delta["spec_decode_num_accepted_tokens"],
        delta["spec_decode_num_drafts"],
    )
    out: dict[str, Any] = {
        "model": model,
        "max_concurrency": concurrency,
        "request_rate": rate,
        "completed": len(done),
        "failed": len(outcomes) - len(done),
        "errors": sorted({o.error for o in outcomes if not o.ok})[:5],
        "duration": wall,
        "total_output_tokens": tokens,
        "request_throughput": len(done) / wall if wall else 0.0,
        "output_throughput": tokens / wall if wall else 0.0,
        "spec_decode_acceptance_rate": accepted / drafted if drafted else None,
        "spec_decode_acceptance_length": 1 + accepted / drafts if drafts else None,
        "spec_decode_num_drafts": drafts,
        "spec_decode_draft_tokens": drafted,
        "spec_decode_accepted_tokens": accepted,
    }
    for name, values in (
        ("ttft", [o.ttft for o in done]),
        ("tpot", tpots),
        ("itl", itls),
        ("e2el", [o.e2e for o in done]),
    ):
        out.update(_stats(name, values))
    return out


def _stats(name: str, values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"mean_{name}_ms": None, f"median_{name}_ms": None, f"p99_{name}_ms": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {
        f"mean_{name}_ms": 1000 * statistics.fmean(values),
        f"median_{name}_ms": 1000 * statistics.median(values),
        f"p99_{name}_ms": 1000 * p99,
    }


def models(url: str) -> list[str]:
    import httpx

    try:
        data = httpx.get(url + "/v1/models", timeout=30).json()["data"]
    except Exception as exc:
        raise CascadeError(f"no cascade server answers at {url}: {exc}") from None
    return [m["id"] for m in data]


def table(results: list[dict[str, Any]]) -> str:
    from cascade.tables import fmt, format_table

    rows = [
        [
            r["model"],
            r["max_concurrency"],
            f"{r['completed']}/{r['completed'] + r['failed']}",
            fmt(r["request_throughput"], ".2f"),
            fmt(r["output_throughput"], ".1f"),
            fmt(r["median_ttft_ms"], ".0f"),
            fmt(r["p99_ttft_ms"], ".0f"),
            fmt(r["median_tpot_ms"], ".1f"),
            fmt(r["p99_tpot_ms"], ".1f"),
            fmt(r["median_itl_ms"], ".1f"),
            fmt(r["median_e2el_ms"], ".0f"),
            fmt(r["spec_decode_acceptance_rate"], ".2f"),
        ]
        for r in results
    ]
    head = [
        "model",
        "conc",
        "ok",
        "req/s",
        "out tok/s",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "ITL p50",
        "E2E p50",
        "accept",
    ]
    return format_table(head, rows)
