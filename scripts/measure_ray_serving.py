"""Ray Serve on the shipped models: one `cascade serve` process against 1 and 2 Ray Serve replicas, and the proxy's
cost per request.

    .venv/bin/python scripts/measure_ray_serving.py [--rounds 2] [--requests 16] [--out docs/results/ray]

For each round, three set-ups serve lossless n-gram lookup (`speculative-ngram`, EOS ignored, 32 tokens per
request, greedy), one after the other on this machine: a plain `cascade serve` process; `cascade serve --ray
--replicas 1` (the replica gets both CPUs); `--replicas 2` (one CPU each: Ray sets each replica's torch threads
to its CPUs). Each is loaded by `cascade bench serve`'s levels at concurrency 1, 4 and 8, then with one-token
requests at concurrency 1 (what a request costs besides decoding: HTTP, and under Ray the proxy's hop to a
replica). Writes ray.json and ray.txt: output tok/s per level with each set-up's ratio to the plain server in
the same round, and the one-token request's median latency. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICY = "speculative-ngram"
LEVELS = (1, 4, 8)
SETUPS = {"plain": [], "ray-1": ["--ray", "--replicas", "1", "--num-cpus", "2"]}
SETUPS["ray-2"] = ["--ray", "--replicas", "2", "--num-cpus", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(setup: str, policy: Path, prompts: list[str], requests: int, tokens: int) -> dict:
    from cascade.bench import serve_load
    from cascade.serve.server import wait_until_serving

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "cascade.cli", "serve", str(policy), "--port", str(port), "--no-store"]
    cmd += ["--max-num-seqs", "8", *SETUPS[setup]]
    server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(url, server, timeout=300)
        if setup == "ray-2":  # both replicas must be up (health answers once one is)
            time.sleep(5)
        serve_load.level(url, POLICY, prompts[:4], 4, 8, 120, 8)  # warm-up: every replica allocates
        levels = {c: serve_load.level(url, POLICY, prompts, c, requests, 300, tokens) for c in LEVELS}
        short = serve_load.level(url, POLICY, prompts, 1, 20, 120, 1)
        return {
            "setup": setup,
            "levels": {str(c): r for c, r in levels.items()},
            "one_token": short,
        }
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        subprocess.run(["ray", "stop", "--force"], capture_output=True)  # nothing left for the next set-up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=16, help="requests per level (default 16)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "ray")
    args = parser.parse_args()

    from cascade.prompts import read_prompts

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    args.out.mkdir(parents=True, exist_ok=True)
    text = (REPO / "policies" / f"{POLICY}.yaml").read_text().replace("../models/", str(REPO / "models") + "/")
    policy = args.out / f"{POLICY}.yaml"
    policy.write_text(text.replace("decoding: {", "decoding: {ignore_eos: true, "))
    prompts = [r["prompt"] for r in read_prompts(REPO / "prompts" / "stdlib-heldout-spread.jsonl")][: args.requests]
    rounds = []
    for r in range(args.rounds):
        got = {s: measure(s, policy, prompts, args.requests, args.max_tokens) for s in SETUPS}
        rounds.append(got)
        print(f"round {r + 1}: " + summary_line(got), flush=True)
    (args.out / "ray.json").write_text(json.dumps({"rounds": rounds, "args": vars(args) | {"out": str(args.out)}}))
    report = summary(rounds, args)
    (args.out / "ray.txt").write_text(report)
    print(report)
    return 0


def tps(result: dict, level: int) -> float:
    return float(result["levels"][str(level)]["output_throughput"])


def summary_line(got: dict) -> str:
    return "; ".join(f"{s} " + " ".join(f"c{c} {tps(got[s], c):.0f}" for c in LEVELS) for s in got)


def summary(rounds: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Ray Serve on this machine: {POLICY}, {args.requests} requests per level, {args.max_tokens} tokens each, "
        f"greedy; {len(rounds)} rounds; median [min-max] over rounds, ratios within a round",
        "",
        "| set-up | " + " | ".join(f"c = {c} tok/s (vs plain)" for c in LEVELS) + " | one-token request p50 (ms) |",
        "|---" * (len(LEVELS) + 2) + "|",
    ]

    def spread(values: list[float], fmt: str) -> str:
        return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"

    for s in SETUPS:
        cells = []
        for c in LEVELS:
            speed = [tps(r[s], c) for r in rounds]
            ratio = [tps(r[s], c) / tps(r["plain"], c) for r in rounds]
            cells.append(f"{spread(speed, '.0f')} ({spread(ratio, '.2f')}x)")
        e2e = [r[s]["one_token"]["median_e2el_ms"] for r in rounds]
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {spread(e2e, '.1f')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
