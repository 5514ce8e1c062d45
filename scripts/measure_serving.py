"""Serving on the shipped models: `cascade bench serve` against a `cascade serve` process, and offline batching.

    .venv/bin/python scripts/measure_serving.py [--requests 16] [--max-tokens 64] [--out docs/results/serving]

Starts `cascade serve` (a separate process, 8 rows per policy, no decision log) over target-only, lossless
n-gram lookup, the n-gram token_v3 cascade and the EAGLE chain; for each, loads it at concurrency 1, 4 and 8
with the held-out prompts (greedy, max_tokens fixed, EOS ignored so every request decodes as long); then,
with the server stopped, decodes the same prompts offline at batch size 8 through `Engine.generate`.
Writes serving.json and serving.txt: output tok/s, TTFT and TPOT p50/p99 per level, each speculative
policy's output tok/s over target-only's at the same concurrency (one run), and the served c = 8 over the
offline B = 8 throughput. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = ["target-only", "speculative-ngram", "cascade-ngram-token-v3", "eagle-chain"]
LEVELS = (1, 4, 8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=16, help="requests per level (default 16)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "serving")
    args = parser.parse_args()

    from cascade.bench import serve_load
    from cascade.prompts import read_prompts
    from cascade.serve.server import wait_until_serving

    prompts = [r["prompt"] for r in read_prompts(REPO / "prompts" / "stdlib-heldout.jsonl")][: args.requests]
    work = args.out / "policies"
    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in POLICIES:  # the shipped policy, EOS ignored: every request decodes max_tokens
        text = (REPO / "policies" / f"{name}.yaml").read_text().replace("../models/", str(REPO / "models") + "/")
        path = work / f"{name}.yaml"
        path.write_text(text.replace("decoding: {", "decoding: {ignore_eos: true, "))
        paths.append(path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "cascade.cli", "serve", *map(str, paths), "--port", str(port), "--no-store"]
    server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(url, server, timeout=300)
        for name in POLICIES:  # warm up each engine (first calls allocate and compile)
            serve_load.level(url, name, prompts[:2], 2, 2, 120, 8)
        levels = []
        for name in POLICIES:
            for c in LEVELS:
                r = serve_load.level(url, name, prompts, c, args.requests, 600, args.max_tokens)
                levels.append(r)
                print(f"{name} c={c}: {r['output_throughput']:.1f} tok/s, {r['failed']} failed", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    offline = {}
    from cascade.decode.engine import Engine
    from cascade.policy import load_policy

    for name, path in zip(POLICIES, paths):
        engine = Engine.from_policy(load_policy(path).derive(name, {"decoding": {"batch_size": 8}}, drop=()))
        engine.generate(prompts[:8], max_new_tokens=8, batch_size=8)  # warm-up
        start = time.perf_counter()
        gens = engine.generate(prompts, max_new_tokens=args.max_tokens, batch_size=8)
        wall = time.perf_counter() - start
        offline[name] = sum(len(g.token_ids) for g in gens) / wall
    base = {r["max_concurrency"]: r["output_throughput"] for r in levels if r["model"] == "target-only"}
    for r in levels:
        r["speedup_over_target_only"] = r["output_throughput"] / base[r["max_concurrency"]]
        if r["max_concurrency"] == 8:
            r["offline_b8_output_throughput"] = offline[r["model"]]
            r["served_over_offline"] = r["output_throughput"] / offline[r["model"]]
    result = {"requests": args.requests, "max_tokens": args.max_tokens, "levels": levels, "offline_b8": offline}
    (args.out / "serving.json").write_text(json.dumps(result, indent=2))
    lines = [serve_load.table(levels), ""]
    for r in levels:
        extra = f", served/offline B8 {r['served_over_offline']:.2f}" if "served_over_offline" in r else ""
        lines.append(f"{r['model']} c={r['max_concurrency']}: {r['speedup_over_target_only']:.2f}x target-only{extra}")
    (args.out / "serving.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
