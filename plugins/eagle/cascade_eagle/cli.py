"""`cascade eagle train`: train an EAGLE head on a target's features.

    cascade eagle train --target models/target --out models/eagle-target --minutes 60

Only argparse is imported when the parser is built; torch and the corpus load when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cascade import CascadeError


def add_parser(sub: argparse._SubParsersAction) -> None:
    eagle = sub.add_parser(
        "eagle",
        help="EAGLE draft heads (plugin cascade-eagle)",
        description="EAGLE draft heads: train one on a target's features.",
    )
    esub = eagle.add_subparsers(dest="eagle_cmd", required=True)
    t = esub.add_parser(
        "train",
        help="train a head on the target's features over the shipped corpus's training split",
        description="Train a one-layer EAGLE head on the target's last hidden states over the training split of "
        "the shipped corpus (the Python standard library, split by file), with the EAGLE-3 token "
        "loss unrolled on the head's own outputs. Checkpoints under --work every five minutes; "
        "rerunning the same command resumes. Writes an HF-style folder (config.json, "
        "model.safetensors, card.json, README.md) to --out.",
    )
    t.add_argument("--target", required=True, type=Path, metavar="DIR", help="the target model's folder")
    t.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write the head")
    budget = t.add_argument_group("budget (at least one; training stops at whichever comes first)")
    budget.add_argument("--minutes", type=float, help="wall-clock minutes of training")
    budget.add_argument("--tokens", type=int, help="training tokens")
    t.add_argument(
        "--work",
        type=Path,
        default=None,
        metavar="DIR",
        help="checkpoints and the tokenised corpus (default: OUT.work)",
    )
    t.add_argument(
        "--steps-ahead", type=int, default=4, metavar="K", help="drafting depth unrolled in training (default 4)"
    )
    t.add_argument("--batch", type=int, default=8, help="windows per step (default 8)")
    t.add_argument("--seq-len", type=int, default=256, help="tokens per window (default 256)")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument("--no-bf16", action="store_true", help="train in fp32 (default: bf16 autocast on CPU)")
    t.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed (default 0)")
    t.set_defaults(func=_train)
    r = esub.add_parser(
        "reliability",
        help="the head's confidence against measured acceptance (a calibration plot)",
        description="Decode held-out prompts greedily with an eagle policy and compare the head's confidence "
        "(q at each node, and the product of q along its path) with what the target accepted. "
        "Writes reliability.json and reliability.png to --out.",
    )
    r.add_argument("policy", type=Path, metavar="POLICY", help="a policy with drafter plugin eagle")
    r.add_argument(
        "--prompts", type=Path, default=None, metavar="JSONL", help="prompts (default: the shipped held-out prompts)"
    )
    r.add_argument("--limit", type=int, default=30, metavar="N", help="prompts to decode (default 30)")
    r.add_argument(
        "--max-new-tokens", type=int, default=None, metavar="N", help="override the policy's decoding.max_new_tokens"
    )
    r.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write reliability.json and .png")
    r.set_defaults(func=_reliability)
    c = esub.add_parser(
        "costs",
        help="the cost model's ceiling for a bench's eagle rows, with the head's measured cost",
        description="Time one head pass (as the drafter calls it) against a one-token target step for each eagle "
        "POLICY, and recompute the ceiling of its row in BENCH_JSON (`cascade bench --json`), which "
        "counts the head as free.",
    )
    c.add_argument("bench", type=Path, metavar="BENCH_JSON", help="the results of `cascade bench --json`")
    c.add_argument(
        "policies",
        nargs="+",
        type=Path,
        metavar="POLICY",
        help="the eagle policies of the bench's rows (matched by name)",
    )
    c.add_argument("--out", type=Path, default=None, metavar="JSON", help="also write the table here")
    c.set_defaults(func=_costs)


def _train(args: argparse.Namespace) -> int:
    from cascade_eagle.train import TrainSettings, train

    if args.minutes is None and args.tokens is None:
        raise CascadeError("give a budget: --minutes M or --tokens N")
    if not (args.target / "config.json").is_file():
        raise CascadeError(f"--target {args.target} is not a model folder (no config.json)")
    if args.steps_ahead < 1 or args.seq_len <= args.steps_ahead + 1 or args.batch < 1:
        raise CascadeError("need --steps-ahead >= 1, --batch >= 1 and --seq-len > steps-ahead + 1")
    s = TrainSettings(
        minutes=args.minutes,
        tokens=args.tokens,
        steps_ahead=args.steps_ahead,
        batch=args.batch,
        seq_len=args.seq_len,
        lr=args.lr,
        seed=args.seed,
        bf16=not args.no_bf16,
    )
    work = args.work or args.out.with_name(args.out.name + ".work")
    out = train(args.target, args.out, work, s, log=lambda m: print(m, flush=True))
    print(f"wrote {out}")
    return 0


def _reliability(args: argparse.Namespace) -> int:
    from cascade import Engine, load_policy, read_prompts
    from cascade.bench.defaults import DEFAULT_PROMPTS, shipped
    from cascade_eagle.reliability import record, report

    policy = load_policy(args.policy)
    if policy.drafter is None or policy.drafter.plugin != "eagle":
        raise CascadeError(f"{args.policy}: the drafter is not eagle")
    policy = policy.model_copy(update={"decoding": policy.decoding.model_copy(update={"temperature": 0.0})})
    engine = Engine.from_policy(policy)
    prompts = [p["prompt"] for p in read_prompts(args.prompts or shipped(DEFAULT_PROMPTS), args.limit)]
    result = report(
        record(engine, prompts, args.max_new_tokens),
        args.out,
        f"{policy.name}: {len(prompts)} held-out prompts, greedy",
    )
    for kind in ("node", "path"):
        print(f"{kind}: ECE {result[kind]['ece']} over {result[kind]['n']} drafted nodes")
        for row in result[kind]["bins"]:
            print(f"  {row['bin']}  predicted {row['predicted']:.3f}  accepted {row['accepted']:.3f}  n={row['count']}")
    print(f"wrote {args.out / 'reliability.json'} and {args.out / 'reliability.png'}")
    return 0


def _costs(args: argparse.Namespace) -> int:
    import json

    from cascade import PROFILE_PROMPT, Engine, load_policy, step_costs
    from cascade_eagle.costs import ceilings, pass_seconds, write
    from cascade_eagle.drafter import EagleDrafter

    bench = json.loads(args.bench.read_text())
    c_by_row: dict[str, float] = {}
    for path in args.policies:
        policy = load_policy(path)
        if policy.drafter is None or policy.drafter.plugin != "eagle":
            raise CascadeError(f"{path}: the drafter is not eagle")
        engine = Engine.from_policy(policy)
        assert isinstance(engine.drafter, EagleDrafter)
        opts = engine.drafter.opts
        width = 1 if opts.tree == "chain" else opts.top_k
        t1 = step_costs(engine.target_model, None, engine.encode(PROFILE_PROMPT).tolist(), 0)["target_step_seconds"]
        c_by_row[policy.name] = pass_seconds(engine, PROFILE_PROMPT, width) / t1
    rows = ceilings(bench, c_by_row)
    print(
        f"{'row':<24} {'tau':>5} {'speed-up [min-max]':>20} {'c (head pass)':>14} {'ceiling (c=0)':>14} {'ceiling':>8}"
    )
    for r in rows:
        print(
            f"{r['name']:<24} {r['tau']:>5.2f} {r['speedup']:>7.2f}x [{r['speedup_min']:.2f}-{r['speedup_max']:.2f}]"
            f" {r['c_head_pass']:>14.3f} {r['ceiling_free_drafts']:>13.2f}x {r['ceiling']:>7.2f}x"
        )
    if args.out is not None:
        write(rows, args.out)
    return 0
