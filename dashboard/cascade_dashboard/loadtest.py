"""A large synthetic store and the dashboard's page load times on it (a benchmark, not a test).

    python -m cascade_dashboard.loadtest generate /tmp/cascade-big.db   # 1,000 runs, ~5M decision rows
    python -m cascade_dashboard.loadtest measure /tmp/cascade-big.db    # each page's load time, cold cache

`generate` writes through the store's own writer (`Store.start_run`, `RunLogger.log_generation`,
`Store.set_quality`) with large write batches, replaying `cascade.store.synthetic` generations:
`--templates` distinct generations (each `--steps` steps) are built once and reused, so building
rows costs little next to writing them. Every tenth run is target-only (no decision rows) on one
of `--prompt-sets` prompt sets, so every speculative run has a baseline and the trade-off page
has points. `measure` runs each page in Streamlit's AppTest on the store, cold (caches cleared),
`--repeats` times, and prints the median and the slowest page.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

RULES = [
    ("chow", 0.0, 1.0),
    ("diff", -0.5, 0.5),
    ("opt", 0.0, 3.0),
    ("token_v1", -0.2, 0.5),
    ("token_v2", -0.2, 0.5),
    ("token_v3", 0.0, 0.6),
    ("none", 0.0, 0.0),
]
PAGES = ["runs", "run_detail", "token_view", "tradeoff", "whatif", "calibrate"]


def _policy(i: int, rng: random.Random, target_only: bool):
    from cascade import parse_policy

    d = {
        "name": f"load-{i}",
        "target": {"model": "models/target"},
        "mode": "target" if target_only else "speculative",
        "decoding": {"temperature": 0.0, "max_new_tokens": 128},
    }
    if target_only:
        d["rule"] = {"name": "none", "alpha": 0.0}
    else:
        name, lo, hi = RULES[i % len(RULES)]
        d["rule"] = {"name": name, "alpha": round(rng.uniform(lo, hi), 3)}
        d["drafter"] = {"plugin": "hf-model", "options": {"model": "models/tiny"}}
        d["name"] = f"load-{name}-{i}"
    return parse_policy(d, f"<loadtest {i}>")


def target_only_generation(g):
    """The same tokens as `g` decoded by the target alone, as the engine logs it: one step and one
    `target` decision per token."""
    from cascade import Decision, Generation, Metrics, StepRecord

    m = Metrics(num_prompt_tokens=g.prompt_tokens)
    steps = []
    dt = 3 * g.metrics.decode_seconds / max(len(g.token_ids), 1)  # slower per token than speculative decoding
    for i, tok in enumerate(g.token_ids):
        row = Decision(position=0, kind="target", drafted_token=None, emitted_token=tok, accepted=None, deferred=None)
        step = StepRecord(
            index=i,
            block_size=0,
            drafted=0,
            accepted=0,
            emitted=(tok,),
            deferred=0,
            target_calls=1,
            drafter_calls=0,
            draft_seconds=0.0,
            verify_seconds=dt,
            decisions=(row,),
        )
        m.add_step(step, verification=False)
        m.decode_seconds += dt
        steps.append(step)
    m.num_generated_tokens = len(g.token_ids)
    m.ttft_seconds = dt
    return Generation(
        text=g.text,
        token_ids=g.token_ids,
        prompt_tokens=g.prompt_tokens,
        finish_reason="length",
        metrics=m,
        steps=steps,
    )


def generate(
    url: str,
    runs: int = 1000,
    sequences: int = 20,
    steps: int = 71,
    templates: int = 120,
    prompt_sets: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Fill the store at `url`; returns counts and seconds."""
    from cascade import Quality
    from cascade.store import Store, synthetic

    t0 = time.perf_counter()
    rng = random.Random(seed)
    gens = [synthetic.generation(seed * 100_003 + j, n_steps=steps, block_size=4) for j in range(templates)]
    prompts = [
        [f"def f_{s}_{j}(x):\n    # prompt {j} of set {s}\n" for j in range(sequences)] for s in range(prompt_sets)
    ]
    decisions = 0
    with Store.open(url) as store:
        for i in range(runs):
            target_only = i % 10 == 0
            policy = _policy(i, rng, target_only)
            pset = prompts[(i // 10) % prompt_sets]
            with store.start_run(
                policy, {"source": "cascade_dashboard.loadtest"}, flush_rows=50_000, flush_seconds=1e9
            ) as run:
                for prompt in pset:
                    g = gens[rng.randrange(templates)]
                    if target_only:
                        g = target_only_generation(g)
                    decisions += sum(len(s.decisions) for s in g.steps)
                    seq = run.log_generation(prompt, g, reference="    return x\n")
                    base = 60.0 if target_only else rng.uniform(40, 62)
                    store.set_quality(
                        seq,
                        Quality(
                            edit_similarity=base + rng.uniform(-2, 2),
                            chrf=base,
                            parses=1.0 if rng.random() < 0.95 else 0.0,
                            exact_match=0.0,
                        ),
                    )
            if (i + 1) % 100 == 0:
                print(f"{i + 1} runs, {decisions:,} decision rows, {time.perf_counter() - t0:.0f} s", flush=True)
    return {"runs": runs, "decisions": decisions, "seconds": time.perf_counter() - t0}


def measure(url: str, repeats: int = 3, run_id: int | None = None) -> dict[str, list[float]]:
    """Seconds to load each page (AppTest, caches cleared before each load) on the store at `url`."""
    import os

    import streamlit as st
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    from cascade.store.queries import dashboard as Q
    from cascade.store.readonly import open_readonly

    os.environ["CASCADE_DASHBOARD_STORE"] = url
    config.set_option("runner.magicEnabled", False)
    ro = open_readonly(url)
    if run_id is None:  # the newest speculative run (the largest kind)
        run_id = next(r["id"] for r in Q.run_table(ro, limit=50) if r["num_draft_tokens"])
    seq_id = Q.list_sequences(ro, run_id)[0]["id"]
    app = str(Path(__file__).with_name("app.py"))
    times: dict[str, list[float]] = {p: [] for p in PAGES}
    for _ in range(repeats):
        for page in PAGES:
            st.cache_data.clear()
            st.cache_resource.clear()
            at = AppTest.from_file(app, default_timeout=600)
            at.session_state["run"] = str(run_id)
            at.session_state["seq"] = str(seq_id)
            t = time.perf_counter()
            at.run()
            if page != "runs":
                at.switch_page(f"pages/{page}.py").run()
            times[page].append(time.perf_counter() - t)
            if at.exception:
                raise RuntimeError(f"page {page}: {at.exception[0].value}")
    ro.close()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cascade_dashboard.loadtest", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write the synthetic store (a new SQLite file)")
    g.add_argument("path", type=Path)
    g.add_argument("--runs", type=int, default=1000)
    g.add_argument("--sequences", type=int, default=20, help="sequences per run")
    g.add_argument("--steps", type=int, default=71, help="steps per sequence (~3.5 decision rows each)")
    g.add_argument("--templates", type=int, default=120)
    m = sub.add_parser("measure", help="each page's load time")
    m.add_argument("path", type=Path)
    m.add_argument("--repeats", type=int, default=3)
    m.add_argument("--run", type=int, help="run to open in the detail pages (default: newest speculative)")
    args = ap.parse_args(argv)
    url = f"sqlite:///{args.path.resolve()}"
    if args.cmd == "generate":
        if args.path.exists():
            ap.error(f"{args.path} exists: generate writes a new store")
        out = generate(url, args.runs, args.sequences, args.steps, args.templates)
        print(f"wrote {out['runs']} runs, {out['decisions']:,} decision rows to {args.path} in {out['seconds']:.0f} s")
        return 0
    times = measure(url, args.repeats, args.run)
    for page, ts in times.items():
        print(f"{page:12s} median {statistics.median(ts):6.2f} s   max {max(ts):6.2f} s   ({len(ts)} loads)")
    worst = max(times, key=lambda p: statistics.median(times[p]))
    print(f"slowest page: {worst}, median {statistics.median(times[worst]):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
