"""The n-gram drafter's lookup before and after it stopped depending on k, measured in one process.

    .venv/bin/python scripts/ngram_lookup_ab.py [--limit 30] [--rounds 3] [--out docs/results/ngram-lookup]

Before (cascade <= 0.3.0): the latest earlier occurrence of the suffix when k tokens follow it, else the first
occurrence, so a draft asked for 8 and stopped at 2 could come from another occurrence than a draft asked for 2.
After: always the latest occurrence, reading on into the tokens it predicts when the context ends first. Both
decode the shipped policies `speculative-ngram` and `cascade-ngram-token-v3` (and adaptive n-gram, where the
schedule cuts drafts) over the first held-out prompts (spread over files), greedy, alternating the two
lookups round by round in one process with one set of loaded models; target-only is timed in each round too.
Writes lookup.json and lookup.txt: τ, target calls per token, tok/s and the ratio to target-only per round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = ["speculative-ngram", "cascade-ngram-token-v3"]


def old_match(self, k: int) -> tuple[int, list[int]]:
    """The lookup before: the latest occurrence when k tokens follow it, else the first (indexed here)."""
    first = self.__dict__.setdefault("_first", {})  # n-gram -> first end position, kept up to date like the index
    lo, hi = self.options.min_ngram, self.options.max_ngram
    for end in range(self.__dict__.get("_first_upto", 0) + 1, self.indexed + 1):
        for n in range(lo, min(hi, end) + 1):
            first.setdefault(tuple(self.ids[end - n : end]), end)
    self._first_upto = self.indexed
    for n in range(self.options.max_ngram, self.options.min_ngram - 1, -1):
        if n > len(self.ids):
            continue
        key = tuple(self.ids[-n:])
        end = self.index.get(key)
        if end is None:
            continue
        if end + k > len(self.ids):
            end = first[key]
        return n, self.ids[end : end + k]
    return 0, []


def decode(engine, prompts: list[str], tokens: int) -> dict:
    start = time.perf_counter()
    gens = [engine.generate(p, max_new_tokens=tokens) for p in prompts]
    seconds = time.perf_counter() - start
    n = sum(len(g.token_ids) for g in gens)
    steps = sum(g.metrics.target_calls for g in gens)
    accepted = sum(g.metrics.num_accepted_tokens for g in gens)
    drafts = sum(g.metrics.num_drafts for g in gens) or 1
    return {"tokens": n, "seconds": seconds, "target_calls_per_token": steps / n, "tau": 1 + accepted / drafts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "ngram-lookup")
    args = parser.parse_args()

    import cascade_ngram
    from cascade.decode.engine import Engine
    from cascade.policy import load_policy
    from cascade.prompts import read_prompts

    prompts = [r["prompt"] for r in read_prompts(REPO / "prompts" / "stdlib-heldout-spread.jsonl")][: args.limit]
    engines = {name: Engine.from_policy(load_policy(REPO / "policies" / f"{name}.yaml")) for name in POLICIES}
    adaptive = load_policy(REPO / "policies" / "speculative-ngram.yaml").derive(
        "speculative-ngram-adaptive", {"decoding": {"schedule": {"name": "adaptive", "options": {"max_block_size": 8}}}}
    )
    engines["speculative-ngram-adaptive"] = Engine.from_policy(adaptive)
    target = Engine.from_policy(load_policy(REPO / "policies" / "target-only.yaml"))
    new_match = cascade_ngram.Lookup.match
    for e in (*engines.values(), target):  # warm-up (and the adaptive cost table, timed now, not in a round)
        e.generate(prompts[0], max_new_tokens=8)
    rounds = []
    for r in range(args.rounds):
        got: dict = {"target-only": decode(target, prompts, args.tokens)}
        for variant, match in (
            (("before", old_match), ("after", new_match))
            if r % 2 == 0
            else (
                ("after", new_match),
                ("before", old_match),
            )
        ):
            cascade_ngram.Lookup.match = match
            for name, engine in engines.items():
                got[f"{name} ({variant})"] = decode(engine, prompts, args.tokens)
        cascade_ngram.Lookup.match = new_match
        rounds.append(got)
        print(f"round {r + 1} done", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lookup.json").write_text(json.dumps({"rounds": rounds, "args": {**vars(args), "out": str(args.out)}}))
    lines = [
        f"n-gram lookup before/after (k-independent), {len(prompts)} held-out prompts, {args.tokens} tokens, greedy, "
        f"{args.rounds} rounds alternating in one process; ratio to target-only within each round, median [min-max]",
        "",
        "| row | τ | target calls/token | vs target-only |",
        "|---|---|---|---|",
    ]
    for name in rounds[0]:
        if name == "target-only":
            continue
        ratios = [
            (g["target-only"]["seconds"] / g["target-only"]["tokens"]) / (g[name]["seconds"] / g[name]["tokens"])
            for g in rounds
        ]
        row = rounds[0][name]
        lines.append(
            f"| {name} | {row['tau']:.2f} | {row['target_calls_per_token']:.3f} | "
            f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "lookup.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
