"""Policies side by side on the same prompts, in one process: speed, acceptance, quality, peers.

    rows = [target-only (added when missing), policy_1 .. policy_n, peers (transformers)]
    warm-up  -> every row: `warmup` untimed generations
    record   -> every row: one untimed pass over the prompts; decisions logged to the store,
                quality (chrF, target log-prob) computed and written with `set_quality`
    timed    -> `repeats` passes, round-robin over the rows (so drift hits every row alike),
                nothing recorded: decode tokens/s of a pass = its tokens / its decode seconds

A row reports the median tokens/s over the timed passes with its spread (min, max,
quartiles), the speed-up over target-only on the same target measured in this same
process (SPEC.md, "Metrics"), τ, acceptance and deferral rates, target and drafter
calls per token, time to first token, chrF against the prompts' references and the
target's mean log-prob of the emitted tokens, both also relative to target-only.

Models are loaded once per (path, dtype, device) and shared between the rows that
name them (`ModelCache`): thirteen policies over one target load it once.

Peers (`peers=("hf",)`): transformers' assisted generation (`generate(assistant_model=...)`)
and prompt lookup (`generate(prompt_lookup_num_tokens=...)`) on the same models, prompts
and block size, greedy. Every greedy lossless row says whether its tokens are identical
to target-only's and to each peer's.

The cost model of SPEC.md gives each speculative row a ceiling: with acceptance a,
block γ, drafter step cost c and verification cost v (both relative to one target step,
measured here on the row's own models), speed-up ≤ (1 − a^{γ+1}) / (1 − a) / (γ·c + v).
"""

from __future__ import annotations

import contextlib
import math
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cascade import models, quality
from cascade.bench_report import COLUMNS, format_result, identical_cell, table_rows, write_json  # noqa: F401
from cascade.costmodel import speedup_ceiling, step_costs  # noqa: F401  (re-exported)
from cascade.errors import CascadeError
from cascade.metrics import Metrics
from cascade.peers import HF_ASSISTED, HF_LOOKUP  # noqa: F401  (row names, re-exported)
from cascade.peers import hf_peers as _hf_peers
from cascade.peers import sync as _sync
from cascade.policy import Policy, load_policy, parse_policy

# `cascade bench` with no arguments: the shipped policies, in this order
DEFAULT_POLICIES = (
    "target-only", "speculative-lossless", "speculative-ngram", "cascade-token-v3", "sequential-chow",
    "lossy-speculative",
)
DEFAULT_PROMPTS = "prompts/stdlib-heldout.jsonl"
PEERS = ("hf",)


# ---------------------------------------------------------------------- shipped files


def shipped(relative: str) -> Path:
    """A shipped file (policies/, prompts/): from the working directory, else from this checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base / relative
        if candidate.exists():
            return candidate
    raise CascadeError(f"{relative} not found in {Path.cwd()} or next to the cascade package: "
                       "run from the cascade checkout or name the files explicitly")


def default_policies() -> list[Path]:
    return [shipped(f"policies/{name}.yaml") for name in DEFAULT_POLICIES]


def read_prompts(path: Path, limit: int | None = None) -> list[dict]:
    """JSONL rows with a string "prompt" (and optionally "reference"); the first `limit` of them."""
    from cascade.cli import read_prompts as read_jsonl

    rows = read_jsonl(Path(path))
    if limit is not None:
        if limit < 1:
            raise CascadeError(f"--limit must be at least 1, got {limit}")
        rows = rows[:limit]
    return rows


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

    def load_model(self, path, dtype=torch.float32, device=None, trust_remote_code=False, revision=None):
        key = (str(path), str(dtype), str(device or "cpu"), bool(trust_remote_code), revision)
        if key not in self.models:
            self.models[key] = self._load_model(path, dtype, device, trust_remote_code, revision)
            self.loads += 1
        return self.models[key]

    def load_tokenizer(self, path, trust_remote_code=False, revision=None):
        key = (str(path), bool(trust_remote_code), revision)
        if key not in self.tokenizers:
            self.tokenizers[key] = self._load_tokenizer(path, trust_remote_code, revision)
        return self.tokenizers[key]


def build_engine(policy: Policy, cache: ModelCache, registry=None):
    from cascade.engine import Engine

    return Engine.from_policy(policy, registry, loader=cache)


# ---------------------------------------------------------------------- rows to run




def target_key(model) -> tuple:
    """Rows on the same loaded target compare with each other (speed-up, quality, identical tokens)."""
    return (id(model),)


def is_lossless_greedy(policy: Policy) -> bool:
    d = policy.decoding
    if d.temperature != 0.0:
        return False
    return (policy.mode == "target"
            or (policy.mode == "speculative" and policy.rule.name == "none")
            or (policy.mode == "lossy" and d.lenience == 1.0))


class PolicyRow:
    """One of our policies: an engine over (possibly shared) models."""

    kind = "policy"

    def __init__(self, policy: Policy, engine, auto: bool = False):
        self.policy, self.engine = policy, engine
        self.name = policy.name
        self.auto = auto  # added by the bench (the target-only baseline), not asked for
        self.target_model = engine.target.model
        self.device = engine.device
        self.lossless = is_lossless_greedy(policy)

    def encode(self, prompt: str) -> list[int]:
        return self.engine.encode(prompt).tolist()

    def generate(self, prompt: str, max_new_tokens: int | None, *, on_step=None, record: bool = False):
        gen = self.engine.generate(prompt, max_new_tokens=max_new_tokens, on_step=on_step, record_decisions=record)
        _sync(self.device)
        return gen

    def describe(self) -> dict[str, Any]:
        p = self.policy
        return {
            "mode": p.mode, "rule": p.rule.name, "alpha": p.rule.alpha, "lenience": p.decoding.lenience,
            "block_size": p.decoding.block_size, "temperature": p.decoding.temperature,
            "target": p.target.model, "drafter": _drafter_label(p),
        }


def _drafter_label(policy: Policy) -> str | None:
    if policy.drafter is None or policy.mode == "target":
        return None
    model = policy.drafter.options.get("model")
    return f"{policy.drafter.plugin}:{model}" if model else policy.drafter.plugin


# ---------------------------------------------------------------------- results


@dataclass
class Row:
    name: str
    kind: str  # "policy" | "baseline" (target-only added by the bench) | "peer"
    mode: str
    rule: str | None
    alpha: float | None
    lenience: float | None
    block_size: int | None
    temperature: float | None
    target: str
    drafter: str | None
    tokens_per_second: float  # median over the timed passes
    tokens_per_second_min: float
    tokens_per_second_max: float
    tokens_per_second_q1: float
    tokens_per_second_q3: float
    tokens_per_second_passes: list[float]
    speedup: float  # median tokens/s over target-only's median tokens/s (same target, same process)
    speedup_min: float  # over the passes, each paired with target-only's pass of the same round
    speedup_max: float
    baseline: str | None  # the target-only row the speed-up and relative quality refer to
    mean_acceptance_length: float  # τ
    acceptance_rate: float
    deferral_rate: float
    target_calls_per_token: float
    drafter_calls_per_token: float
    ttft_seconds: float  # mean over the prompts (median over the passes)
    num_generated_tokens: int  # per pass
    decode_seconds: float  # median over the passes
    chrf: float  # corpus chrF against the references, 0..100
    chrf_rel: float  # chrF / target-only's chrF
    target_logprob: float  # the target's mean log-prob per emitted token (nats)
    target_logprob_delta: float  # minus target-only's
    lossless_greedy: bool
    identical: dict[str, bool] = field(default_factory=dict)  # other row -> same tokens on every prompt
    differing_prompts: dict[str, int] = field(default_factory=dict)
    cost_model: dict[str, float] | None = None
    run_id: int | None = None  # the store's run of the recorded pass


@dataclass
class BenchResult:
    rows: list[Row]
    meta: dict[str, Any]
    outputs: dict[str, list[list[int]]] = field(repr=False, default_factory=dict)  # row -> token ids per prompt

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [_clean(asdict(r)) for r in self.rows]}


def _clean(obj):
    """NaN -> None for JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def machine_info() -> dict[str, Any]:
    import transformers

    info = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "cpu_count": _cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": None,
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.cuda.get_device_name(0)
    return info


def _cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


# ---------------------------------------------------------------------- the run


@dataclass
class _Measure:
    outputs: list = field(default_factory=list)  # Generation per prompt, the recorded pass
    chrf: float = math.nan
    logprob: float = math.nan
    passes: list[Metrics] = field(default_factory=list)  # one total per timed pass
    run_id: int | None = None


def plan_rows(policies: Sequence[Policy], cache: ModelCache, registry=None, peers: Sequence[str] = ()) -> list:
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
        rows += _hf_peers(rows)
    return rows


def _target_only(like: Policy, name: str, taken: set[str]) -> Policy:
    while name in taken:
        name += "'"
    data = like.model_dump(mode="json", exclude={"drafter", "rule", "description"})
    data.update(name=name, mode="target", description=f"target-only baseline added by `cascade bench` ({like.name}'s target)")
    return parse_policy(data, f"<target-only of {like.name}>", like.base_dir)


def run_bench(
    policies: Sequence[Policy],
    prompts: Sequence[dict],
    *,
    repeats: int = 3,
    warmup: int = 1,
    max_new_tokens: int | None = None,
    peers: Sequence[str] = (),
    store=None,
    progress: bool = True,
    cache: ModelCache | None = None,
    registry=None,
    costs: bool = True,
    meta: dict[str, Any] | None = None,
) -> BenchResult:
    """Run every policy (and peer) on the same prompts; see the module docstring for the phases."""
    if repeats < 1:
        raise CascadeError(f"--repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise CascadeError(f"--warmup must be >= 0, got {warmup}")
    if not prompts:
        raise CascadeError("no prompts to benchmark")
    cache = cache or ModelCache()
    rows = plan_rows(policies, cache, registry, peers)
    measures = {r.name: _Measure() for r in rows}
    n = len(prompts)
    total = len(rows) * (warmup + n * (1 + repeats))
    with _progress(total, progress) as bar:
        for r in rows:  # warm-up: caches, allocator, kernels; nothing kept
            bar.set_description(f"warm-up {r.name}")
            for i in range(warmup):
                r.generate(prompts[i % n]["prompt"], max_new_tokens)
                bar.update()
        for r in rows:  # the recorded pass: store, outputs, quality
            bar.set_description(f"record {r.name}")
            _record(r, prompts, max_new_tokens, store, measures[r.name], bar)
        for rep in range(repeats):  # timed passes, round-robin
            for r in rows:
                bar.set_description(f"pass {rep + 1}/{repeats} {r.name}")
                parts = []
                for row in prompts:
                    parts.append(r.generate(row["prompt"], max_new_tokens).metrics)
                    bar.update()
                measures[r.name].passes.append(Metrics.total(parts))
    cost = _costs(rows, prompts) if costs else {}
    result = _summarize(rows, measures, cost, n)
    result.meta = {
        "machine": machine_info(), "n_prompts": n, "repeats": repeats, "warmup": warmup,
        "max_new_tokens": max_new_tokens, "peers": list(peers), "model_loads": cache.loads,
        "store": getattr(store, "url", None), **(meta or {}),
    }
    return result


@contextlib.contextmanager
def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not enabled, unit="gen", dynamic_ncols=True, leave=False, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


def _record(r, prompts, max_new_tokens, store, m: _Measure, bar) -> None:
    """One untimed pass: outputs for quality and token identity; our rows go to the store."""
    from cascade.store import engine_info

    run = None
    if store is not None and r.kind == "policy":
        info = engine_info(r.engine)
        info["source"] = "cascade bench"
        run = store.start_run(r.policy, info)
        m.run_id = run.run_id
    seq_ids = []
    try:
        for row in prompts:
            seq = run.start_sequence(row["prompt"], reference=row.get("reference")) if run else None
            gen = r.generate(row["prompt"], max_new_tokens, on_step=run.step_logger(seq) if run else None,
                             record=run is not None or r.kind == "peer")
            if run:
                run.end_sequence(seq, gen)
            seq_ids.append(seq)
            m.outputs.append(gen)
            bar.update()
        hyps = [g.text for g in m.outputs]
        refs = [row.get("reference") for row in prompts]
        m.chrf = quality.corpus_chrf(hyps, refs)
        lps, total_lp, total_n = [], 0.0, 0
        for row, gen in zip(prompts, m.outputs):
            lp = quality.token_logprobs(r.target_model, r.encode(row["prompt"]), gen.token_ids)
            lps.append(float(lp.mean()) if lp.numel() else None)
            total_lp += float(lp.sum())
            total_n += lp.numel()
        m.logprob = total_lp / total_n if total_n else math.nan
        if run:
            for seq, row, gen, lp in zip(seq_ids, prompts, m.outputs, lps):
                ref = row.get("reference")
                store.set_quality(seq, chrf=quality.chrf(gen.text, ref) if ref is not None else None,
                                  target_logprob=lp, reference=ref)
    except BaseException as exc:
        if run:
            run.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", error=str(exc))
        raise
    if run:
        run.finish("done")


def _costs(rows, prompts) -> dict[tuple, dict[str, float]]:
    """c and v per (target, drafter, γ) of the speculative rows, on the first prompt."""
    out: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r.kind != "policy" or r.policy.mode not in ("speculative", "lossy"):
            continue
        drafter_model = getattr(getattr(r.engine.drafter, "lm", None), "model", None)
        gamma = r.policy.decoding.block_size
        key = (id(r.target_model), id(drafter_model), gamma)
        if key not in out:
            out[key] = step_costs(r.target_model, drafter_model, r.encode(prompts[0]["prompt"]), gamma)
    return out


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def _summarize(rows, measures: dict[str, _Measure], cost, n_prompts: int) -> BenchResult:
    baselines = {}
    for r in rows:
        if r.kind == "policy" and r.policy.mode == "target":
            baselines.setdefault(target_key(r.target_model), r.name)
    out_rows, outputs = [], {}
    for r in rows:
        m = measures[r.name]
        outputs[r.name] = [g.token_ids for g in m.outputs]
        tps = [p.tokens_per_second for p in m.passes]
        q1, q3 = _quartiles(tps)
        base_name = baselines.get(target_key(r.target_model))
        base = measures[base_name] if base_name else None
        base_tps = [p.tokens_per_second for p in base.passes] if base else []
        speedup = statistics.median(tps) / statistics.median(base_tps) if base_tps else math.nan
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
        desc = r.describe()
        cost_model = None
        if r.kind == "policy" and r.policy.mode in ("speculative", "lossy"):
            drafter_model = getattr(getattr(r.engine.drafter, "lm", None), "model", None)
            key = (id(r.target_model), id(drafter_model), r.policy.decoding.block_size)
            if key in cost:
                c = cost[key]
                cost_model = {**c, "gamma": r.policy.decoding.block_size, "acceptance_rate": acc,
                              **speedup_ceiling(acc, r.policy.decoding.block_size, c["c"], c["v"])}
        out_rows.append(Row(
            name=r.name, kind="peer" if r.kind == "peer" else ("baseline" if r.auto else "policy"),
            mode=desc["mode"], rule=desc["rule"], alpha=desc["alpha"], lenience=desc["lenience"],
            block_size=desc["block_size"], temperature=desc["temperature"], target=desc["target"],
            drafter=desc["drafter"],
            tokens_per_second=statistics.median(tps), tokens_per_second_min=min(tps), tokens_per_second_max=max(tps),
            tokens_per_second_q1=q1, tokens_per_second_q3=q3, tokens_per_second_passes=tps,
            speedup=speedup, speedup_min=min(paired), speedup_max=max(paired), baseline=base_name,
            mean_acceptance_length=tau, acceptance_rate=acc, deferral_rate=defer,
            target_calls_per_token=tcpt, drafter_calls_per_token=dcpt, ttft_seconds=ttft,
            num_generated_tokens=timed.num_generated_tokens,
            decode_seconds=statistics.median(p.decode_seconds for p in m.passes),
            chrf=m.chrf, chrf_rel=math.nan, target_logprob=m.logprob, target_logprob_delta=math.nan,
            lossless_greedy=bool(r.lossless), cost_model=cost_model, run_id=m.run_id,
        ))
    by_name = {row.name: row for row in out_rows}
    for r, row in zip(rows, out_rows):
        base_name = row.baseline
        if base_name:
            row.chrf_rel = quality.relative(row.chrf, by_name[base_name].chrf)
            row.target_logprob_delta = quality.delta(row.target_logprob, by_name[base_name].target_logprob)
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
    return BenchResult(out_rows, {}, outputs)


def load_policies(paths: Sequence[str | Path]) -> list[Policy]:
    return [load_policy(p) for p in paths]
