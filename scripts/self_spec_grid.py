"""Self-speculation over a sparse cache (issue 17, SPEC.md "Self-speculation with a sparse cache"): a grid over
prompt length S and batch size B, in one run.

For each S the same long held-out prompts are cut to their last S tokens (`cascade bench --prompt-tokens`), and
`cascade bench --batch-sizes` times the sparse-kv policies, the tiny chain drafter and target-only at every B,
round-robin (ratios within a round, medians [min-max]); beside each measured speed-up, the cost model's prediction
from the row's measured τ and batched step costs timed at that S (the sparse drafter timed over its view).
Writes grid.json, grid.md and grid.png in --out.

    python scripts/self_spec_grid.py --out docs/results/self-spec [--lengths 256,512,1024,2048]
        [--batch-sizes 1,4,8,16] [--limit 16] [--max-new-tokens 64] [--repeats 2] [POLICY ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cascade.bench.batch import format_batch_result, parse_batch_sizes, run_batch_bench
from cascade.policy import load_policy
from cascade.prompts import read_prompts, tail_prompts
from cascade.runtime import models

POLICIES = [
    "policies/self-spec-sparse.yaml",
    "policies/self-spec-sparse-w256.yaml",
    "policies/self-spec-snapkv.yaml",
    "policies/speculative-lossless.yaml",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("policies", nargs="*", default=POLICIES)
    ap.add_argument("--prompts", default="prompts/stdlib-heldout-long.jsonl")
    ap.add_argument("--lengths", default="256,512,1024,2048")
    ap.add_argument("--batch-sizes", default="1,4,8,16")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/results/self-spec"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    policies = [load_policy(p) for p in args.policies]
    spec = policies[0].target
    tok = models.load_tokenizer(models.resolve_model_path(spec.model, policies[0].base_dir))
    prompts = read_prompts(args.prompts, args.limit)
    sizes = parse_batch_sizes(args.batch_sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    grid = {
        "meta": {
            "command": " ".join(["python", *sys.argv]),
            "prompts": args.prompts,
            "limit": args.limit,
            "max_new_tokens": args.max_new_tokens,
            "repeats": args.repeats,
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "lengths": {},
    }
    for s in [int(x) for x in args.lengths.split(",")]:
        print(f"== S = {s}", flush=True)
        result = run_batch_bench(
            policies,
            tail_prompts(prompts, tok, s),
            sizes,
            repeats=args.repeats,
            max_new_tokens=args.max_new_tokens,
            progress=True,
        )
        print(format_batch_result(result), flush=True)
        grid["lengths"][str(s)] = result
        (args.out / "grid.json").write_text(json.dumps(grid, indent=2) + "\n")  # after every S: a partial grid
    (args.out / "grid.md").write_text(markdown(grid))
    plot(grid, args.out / "grid.png")
    print(f"wrote {args.out}/grid.json, grid.md, grid.png")
    return 0


def markdown(grid: dict) -> str:
    head = (
        "| row | S | B | tok/s | vs target-only | decode vs target-only | predicted | τ | accept | c | v |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for s, result in grid["lengths"].items():
        base = {x["batch_size"]: x for x in result["rows"] if x["row"] == "target-only"}
        for x in result["rows"]:
            lo, hi = x["speedup_vs_target_range"]
            decode = x["decode_tok_s"] / base[x["batch_size"]]["decode_tok_s"]
            lines.append(
                f"| {x['row']} | {s} | {x['batch_size']} | {x['total_tok_s']:.0f} | "
                f"{x['speedup_vs_target']:.2f}x [{lo:.2f}-{hi:.2f}] | {decode:.2f}x | "
                f"{x['predicted_vs_target']:.2f} | "
                f"{x['tau']:.2f} | {_pct(x.get('acceptance'))} | {_num(x.get('c'))} | {_num(x.get('v'))} |"
            )
    return head + "\n".join(lines) + "\n"


def _num(x) -> str:
    return "-" if x is None or x != x else f"{x:.2f}"


def _pct(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:.0f}%"


def plot(grid: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted(int(s) for s in grid["lengths"])
    rows = sorted({x["row"] for r in grid["lengths"].values() for x in r["rows"] if x["row"] != "target-only"})
    sizes = sorted({x["batch_size"] for r in grid["lengths"].values() for x in r["rows"]})
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 4), sharey=True, squeeze=False)
    for ax, row in zip(axes[0], rows):
        for i, b in enumerate(sizes):
            pick = [
                next(x for x in grid["lengths"][str(s)]["rows"] if x["row"] == row and x["batch_size"] == b)
                for s in lengths
            ]
            color = f"C{i}"
            ax.plot(lengths, [x["speedup_vs_target"] for x in pick], "o-", color=color, label=f"B = {b} measured")
            ax.plot(
                lengths,
                [x["predicted_vs_target"] for x in pick],
                "x--",
                color=color,
                alpha=0.6,
                label=f"B = {b} cost model",
            )
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(s) for s in lengths])
        ax.set_title(row)
        ax.set_xlabel("prompt tokens S")
    axes[0][0].set_ylabel("speed-up over target-only at the same B")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
