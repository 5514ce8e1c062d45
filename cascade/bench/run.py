"""Policies side by side on the same prompts, in one process: speed, acceptance, quality, peers.

    rows = [target-only (added when missing), policy_1 .. policy_n, peers (transformers)]
    warm-up  -> every row: `warmup` untimed generations
    record   -> every row: one untimed pass over the prompts, each with `seeds` seeds (0..seeds-1);
                decisions logged to the store, quality computed per generation (`quality_of`:
                the completion metrics of `completion.py`, chrF, the target's log-prob) and
                written with `set_quality`
    timed    -> `repeats` passes, round-robin over the rows (so drift hits every row alike),
                nothing recorded; pass p decodes with seed p mod `seeds`: decode tokens/s of a
                pass = its tokens / its decode seconds, and per prompt its tokens and seconds

A row reports the median tokens/s over the timed passes with its spread (min, max,
quartiles), the speed-up over target-only on the same target measured in this same
process (SPEC.md, "Metrics"), τ, acceptance and deferral rates, target and drafter
calls per token, time to first token, chrF against the prompts' references and the
target's mean log-prob of the emitted tokens, both also relative to target-only
(`summary.py`).

Models are loaded once per (path, dtype, device) and shared between the rows that
name them (`ModelCache`): thirteen policies over one target load it once.

Peers (`peers=("hf",)`): transformers' assisted generation (`generate(assistant_model=...)`)
and prompt lookup (`generate(prompt_lookup_num_tokens=...)`) on the same models, prompts
and block size, greedy. Every greedy lossless row says whether its tokens are identical
to target-only's and to each peer's.

The "ceiling" column is an upper bound on a row's speed-up given what the row did and
what a forward costs here (`cascade.runtime.costmodel`): with its target calls T and drafter
calls D per emitted token, the mean verified block n̄ (drafts + 1), c and v(n) (one
drafter step, an n-token target step, relative to a one-token target step, measured
on the row's own models) and ω (target-only's non-forward time per token, relative),
speed-up ≤ (1 + ω) / (T·(v(n̄) + ω) + D·c); in speculative modes, with τ = 1/T and d
drafter calls per step, τ·(1 + ω) / (v(n̄) + ω + d·c). A row near its ceiling loses
little outside the forward passes; one far below it loses time in the engine. (It used
to be SPEC.md's forecast from the acceptance rate, which is not a bound: a cascade
measured 1.04x under a 0.90x "ceiling".)
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from cascade.bench import completion, quality
from cascade.bench.defaults import PEERS
from cascade.bench.peers import hf_peers
from cascade.bench.results import BenchResult, machine_info
from cascade.bench.rows import PolicyRow, target_key
from cascade.bench.summary import Measure, summarize
from cascade.errors import CascadeError
from cascade.metrics import Generation, Metrics, Quality
from cascade.policy import Policy
from cascade.runtime import models
from cascade.schedules import profile
from cascade.tables import nan_to_none

# ---------------------------------------------------------------------- shared models


class ModelCache:
    """Load each model and tokenizer once and hand the same object to every engine that names it.

    It is a model loader for `Engine.from_policy(policy, loader=cache)`: the engine loads the
    target through it and hands its `load_model` to drafters (`DrafterContext.load_model`).
    Models are used read-only (eval mode, inference only); each engine keeps its own KV cache.
    """

    def __init__(self):
        self.models: dict[tuple, Any] = {}
        self.tokenizers: dict[tuple, Any] = {}
        self.loads = 0  # models actually read from disk (or the hub)
        self._load_model = models.load_model
        self._load_tokenizer = models.load_tokenizer

    def load_model(
        self, path, dtype=torch.float32, device=None, trust_remote_code=False, revision=None, gguf_file=None
    ):
        key = (str(path), str(dtype), str(device or "cpu"), bool(trust_remote_code), revision, gguf_file)
        if key not in self.models:
            self.models[key] = self._load_model(path, dtype, device, trust_remote_code, revision, gguf_file)
            self.loads += 1
        return self.models[key]

    def load_tokenizer(self, path, trust_remote_code=False, revision=None, gguf_file=None):
        key = (str(path), bool(trust_remote_code), revision, gguf_file)
        if key not in self.tokenizers:
            self.tokenizers[key] = self._load_tokenizer(path, trust_remote_code, revision, gguf_file)
        return self.tokenizers[key]


def build_engine(policy: Policy, cache: ModelCache, registry=None):
    from cascade.decode.engine import Engine

    return Engine.from_policy(policy, registry, loader=cache)


# ---------------------------------------------------------------------- the rows


def plan_bench(policies: Sequence[Policy], cache: ModelCache, registry=None, peers: Sequence[str] = ()) -> list:
    """Engines for the policies (models shared), a target-only row per target that lacks one, and peers."""
    if not policies:
        raise CascadeError("no policy to benchmark: name at least one policy file")
    rows: list = [PolicyRow(p, build_engine(p, cache, registry)) for p in policies]
    names = [r.name for r in rows]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise CascadeError(f"two policies share the name {sorted(dup)[0]!r}: give each row its own `name`")
    baselines: dict[tuple, PolicyRow] = {}
    for r in rows:
        if r.policy.mode == "target":
            baselines.setdefault(target_key(r.target_model), r)
    added = []
    for r in rows:
        key = target_key(r.target_model)
        if key in baselines:
            continue
        base = _target_only(r.policy, "target-only" if not added else f"target-only-{len(added) + 1}", set(names))
        row = PolicyRow(base, build_engine(base, cache, registry), auto=True)
        baselines[key] = row
        added.append(row)
    rows = added + rows
    for peer in peers:
        if peer not in PEERS:
            raise CascadeError(f"unknown peer {peer!r}: available peers: {', '.join(PEERS)}")
        rows += hf_peers(rows)
    return rows


def _target_only(like: Policy, name: str, taken: set[str]) -> Policy:
    while name in taken:
        name += "'"
    return like.derive(
        name,
        {
            "mode": "target",
            "description": f"target-only baseline added by `cascade bench` ({like.name}'s target)",
        },
        drop=("drafter", "rule", "description"),
    )


# ---------------------------------------------------------------------- the run


def run_bench(
    policies: Sequence[Policy],
    prompts: Sequence[dict],
    *,
    repeats: int = 3,
    warmup: int = 1,
    seeds: int = 1,
    max_new_tokens: int | None = None,
    peers: Sequence[str] = (),
    store=None,
    progress: bool = True,
    cache: ModelCache | None = None,
    registry=None,
    costs: bool = True,
    meta: dict[str, Any] | None = None,
    eta: str | None = None,
    unit: str = "rows",
) -> BenchResult:
    """Run every policy (and peer) on the same prompts; see the module docstring for the phases.

    With `eta` (the command's name), one line on stderr once the first generation is done: how many
    generations (`unit` × prompts × passes) and about how long they take, from that first one.
    """
    if repeats < 1:
        raise CascadeError(f"--repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise CascadeError(f"--warmup must be >= 0, got {warmup}")
    if seeds < 1:
        raise CascadeError(f"--seeds must be at least 1, got {seeds}")
    if not prompts:
        raise CascadeError("no prompts to benchmark")
    cache = cache or ModelCache()
    rows = plan_bench(policies, cache, registry, peers)
    measures = {r.name: Measure() for r in rows}
    n = len(prompts)
    total = len(rows) * (warmup + n * (seeds + repeats))
    plan = None
    if eta:
        budget = f" of up to {max_new_tokens} new tokens" if max_new_tokens else ""
        recorded = f"{seeds} recorded seeds" if seeds > 1 else "1 recorded"
        plan = (
            f"{eta}: {len(rows)} {unit} × ({warmup} warm-up + {n} prompt{'s' if n != 1 else ''} × "
            f"({recorded} + {repeats} timed)) = {total} generations{budget}"
        )
    with _progress(total, progress, plan) as bar:
        for r in rows:  # warm-up: caches, allocator, kernels; nothing kept
            bar.set_description(f"warm-up {r.name}")
            for i in range(warmup):
                r.generate(prompts[i % n]["prompt"], max_new_tokens)
                bar.update()
        for r in rows:  # the recorded pass: store, outputs, quality
            bar.set_description(f"record {r.name}")
            _record(r, prompts, max_new_tokens, store, measures[r.name], bar, seeds)
        for rep in range(repeats):  # timed passes, round-robin
            for r in rows:
                bar.set_description(f"pass {rep + 1}/{repeats} {r.name}")
                m, parts = measures[r.name], []
                for i, row in enumerate(prompts):
                    g = r.generate(row["prompt"], max_new_tokens, seed=rep % seeds).metrics
                    parts.append(g)
                    m.prompt_tokens[i] += g.num_generated_tokens
                    m.prompt_seconds[i] += g.decode_seconds
                    bar.update()
                m.passes.append(Metrics.total(parts))
    cost = _costs(rows, prompts) if costs else {}
    clusters = sources(prompts)
    result = summarize(rows, measures, cost, n, clusters)
    result.meta = {
        "machine": machine_info(),
        "n_prompts": n,
        "bootstrap": f"source files ({len(set(clusters.values()))})" if clusters else "prompts",
        "repeats": repeats,
        "warmup": warmup,
        "seeds": seeds,
        "max_new_tokens": max_new_tokens,
        "peers": list(peers),
        "model_loads": cache.loads,
        "store": getattr(store, "url", None),
        **(meta or {}),
    }
    if store is not None:
        annotate(store, result)
    return result


def annotate(store, result) -> None:
    """Write each logged row's timed figures into its run (`runs.info["bench"]`), so the dashboard shows the
    bench's own speed-up for it: one estimator (the timed passes, Σ tokens / Σ seconds against the bench's
    target-only row), not a second one from the untimed recorded pass."""
    run_of = {r.name: r.run_id for r in result.rows}
    for r in result.rows:
        if r.run_id is None:
            continue
        figures = {
            "tokens_per_second": r.tokens_per_second,
            "speedup": r.speedup,
            "speedup_low": r.speedup_low,
            "speedup_high": r.speedup_high,
            "baseline_run_id": run_of.get(r.baseline) if r.baseline else None,
            "timed_passes": result.meta.get("repeats"),
            "chrf_corpus": r.chrf_corpus,
        }
        store.annotate_run(r.run_id, "bench", nan_to_none(figures))


@contextlib.contextmanager
def _progress(total: int, enabled: bool, plan: str | None = None):
    """A tqdm bar over the generations (its remaining time as it goes) and, with `plan`, the estimate up front."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not enabled, unit="gen", dynamic_ncols=True, leave=False, file=sys.stderr)
    try:
        yield _Clock(bar, total, plan)
    finally:
        bar.close()


class _Clock:
    """The bar's `update`/`set_description`; after the first generation, the plan and its estimated duration."""

    def __init__(self, bar, total: int, plan: str | None):
        self.bar, self.total, self.plan = bar, total, plan
        self.start = time.perf_counter()
        self.done = 0

    def set_description(self, text: str) -> None:
        self.bar.set_description(text)

    def update(self) -> None:
        self.bar.update()
        self.done += 1
        if self.done == 1 and self.plan:
            first = time.perf_counter() - self.start
            self.bar.write(
                f"{self.plan}; about {duration(first * self.total)} on this machine "
                f"(the first took {first:.2f} s; rows differ)",
                file=sys.stderr,
            )


def duration(seconds: float) -> str:
    """'40 s', '7 min', '1 h 05 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _record(r, prompts, max_new_tokens, store, m: Measure, bar, seeds: int = 1) -> None:
    """One untimed pass, `seeds` seeds per prompt: outputs for quality and token identity; our rows go to the
    store (one run each, one sequence per prompt and seed, with its quality)."""
    if store is not None and r.kind == "policy":
        from cascade.store import engine_info

        logging = store.start_run(r.policy, {**engine_info(r.engine), "source": "cascade bench"})
    else:
        logging = contextlib.nullcontext()
    with logging as run:  # the run ends done, failed or interrupted with the block
        if run:
            m.run_id = run.run_id
        for i, row in enumerate(prompts):
            for seed in range(seeds):

                def decode(on_step=None, row=row, seed=seed):  # one prompt at a time, as the timed passes decode
                    record = run is not None or r.kind == "peer"
                    gen = r.generate(row["prompt"], max_new_tokens, on_step=on_step, record=record, seed=seed)
                    return [(0, gen)]

                if run:
                    ((_, gen, seq),) = run.record([row], decode, seed=seed)
                else:
                    ((_, gen),), seq = decode(), None
                q = quality_of(r, row, gen)
                m.outputs.append(gen)
                m.prompt_index.append(i)
                m.quality.append(q)
                if run:
                    store.set_quality(seq, q, reference=row.get("reference"))
                bar.update()
        m.chrf = quality.corpus_chrf([g.text for g in m.outputs], [prompts[i].get("reference") for i in m.prompt_index])
        total_lp = sum(
            q.target_logprob * len(g.token_ids) for q, g in zip(m.quality, m.outputs) if q.target_logprob is not None
        )
        total_n = sum(len(g.token_ids) for q, g in zip(m.quality, m.outputs) if q.target_logprob is not None)
        m.logprob = total_lp / total_n if total_n else math.nan


def quality_of(r, row: dict, gen: Generation) -> Quality:
    """Every quality metric of one generation: the completion metrics, sentence chrF, the target's log-prob."""
    ref = row.get("reference")
    lp = quality.token_logprobs(r.target_model, r.encode(row["prompt"]), gen.token_ids)
    scores = completion.score(row["prompt"], gen.text, ref)
    return replace(
        scores,
        chrf=quality.chrf(gen.text, ref) if ref is not None else None,
        target_logprob=float(lp.mean()) if lp.numel() else None,
    )


def sources(prompts) -> dict[int, str] | None:
    """Each prompt's source file, when every prompt names one and they come from more than one file (the bench's
    intervals then resample whole files: prompts cut from one file are not independent); else None."""
    found = {i: p.get("source") for i, p in enumerate(prompts)}
    if not found or any(not isinstance(v, str) or not v for v in found.values()) or len(set(found.values())) < 2:
        return None
    return {i: str(v) for i, v in found.items()}


def _costs(rows, prompts) -> dict[tuple, dict]:
    """c and v(1..γ+1) per `PolicyRow.cost_key()` of our rows that use a drafter: the cost table the
    adaptive schedule reads (`cascade.schedules.profile`, measured now when this machine has none cached for
    these models, else the cached one; `cascade profile --remeasure` refreshes it), so the ceiling and
    the scheduler use the same numbers."""
    out: dict[tuple, dict] = {}
    for r in rows:
        if r.kind != "policy" or r.policy.mode == "target":
            continue
        key = r.cost_key()
        if key not in out:
            table, path, measured = profile.cost_table(r.engine, max(key[2], 1))
            rel = table.relative()
            verify = rel["verify_costs"][: key[2] + 1] if key[2] else rel["verify_costs"][:1]
            out[key] = {
                "target_step_seconds": rel["target_step_seconds"],
                "verify_costs": verify,
                "v": verify[-1],
                "verify_seconds": table.verify_seconds[len(verify) - 1],
                "c": rel["c"],
                "drafter_step_seconds": table.draft_seconds,
                "cost_table": str(path),
                "cost_table_measured_at": table.provenance.get("measured_at"),
            }
    return out
