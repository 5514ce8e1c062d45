"""`cascade bench --calls`: per-call latency of each runtime, with the arithmetic share."""

import json
import subprocess
import sys

import pytest

from cascade.bench.calls import _is_arithmetic, compare_runtimes, format_calls
from cascade.decode.engine import Engine
from cascade.policy import parse_policy
from cascade.testing import policy_dict, write_policy


def test_kernels_that_compute_count_as_arithmetic_and_bookkeeping_does_not():
    for name in (
        "aten::mm",
        "aten::addmm",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::gelu",
        "aten::native_layer_norm",
        "aten::add",
        "aten::copy_",
        "aten::index",
    ):
        assert _is_arithmetic(name), name
    for name in ("aten::view", "aten::as_strided", "aten::empty", "aten::transpose", "aten::slice", "aten::expand"):
        assert not _is_arithmetic(name), name


@pytest.mark.slow
def test_both_runtimes_are_timed_for_the_drafter_step_and_each_verification_size(family):
    f = family("llama")
    e = Engine.from_policy(parse_policy(policy_dict(target=f["target"], drafter=f["near"])))
    rows = compare_runtimes(e, "def f(x):\n    return x\n", 2, trials=2)
    assert [r["call"] for r in rows] == ["drafter step", "target, 1 token", "target, 2 tokens", "target, 3 tokens"]
    for r in rows:
        assert r["transformers_ms"] > 0 and r["lean_ms"] > 0
        assert 0 < r["lean_arithmetic"] <= 1 and 0 < r["transformers_arithmetic"] <= 1
        assert r["speedup"] == r["transformers_ms"] / r["lean_ms"]
    assert "lean speed-up" in format_calls(rows)


@pytest.mark.slow
def test_the_command(family, tmp_path):
    f = family("gpt2")
    policy = write_policy(tmp_path / "p.yaml", **policy_dict(target=f["target"], plugin="ngram"))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "import os\n"}) + "\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cascade.cli",
            "bench",
            str(policy),
            "--calls",
            "1",
            "--prompts",
            str(prompts),
            "--no-store",
            "--json",
            str(tmp_path / "c.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "target, 2 tokens" in out.stdout and "drafter step" not in out.stdout  # n-gram runs no model
    assert len(json.loads((tmp_path / "c.json").read_text())["policies"]["test-speculative-none"]) == 2
