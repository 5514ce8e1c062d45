"""`cascade bench`, `cascade sweep` and `cascade store-cost`.

Wired into the main parser (cascade/cli.py) with `add_parser(subparsers)`; each command
sets `func(args) -> int` and raises CascadeError for what the user can fix.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cascade.bench.defaults import (
    DEFAULT_LIMIT,
    DEFAULT_POLICIES,
    DEFAULT_PROMPTS,
    DEFAULT_SWEEP,
    PEERS,
    default_policies,
    shipped,
)
from cascade.errors import CascadeError


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="policies side by side on the same prompts: speed, acceptance, quality, peers",
        description="Load each policy once, warm up, record one pass (store + quality), then time repeated passes "
        "round-robin. With no POLICY: the shipped set (" + ", ".join(DEFAULT_POLICIES) + ").",
    )
    bench.add_argument("policies", nargs="*", type=Path, metavar="POLICY", help="YAML policy files")
    _common(bench, repeats=3)
    _seeds(bench)
    bench.add_argument(
        "--peers",
        choices=PEERS,
        action="append",
        default=[],
        help="also run transformers' assisted generation and prompt lookup on the same models",
    )
    bench.add_argument(
        "--batch-sizes",
        metavar="B,B,..",
        help="measure batched decoding instead: every row (and target-only) decodes the same prompts "
        "at each batch size (e.g. 1,4,8,16): total and per-row tok/s, speed-ups over target-only "
        "at the same B and over B=1, padding and hole waste, KV memory per row, and the cost "
        "model's prediction",
    )
    bench.add_argument(
        "--calls",
        type=int,
        metavar="K",
        help="measure single model calls instead: the drafter's step and target calls over 1..K+1 "
        "tokens, transformers' forward against cascade's lean one, with the arithmetic share",
    )
    bench.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="write the results to this JSON file")
    bench.add_argument(
        "--wide", action="store_true", help="print every column (default: fit the terminal; a pipe gets them all)"
    )
    load = bench.add_argument_group(
        "serving (`cascade bench serve --url URL`): load a running `cascade serve`, as vLLM's bench serve does"
    )
    load.add_argument("--url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    load.add_argument("--model", action="append", default=[], help="a served model to load (default: every one)")
    load.add_argument("--concurrency", default="1,4,8", metavar="C,C,..", help="requests in flight (default 1,4,8)")
    load.add_argument("--rate", type=float, metavar="R", help="Poisson arrivals at R requests/s (default: all at once)")
    load.add_argument("--requests", type=int, default=32, metavar="N", help="requests per level (default 32)")
    load.add_argument(
        "--max-seconds", type=float, default=300.0, metavar="S", help="wall-clock cap per level (default 300)"
    )
    bench.set_defaults(func=cmd_bench)

    cost = sub.add_parser(
        "store-cost",
        help="what logging every decision to the store costs (alternating passes)",
        description="Time POLICY on the prompts with and without logging to the store, in alternating passes "
        "(one process, so drift hits both sides alike); prints the ratio of median pass times.",
    )
    cost.add_argument("policy", type=Path, metavar="POLICY", help="YAML policy file")
    _common(cost, repeats=3)
    cost.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="write the figures to this JSON file")
    cost.set_defaults(func=cmd_store_cost)

    sweep = sub.add_parser(
        "sweep",
        help="trace rules' speed/quality trade-off over α; CSV, JSON and a PNG plot",
        description="Vary α of each policy's rule (lenience for lossy policies), measure chrF against speed-up and "
        "target calls per token, mark the Pareto frontier; target-only, lossless speculative, the "
        "sequential cascade and lossy speculative decoding are added as baselines. Every point runs the "
        "prompts like a bench row; a line up front gives the number of generations and an estimate of "
        "the time (--limit N prompts and --alphas N points per curve make it shorter).",
    )
    sweep.add_argument(
        "policies",
        nargs="*",
        type=Path,
        metavar="POLICY",
        help="YAML policy files (default: the shipped token_v3 and chow cascades, the n-gram cascade "
        "and lossless n-gram lookup)",
    )
    grid = sweep.add_mutually_exclusive_group()
    grid.add_argument("--alpha", metavar="A,B,C", help="these α values (each rule keeps those in its range)")
    grid.add_argument(
        "--alphas", type=int, default=5, metavar="N", help="N evenly spaced α over each rule's range (default 5)"
    )
    sweep.add_argument(
        "--lenience", metavar="A,B,C", help="lenience values for lossy policies (default: like --alphas)"
    )
    sweep.add_argument("--no-baselines", action="store_true", help="do not add the baseline curves")
    sweep.add_argument(
        "--from",
        dest="from_json",
        type=Path,
        metavar="SWEEP_JSON",
        help="measure nothing: re-analyse and re-plot a sweep.json written earlier (into --out)",
    )
    sweep.add_argument(
        "--out",
        type=Path,
        default=Path("sweep"),
        metavar="DIR",
        help="where sweep.csv, sweep.json and sweep.png go (default ./sweep)",
    )
    _common(sweep, repeats=1)
    _seeds(sweep)
    sweep.set_defaults(func=cmd_sweep)


def _seeds(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="recorded generations per prompt, seeds 0..N-1 (default 1; use several with --temperature > 0)",
    )


def _common(p: argparse.ArgumentParser, repeats: int) -> None:
    p.add_argument("--prompts", type=Path, help=f"JSONL prompts with references (default: {DEFAULT_PROMPTS})")
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"the first N prompts only (default {DEFAULT_LIMIT}; 0 = all of them)",
    )
    p.add_argument(
        "--prompt-tokens",
        type=int,
        metavar="S",
        help="cut every prompt to its last S tokens (the first policy's tokenizer), leaving out shorter "
        "ones: measures at one context length",
    )
    p.add_argument("--repeats", type=int, default=repeats, metavar="N", help=f"timed passes (default {repeats})")
    p.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed warm-up generations per row (default 1)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="override decoding.max_new_tokens for every row")
    p.add_argument(
        "--temperature",
        type=float,
        metavar="T",
        help="override decoding.temperature for every row (e.g. 1 to evaluate sampling; 0 = greedy)",
    )
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--store",
        metavar="URL",
        help="log runs to this database (default: $CASCADE_STORE, else cascade.db in the user's folder)",
    )
    p.add_argument("--no-store", action="store_true", help="do not log the runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@dataclass
class _Setup:
    """What every measuring command starts from."""

    policies: list  # Policy, in the order named
    prompts: list[dict]
    store: Any  # cascade.store.Store, or None with --no-store
    meta: dict[str, Any] = field(default_factory=dict)


def _setup(args, paths: list[Path]) -> _Setup:
    import torch

    from cascade.policy import load_policy
    from cascade.prompts import read_prompts
    from cascade.store import Store, resolve_url

    if args.threads:
        torch.set_num_threads(args.threads)
    policies = [load_policy(p) for p in paths]
    temperature = getattr(args, "temperature", None)
    if temperature is not None:
        if temperature < 0:
            raise CascadeError(f"--temperature must be >= 0, got {temperature}")
        if temperature > 0 and getattr(args, "peers", None):
            raise CascadeError("--peers decode greedily: drop --peers, or use --temperature 0")
        policies = [p.derive(p.name, {"decoding": {"temperature": temperature}}, drop=()) for p in policies]
    prompts_path = args.prompts or shipped(DEFAULT_PROMPTS)
    prompts = read_prompts(prompts_path, args.limit or None)
    if getattr(args, "prompt_tokens", None) is not None:
        from cascade.prompts import tail_prompts
        from cascade.runtime import models

        spec = policies[0].target
        tokenizer = models.load_tokenizer(
            models.resolve_model_path(spec.model, policies[0].base_dir),
            spec.trust_remote_code,
            spec.revision,
            spec.gguf_file,
        )
        prompts = tail_prompts(prompts, tokenizer, args.prompt_tokens)
    url = resolve_url(args.store, no_store=args.no_store, policy=policies[0])
    store = Store.open(url) if url else None  # a bad URL fails here, before any model loads
    meta = {
        "prompts": str(prompts_path),
        "policies": [str(p) for p in paths],
        "command": " ".join(["cascade", *sys.argv[1:]]),
    }
    return _Setup(policies, prompts, store, meta)


def _bench_serve(args) -> int:
    from cascade.bench import serve_load
    from cascade.prompts import read_prompts

    if len(args.policies) > 1 or not args.url:
        raise CascadeError("usage: cascade bench serve --url URL [--prompts FILE] [--concurrency 1,4,8] ...")
    try:
        levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        raise CascadeError(f"--concurrency takes comma-separated integers, got {args.concurrency!r}") from None
    if any(c < 1 for c in levels) or args.requests < 1:
        raise CascadeError("--concurrency levels and --requests must be at least 1")
    rows = read_prompts(args.prompts or DEFAULT_PROMPTS)
    prompts = [r["prompt"] for r in rows][: args.limit or None]
    url = args.url.rstrip("/")
    served = serve_load.models(url)
    for m in args.model:
        if m.split("@")[0] not in served:
            raise CascadeError(f"model {m!r} is not served at {url}; served: {', '.join(served)}")
    results = []
    for model in args.model or served:
        for c in levels:
            r = serve_load.level(
                url, model, prompts, c, args.requests, args.max_seconds, args.max_new_tokens or 128, args.rate
            )
            results.append(r)
            print(
                f"{model} at concurrency {c}: {r['completed']} ok, {r['failed']} failed, "
                f"{r['output_throughput']:.1f} output tok/s",
                file=sys.stderr,
                flush=True,
            )
    print(serve_load.table(results))
    if args.json_out:
        args.json_out.write_text(json.dumps({"url": url, "prompts": len(prompts), "levels": results}, indent=2))
    return 1 if any(r["failed"] for r in results) else 0


def terminal_width() -> int | None:
    """The terminal's columns when stdout is one; None (every column) for a pipe or a file."""
    import shutil

    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def cmd_bench(args) -> int:
    from cascade.bench import report
    from cascade.bench.run import run_bench

    if [str(p) for p in args.policies[:1]] == ["serve"]:
        return _bench_serve(args)
    if args.batch_sizes:
        return _bench_batches(args)
    if args.calls is not None:
        return _bench_calls(args)
    s = _setup(args, list(args.policies) or default_policies())
    try:
        result = run_bench(
            s.policies,
            s.prompts,
            repeats=args.repeats,
            warmup=args.warmup,
            seeds=args.seeds,
            max_new_tokens=args.max_new_tokens,
            peers=args.peers,
            store=s.store,
            progress=not args.no_progress,
            meta=s.meta,
            eta="bench",
        )
    finally:
        if s.store:
            s.store.close()
    print(report.format_result(result, None if args.wide else terminal_width()))
    logged = [f"{r.name} = run {r.run_id}" for r in result.rows if r.run_id is not None]
    if logged and s.store:
        print(f"\nlogged {len(logged)} runs to {s.store.url}: " + ", ".join(logged), file=sys.stderr)
    if args.json_out:
        report.write_json(result, args.json_out)
        print(f"\nwrote {args.json_out}", file=sys.stderr)
    return 0


def _bench_batches(args) -> int:
    from cascade.bench.batch import format_batch_result, parse_batch_sizes, run_batch_bench

    sizes = parse_batch_sizes(args.batch_sizes)
    if args.peers:
        raise CascadeError("--peers do not batch (transformers' assisted generation takes one row): drop --peers")
    s = _setup(args, list(args.policies) or default_policies())
    if s.store:
        s.store.close()  # batched passes are timed without logging
    result = run_batch_bench(
        s.policies,
        s.prompts,
        sizes,
        repeats=args.repeats,
        warmup=args.warmup,
        max_new_tokens=args.max_new_tokens,
        progress=not args.no_progress,
        meta=s.meta,
    )
    print(format_batch_result(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json_out}", file=sys.stderr)
    return 0


def _bench_calls(args) -> int:
    from cascade.bench.calls import compare_runtimes, format_calls
    from cascade.decode.engine import Engine

    if args.calls < 0:
        raise CascadeError(f"--calls takes the largest number of drafts to verify (>= 0), got {args.calls}")
    s = _setup(args, list(args.policies) or default_policies())
    if s.store:
        s.store.close()
    results = {}
    for policy in s.policies:
        rows = compare_runtimes(
            Engine.from_policy(policy), s.prompts[0]["prompt"], args.calls, trials=max(args.repeats, 5)
        )
        results[policy.name] = rows
        print(f"{policy.name}\n{format_calls(rows)}\n")
    if args.json_out:
        args.json_out.write_text(json.dumps({"meta": s.meta, "policies": results}, indent=2) + "\n")
        print(f"wrote {args.json_out}", file=sys.stderr)
    return 0


def cmd_store_cost(args) -> int:
    from cascade.bench.store_cost import measure
    from cascade.decode.engine import Engine

    s = _setup(args, [args.policy])
    if s.store is None:
        raise CascadeError("store-cost compares against the store: drop --no-store, or name one with --store URL")
    try:
        cost = measure(
            Engine.from_policy(s.policies[0]),
            s.store,
            [p["prompt"] for p in s.prompts],
            passes=args.repeats,
            max_new_tokens=args.max_new_tokens,
        )
    finally:
        s.store.close()
    print(cost.summary())
    if args.json_out:
        args.json_out.write_text(json.dumps(cost.__dict__, indent=2) + "\n")
    return 0


def cmd_sweep(args) -> int:
    from cascade.bench import sweep, sweep_analysis
    from cascade.bench.sweep_plot import write_outputs

    if args.from_json:
        result = sweep_analysis.load(args.from_json)
        paths = write_outputs(result, args.out)
        print(sweep_analysis.format_summary(result))
        print("\nwrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
        return 0
    s = _setup(args, list(args.policies) or default_policies(DEFAULT_SWEEP))
    alphas = sweep.parse_values(args.alpha, "--alpha") if args.alpha else None
    lenience = sweep.parse_values(args.lenience, "--lenience") if args.lenience else None
    curves = sweep.plan_curves(
        s.policies, alphas=alphas, n=args.alphas, lenience=lenience, baselines=not args.no_baselines
    )
    try:
        result = sweep.run_sweep(
            curves,
            s.prompts,
            repeats=args.repeats,
            warmup=args.warmup,
            seeds=args.seeds,
            max_new_tokens=args.max_new_tokens,
            store=s.store,
            progress=not args.no_progress,
            meta=s.meta,
            eta="sweep",
        )
    finally:
        if s.store:
            s.store.close()
    paths = write_outputs(result, args.out)
    print(sweep_analysis.format_summary(result))
    print("\nwrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
