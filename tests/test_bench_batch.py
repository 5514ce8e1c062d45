"""`cascade bench --batch-sizes` on tiny models: the table's figures come from real passes and add up."""

import json
import subprocess
import sys

import pytest

from cascade.bench.batch import format_batch_result, parse_batch_sizes, run_batch_bench
from cascade.errors import CascadeError
from cascade.policy import parse_policy
from cascade.testing import policy_dict, write_policy

PROMPTS = [{"prompt": "def add(a, b):\n    return a + b\n"}, {"prompt": "import os\n"}, {"prompt": "x = [1, 2]\n"}]


def test_batch_sizes_are_parsed_and_checked():
    assert parse_batch_sizes("8,1,4,4") == [1, 4, 8]
    for bad in ("", "0,2", "a,b"):
        with pytest.raises(CascadeError, match="--batch-sizes"):
            parse_batch_sizes(bad)


def test_batched_bench_rows(family):
    f = family("gpt2")
    policies = [
        parse_policy(
            dict(policy_dict(target=f["target"], drafter=f["near"], ignore_eos=True, max_new_tokens=10), name="hf")
        ),
        parse_policy(
            dict(policy_dict(target=f["target"], plugin="ngram", ignore_eos=True, max_new_tokens=10), name="ngram")
        ),
    ]
    result = run_batch_bench(policies, PROMPTS, [1, 2, 4], repeats=2, warmup=1, progress=False)
    rows = {(r["row"], r["batch_size"]): r for r in result["rows"]}
    assert set(rows) == {(n, b) for n in ("target-only", "hf", "ngram") for b in (1, 2, 4)}
    for (name, b), r in rows.items():
        assert r["tokens"] == 4 * 10 and r["prompts"] == 4  # 4 prompts (the largest B, cycled), 10 tokens each
        assert r["total_tok_s"] == pytest.approx(r["tokens"] / r["seconds"])
        assert r["decode_tok_s"] >= r["total_tok_s"]
        lo, hi = r["speedup_vs_target_range"]
        assert lo <= r["speedup_vs_target"] <= hi
        assert r["kv_bytes_per_row"] > 0 and 0 <= r["pad_waste"] < 1 and 0 <= r["hole_fraction"] < 1
        if name == "target-only":
            assert r["speedup_vs_target"] == 1.0 and r["tau"] == 1.0
        else:
            assert r["tau"] >= 1 and r["predicted_vs_target"] > 0 and (name == "ngram" or r["tau"] > 1)
        if b == 1:
            assert r["speedup_vs_b1"] == 1.0 and r["pad_waste"] == 0.0
    assert "vs target" in format_batch_result(result)


@pytest.mark.slow
def test_the_command_writes_json(family, tmp_path):
    f = family("gpt2")
    policy = write_policy(tmp_path / "p.yaml", **policy_dict(target=f["target"], plugin="ngram", max_new_tokens=6))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cascade.cli",
            "bench",
            str(policy),
            "--batch-sizes",
            "1,2",
            "--prompts",
            str(prompts),
            "--repeats",
            "1",
            "--no-store",
            "--no-progress",
            "--json",
            str(tmp_path / "b.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "vs B=1" in out.stdout
    assert len(json.loads((tmp_path / "b.json").read_text())["rows"]) == 4
