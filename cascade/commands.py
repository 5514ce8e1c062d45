"""cascade's own subcommands, added through the `register_commands` hook like a plugin's.

`run` and `plugins` live here; `bench`, `sweep`, `store-cost`, `runs`, `db` and `zoo`
come from their wings' `cli` modules. The command line (`cascade.cli`) registers this
module with the plugin manager under the name "cascade" and asks it first, so a
plugin that adds a command of the same name is refused naming both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from cascade.errors import CascadeError
from cascade.hookspecs import hookimpl
from cascade.prompts import check_prompt, read_numbered_prompts
from cascade.tables import fmt, format_table, nan_to_none


@hookimpl
def register_commands(subparsers: argparse._SubParsersAction) -> None:
    from cascade.bench import cli as bench_cli
    from cascade.calibrate import cli as calibrate_cli
    from cascade.schedules import cli as profile_cli
    from cascade.serve import cli as serve_cli
    from cascade.store import cli as store_cli
    from cascade.zoo import cli as zoo_cli

    add_run(subparsers)
    add_plugins(subparsers)
    bench_cli.add_parser(subparsers)
    store_cli.add_parser(subparsers)
    zoo_cli.add_parser(subparsers)
    zoo_cli.add_models_parser(subparsers)
    calibrate_cli.add_parser(subparsers)
    profile_cli.add_parser(subparsers)
    serve_cli.add_parser(subparsers)


def add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="decode with a policy")
    run.add_argument("policy", type=Path, help="YAML policy file")
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompts", type=Path, help='JSONL file, one {"prompt": ...} per line')
    run.add_argument("--limit", type=int, metavar="N", help="the first N prompts of --prompts only")
    run.add_argument("--max-new-tokens", type=int, help="override decoding.max_new_tokens")
    run.add_argument("--temperature", type=float, metavar="T", help="override decoding.temperature (0 = greedy)")
    run.add_argument("--seed", type=int, help="override decoding.seed")
    run.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help="decode B prompts at once (override decoding.batch_size; default 1): each result is "
        "printed as its row finishes, with its prompt's index from 0",
    )
    run.add_argument(
        "--json", action="store_true", help="print JSON, one object per prompt (with the store's run_id and URL)"
    )
    run.add_argument(
        "--store",
        metavar="URL",
        help="log to this database (default: $CASCADE_STORE, the policy's store.url, else "
        "cascade.db in $CASCADE_HOME or the user data folder)",
    )
    run.add_argument("--no-store", action="store_true", help="do not log the run")
    run.set_defaults(func=cmd_run)


def add_plugins(sub: argparse._SubParsersAction) -> None:
    plugins = sub.add_parser("plugins", help="list installed plugins")
    plugins.add_argument("--json", action="store_true", help="print JSON: loaded plugins and failed ones")
    plugins.set_defaults(func=cmd_plugins)


def generation_json(gen, run_id: int | None = None, store: str | None = None, index: int = 0) -> dict:
    """One `--json` object: the prompt's index (its position among the prompts, from 0), the generation,
    its metrics (NaN, "does not apply", as null) and where it was logged (`run_id` and the store's URL,
    password masked; both null with --no-store)."""
    return nan_to_none(
        {
            "index": index,
            "text": gen.text,
            "token_ids": gen.token_ids,
            "finish_reason": gen.finish_reason,
            "metrics": gen.metrics.to_dict(),
            "run_id": run_id,
            "store": store,
        }
    )


def cmd_run(args) -> int:
    """Decode each prompt; log the run to the store and say where on stderr (`logged run N to URL`)."""
    # every prompt is checked before anything loads (torch included): a bad one costs no waiting
    if args.prompt is not None:
        prompts = [("--prompt", {"prompt": check_prompt(args.prompt)})]
    else:
        prompts = read_numbered_prompts(args.prompts, args.limit)
    if args.temperature is not None and args.temperature < 0:
        raise CascadeError(f"--temperature must be at least 0, got {args.temperature}")

    if args.batch_size is not None and args.batch_size < 1:
        raise CascadeError(f"--batch-size must be at least 1, got {args.batch_size}")

    from cascade.decode.engine import Engine
    from cascade.policy import load_policy
    from cascade.store import Store, engine_info, resolve_url

    policy = load_policy(args.policy)
    if args.temperature is not None:
        policy = policy.derive(policy.name, {"decoding": {"temperature": args.temperature}}, drop=())
    if policy.mode == "sequential" and (args.batch_size or 1) > 1:
        from cascade.policy import SEQUENTIAL_BATCH

        raise CascadeError(SEQUENTIAL_BATCH)
    url = resolve_url(args.store, no_store=args.no_store, policy=policy)
    store = Store.open(url) if url else None  # a bad URL fails here, before any model loads
    try:
        engine = Engine.from_policy(policy)
        for where, row in prompts:  # too long for the target: refused before any decoding, with file:line
            try:
                engine.encode(row["prompt"])
            except CascadeError as exc:
                raise CascadeError(f"{where}: {exc}") from None
        batch = args.batch_size if args.batch_size is not None else policy.decoding.batch_size
        run = store.start_run(policy, dict(engine_info(engine), batch_size=batch)) if store else None
        try:
            # the run ends done, failed (with the reason) or interrupted with the block (RunLogger.__exit__),
            # keeping what was logged before
            with run if run else contextlib.nullcontext():
                seed = args.seed if args.seed is not None else policy.decoding.seed
                rows = [row for _, row in prompts]

                def decode(on_step=None):
                    return engine.stream(
                        [row["prompt"] for row in rows],
                        max_new_tokens=args.max_new_tokens,
                        seed=args.seed,
                        on_step=on_step,
                        record_decisions=run is not None,
                        batch_size=batch,
                    )

                results = run.record(rows, decode, seed=seed) if run else ((i, g, None) for i, g in decode())
                for index, gen, _ in results:  # each row as it finishes
                    print_generation(
                        gen,
                        args.json,
                        run.run_id if run else None,
                        store.url if store else None,
                        index=index,
                        numbered=batch > 1,
                    )
        finally:
            if run and store:
                state = "" if run.status == "done" else f" ({run.status})"
                print(f"logged run {run.run_id}{state} to {store.url}", file=sys.stderr)
    finally:
        if store:
            store.close()
    return 0


def stats_line(m, index: int | None = None) -> str:
    """`[N tokens, X tok/s, τ=..., target calls/token=...]`; "-" for a metric that does not apply (τ of target-only);
    `[prompt I: ...` when rows of a batch may finish out of order."""
    where = "" if index is None else f"prompt {index}: "
    return (
        f"[{where}{m.num_generated_tokens} tokens, {fmt(m.tokens_per_second, '.1f')} tok/s, "
        f"τ={fmt(m.mean_acceptance_length, '.2f')}, target calls/token={fmt(m.target_calls_per_token, '.2f')}]"
    )


def print_generation(
    gen, as_json: bool, run_id: int | None = None, store: str | None = None, *, index: int = 0, numbered: bool = False
) -> None:
    if as_json:
        print(json.dumps(generation_json(gen, run_id, store, index)), flush=True)
        return
    # the completion as it is, then a newline unless it ends with one: the stats line starts a line of its own
    sys.stdout.write(gen.text if gen.text.endswith("\n") else gen.text + "\n")
    sys.stdout.flush()
    print(stats_line(gen.metrics, index if numbered else None), file=sys.stderr, flush=True)


def cmd_plugins(args) -> int:
    from cascade.plugins import registry

    reg = registry()
    rows = [
        {
            "name": p.name,
            "version": p.version,
            "hooks": list(p.hooks),
            "drafters": list(p.drafters),
            "rules": list(p.rules),
            "schedules": list(p.schedules),
        }
        for p in reg.plugins
    ]
    if args.json:
        print(json.dumps({"plugins": rows, "failed": reg.failed}, indent=2))
        return 0
    print(
        format_table(
            ["name", "version", "hooks", "registers"],
            [
                [r["name"], r["version"], ", ".join(r["hooks"]), ", ".join(r["drafters"] + r["rules"] + r["schedules"])]
                for r in rows
            ],
        )
    )
    for name, err in reg.failed.items():
        print(f"failed to load {name}: {err}", file=sys.stderr)
    return 0
