"""Speed of two checkouts of cascade side by side, in one run: the same `cascade bench` rows, alternating.

    python scripts/compare_revisions.py BEFORE_DIR AFTER_DIR [--rounds 3] [--limit 8] [--tokens 48]

Each DIR is a checkout with its own `.venv` (`./scripts/setup.sh` there). Every round runs the bench once in
each checkout, in turn, on the same policies (written to a temporary folder with absolute model paths): the
`adaptive` schedule with the tiny drafter and with the n-gram drafter at B = 1, and `adaptive` and `bass` with
the n-gram drafter at B = 8 (`--batch-sizes 8`), both checkouts reading one set of cost tables (measured by
the first bench, in the first checkout). A bench reports each row's speed-up over target-only timed in
the same process; this prints, per row, each checkout's median over rounds [min-max] and after/before.
Nothing else may run meanwhile (2 cores: timings of overlapping jobs mean nothing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[1]


def policies(out: Path) -> tuple[list[Path], list[Path]]:
    models = HERE / "models"
    base = {
        "target": {"model": str(models / "target"), "dtype": "float32"},
        "mode": "speculative",
        "rule": {"name": "none", "alpha": 0},
    }
    tiny = {"plugin": "hf-model", "options": {"model": str(models / "tiny")}}
    ngram = {"plugin": "ngram", "options": {"min_ngram": 1, "max_ngram": 3}}
    # the flat schedule keys: both revisions read them (a revision before decoding.schedule knows no other form)
    adaptive = {"temperature": 0.0, "block_schedule": "adaptive", "max_block_size": 8, "seed": 0}
    bass = {
        "temperature": 0.0,
        "block_size": 3,
        "block_schedule": "bass",
        "min_block_size": 1,
        "max_block_size": 8,
        "seed": 0,
    }
    rows = {
        "target-only": {
            "target": base["target"],
            "mode": "target",
            "rule": base["rule"],
            "decoding": {"temperature": 0.0, "seed": 0},
        },
        "adaptive-tiny": {**base, "drafter": tiny, "decoding": adaptive},
        "adaptive-ngram": {**base, "drafter": ngram, "decoding": adaptive},
    }
    batched = {
        "target-only-b8": {**rows["target-only"], "decoding": {"temperature": 0.0, "seed": 0, "batch_size": 8}},
        "adaptive-ngram-b8": {**base, "drafter": ngram, "decoding": {**adaptive, "batch_size": 8}},
        "bass-ngram-b8": {**base, "drafter": ngram, "decoding": {**bass, "batch_size": 8}},
    }
    write = lambda name, d: (out / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **d}, sort_keys=False))
    for name, d in {**rows, **batched}.items():
        write(name, d)
    return [out / f"{n}.yaml" for n in rows], [out / f"{n}.yaml" for n in batched]


def bench(tree: Path, files: list[Path], extra: list[str], out: Path, home: Path) -> dict[str, float]:
    cmd = [
        str(tree / ".venv/bin/cascade"),
        "bench",
        *map(str, files),
        "--no-store",
        "--no-progress",
        "--threads",
        "2",
        "--json",
        str(out),
        *extra,
    ]
    env = {"HF_HUB_OFFLINE": "1", "CASCADE_HOME": str(home), "PATH": "/usr/bin:/bin"}
    subprocess.run(cmd, check=True, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    out_rows = {}
    for r in data["rows"]:  # the plain bench's rows, or the batched bench's (one per row and batch size)
        name = r.get("name") or r["row"]
        speed = r.get("speedup", r.get("speedup_vs_target"))
        if speed is not None and not name.startswith("target-only"):
            out_rows[name] = speed
    return out_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    single, batched = policies(tmp)
    common = ["--limit", str(args.limit), "--max-new-tokens", str(args.tokens), "--repeats", "2"]
    got: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for r in range(args.rounds):
        for label, tree in (("before", args.before), ("after", args.after)):
            home = tmp / "home"  # one set of cost tables for both (measured by the first bench): timing noise in
            # two separate measurements would give the adaptive schedule different costs, not different code
            for files, extra in ((single, []), (batched, ["--batch-sizes", "8"])):
                out = tmp / f"{label}-{r}-{len(extra)}.json"
                for name, s in bench(tree.resolve(), files, common + extra, out, home).items():
                    got[label].setdefault(name, []).append(s)
            print(f"round {r + 1}/{args.rounds}: {label} done", flush=True)
    print(f"\n{'row':28} {'before':>22} {'after':>22} {'after/before':>12}")
    for name in sorted(got["before"]):
        b, a = got["before"][name], got["after"].get(name, [])
        if not a:
            continue
        fmt = lambda v: f"{statistics.median(v):.2f}x [{min(v):.2f}-{max(v):.2f}]"
        print(f"{name:28} {fmt(b):>22} {fmt(a):>22} {statistics.median(a) / statistics.median(b):>11.2f}x")
    (tmp / "compare.json").write_text(json.dumps(got, indent=1))
    print(f"\nper-round figures: {tmp / 'compare.json'}")


if __name__ == "__main__":
    main()
