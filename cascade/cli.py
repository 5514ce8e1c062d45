"""The `cascade` command line: run, plugins, zoo (and more as the product grows).

User errors (`CascadeError`: a bad policy, prompt, plugin, model path) print one
clear message on stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from cascade.errors import CascadeError
from cascade.prompts import read_prompts
from cascade.tables import format_table


def build_parser() -> argparse.ArgumentParser:
    from cascade.bench import cli as bench_cli
    from cascade.store import cli as store_cli
    from cascade.zoo import cli as zoo_cli

    parser = argparse.ArgumentParser(prog="cascade", description="speculative cascades for HF causal LMs")
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="decode with a policy")
    run.add_argument("policy", type=Path, help="YAML policy file")
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompts", type=Path, help="JSONL file, one {\"prompt\": ...} per line")
    run.add_argument("--max-new-tokens", type=int, help="override decoding.max_new_tokens")
    run.add_argument("--seed", type=int, help="override decoding.seed")
    run.add_argument("--json", action="store_true", help="print JSON (one object per prompt)")
    run.add_argument("--store", metavar="URL", help="log to this database (default: $CASCADE_STORE, the policy's, ./cascade.db)")
    run.add_argument("--no-store", action="store_true", help="do not log the run")
    run.set_defaults(func=cmd_run)

    plugins = sub.add_parser("plugins", help="list installed plugins")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    bench_cli.add_parser(sub)
    store_cli.add_parser(sub)
    zoo_cli.add_parser(sub)
    return parser


def generation_json(gen) -> dict:
    return {
        "text": gen.text,
        "token_ids": gen.token_ids,
        "finish_reason": gen.finish_reason,
        "metrics": gen.metrics.to_dict(),
    }


def cmd_run(args) -> int:
    from cascade.engine import Engine
    from cascade.policy import load_policy
    from cascade.store import Store, engine_info, resolve_url

    prompts = [{"prompt": args.prompt}] if args.prompt is not None else read_prompts(args.prompts)
    policy = load_policy(args.policy)
    url = resolve_url(args.store, no_store=args.no_store, policy=policy)
    store = Store.open(url) if url else None  # a bad URL fails here, before any model loads
    engine = Engine.from_policy(policy)
    try:
        # the run ends done, failed or interrupted with the block (RunLogger.__exit__)
        with store.start_run(policy, engine_info(engine)) if store else contextlib.nullcontext() as run:
            for row in prompts:
                seq = run.start_sequence(row["prompt"], reference=row.get("reference")) if run else None
                gen = engine.generate(row["prompt"], max_new_tokens=args.max_new_tokens, seed=args.seed,
                                      on_step=run.step_logger(seq) if run else None, record_decisions=run is not None)
                if run:
                    run.end_sequence(seq, gen)
                print_generation(gen, args.json)
    finally:
        if store:
            store.close()
    return 0


def print_generation(gen, as_json: bool) -> None:
    if as_json:
        print(json.dumps(generation_json(gen)), flush=True)
        return
    print(gen.text, flush=True)
    m = gen.metrics
    print(f"[{m.num_generated_tokens} tokens, {m.tokens_per_second:.1f} tok/s, τ={m.mean_acceptance_length:.2f}, "
          f"target calls/token={m.target_calls_per_token:.2f}]", file=sys.stderr)


def cmd_plugins(args) -> int:
    from cascade.plugins import registry

    reg = registry()
    rows = [
        {"name": p.name, "version": p.version, "hooks": list(p.hooks), "drafters": list(p.drafters), "rules": list(p.rules)}
        for p in reg.plugins
    ]
    if args.json:
        print(json.dumps({"plugins": rows, "failed": reg.failed}, indent=2))
        return 0
    print(format_table(["name", "version", "hooks", "registers"],
                       [[r["name"], r["version"], ", ".join(r["hooks"]), ", ".join(r["drafters"] + r["rules"])] for r in rows]))
    for name, err in reg.failed.items():
        print(f"failed to load {name}: {err}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except CascadeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
