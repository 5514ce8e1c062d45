"""`cascade bench` and `cascade sweep`.

Wire into the main parser with `add_parser(subparsers)`; each command sets
`func(args) -> int` and raises CascadeError for what the user can fix. Also runnable
alone: `python -m cascade.bench_cli bench ...`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from cascade.bench import DEFAULT_POLICIES, DEFAULT_PROMPTS, PEERS

    bench = sub.add_parser(
        "bench", help="policies side by side on the same prompts: speed, acceptance, quality, peers",
        description="Load each policy once, warm up, record one pass (store + quality), then time repeated passes "
                    "round-robin. With no POLICY: the shipped set (" + ", ".join(DEFAULT_POLICIES) + ").")
    bench.add_argument("policies", nargs="*", type=Path, metavar="POLICY", help="YAML policy files")
    _common(bench, DEFAULT_PROMPTS, repeats=3)
    bench.add_argument("--peers", choices=PEERS, action="append", default=[],
                       help="also run transformers' assisted generation and prompt lookup on the same models")
    bench.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="write the results to this JSON file")
    bench.add_argument("--store-cost", action="store_true",
                       help="instead: time the first POLICY with and without logging to the store (alternating passes)")
    bench.set_defaults(func=cmd_bench)

    sweep = sub.add_parser(
        "sweep", help="trace rules' speed/quality trade-off over α; CSV, JSON and a PNG plot",
        description="Vary α of each policy's rule (lenience for lossy policies), measure chrF against speed-up and "
                    "target calls per token, mark the Pareto frontier; target-only, lossless speculative, the "
                    "sequential cascade and lossy speculative decoding are added as baselines.")
    sweep.add_argument("policies", nargs="*", type=Path, metavar="POLICY",
                       help="YAML policy files (default: the shipped token_v3, opt and diff cascades)")
    grid = sweep.add_mutually_exclusive_group()
    grid.add_argument("--alpha", metavar="A,B,C", help="these α values (each rule keeps those in its range)")
    grid.add_argument("--alphas", type=int, default=5, metavar="N",
                      help="N evenly spaced α over each rule's range (default 5)")
    sweep.add_argument("--lenience", metavar="A,B,C", help="lenience values for lossy policies (default: like --alphas)")
    sweep.add_argument("--no-baselines", action="store_true", help="do not add the baseline curves")
    sweep.add_argument("--out", type=Path, default=Path("sweep"), metavar="DIR",
                       help="where sweep.csv, sweep.json and sweep.png go (default ./sweep)")
    _common(sweep, DEFAULT_PROMPTS, repeats=1)
    sweep.set_defaults(func=cmd_sweep)


def _common(p: argparse.ArgumentParser, default_prompts: str, repeats: int) -> None:
    p.add_argument("--prompts", type=Path, help=f"JSONL prompts with references (default: {default_prompts})")
    p.add_argument("--limit", type=int, metavar="N", help="the first N prompts only")
    p.add_argument("--repeats", type=int, default=repeats, metavar="N", help=f"timed passes (default {repeats})")
    p.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed warm-up generations per row (default 1)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="override decoding.max_new_tokens for every row")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--store", metavar="URL", help="log runs to this database (default: $CASCADE_STORE, ./cascade.db)")
    p.add_argument("--no-store", action="store_true", help="do not log the runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _setup(args, default_names: tuple[str, ...]):
    import torch

    from cascade import bench
    from cascade.policy import load_policy
    from cascade.store import Store, resolve_url

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = list(args.policies) or [bench.shipped(f"policies/{n}.yaml") for n in default_names]
    policies = [load_policy(p) for p in paths]
    prompts_path = args.prompts or bench.shipped(bench.DEFAULT_PROMPTS)
    prompts = bench.read_prompts(prompts_path, args.limit)
    url = resolve_url(args.store, no_store=args.no_store, policy=policies[0])
    store = Store.open(url) if url else None  # a bad URL fails here, before any model loads
    meta = {"prompts": str(prompts_path), "policies": [str(p) for p in paths],
            "command": " ".join(["cascade", *sys.argv[1:]])}
    return policies, prompts, store, meta


def cmd_bench(args) -> int:
    from cascade import bench

    policies, prompts, store, meta = _setup(args, bench.DEFAULT_POLICIES)
    if args.store_cost:
        return _store_cost(args, policies, prompts, store)
    try:
        result = bench.run_bench(policies, prompts, repeats=args.repeats, warmup=args.warmup,
                                 max_new_tokens=args.max_new_tokens, peers=args.peers, store=store,
                                 progress=not args.no_progress, meta=meta)
    finally:
        if store:
            store.close()
    print(bench.format_result(result))
    if args.json_out:
        bench.write_json(result, args.json_out)
        print(f"\nwrote {args.json_out}", file=sys.stderr)
    return 0


def _store_cost(args, policies, prompts, store) -> int:
    import json

    from cascade.engine import Engine
    from cascade.errors import CascadeError
    from cascade.store_cost import measure

    if store is None:
        raise CascadeError("--store-cost compares against the store: drop --no-store")
    policy = next((p for p in policies if p.mode != "target"), policies[0])
    try:
        cost = measure(Engine.from_policy(policy), store, [p["prompt"] for p in prompts],
                       passes=args.repeats, max_new_tokens=args.max_new_tokens)
    finally:
        store.close()
    print(cost.summary())
    if args.json_out:
        args.json_out.write_text(json.dumps(cost.__dict__, indent=2) + "\n")
    return 0


DEFAULT_SWEEP = ("cascade-token-v3", "cascade-opt", "cascade-diff")


def cmd_sweep(args) -> int:
    from cascade import sweep

    policies, prompts, store, meta = _setup(args, DEFAULT_SWEEP)
    alphas = sweep.parse_values(args.alpha, "--alpha") if args.alpha else None
    lenience = sweep.parse_values(args.lenience, "--lenience") if args.lenience else None
    curves = sweep.plan_curves(policies, alphas=alphas, n=args.alphas, lenience=lenience,
                               baselines=not args.no_baselines)
    try:
        result = sweep.run_sweep(curves, prompts, repeats=args.repeats, warmup=args.warmup,
                                 max_new_tokens=args.max_new_tokens, store=store, progress=not args.no_progress,
                                 meta=meta)
    finally:
        if store:
            store.close()
    paths = sweep.write_outputs(result, args.out)
    print(sweep.format_summary(result))
    print("\nwrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`cascade bench|sweep ...` through the main command line (one place handles errors and Ctrl-C)."""
    from cascade.cli import main as cascade_main

    return cascade_main(argv)


if __name__ == "__main__":
    sys.exit(main())
