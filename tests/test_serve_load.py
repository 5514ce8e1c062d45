"""`cascade serve` under load on the shipped models, and `cascade bench serve` (the load generator)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from cascade.cli import main
from cascade.serve.server import Server, wait_until_serving

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_64_requests_at_concurrency_8_lose_nothing_and_equal_offline(tmp_path):
    """The shipped models behind the server: 64 greedy requests, 8 in flight; none fails, each equals its offline
    decode, and every one is a sequence of the served run in the store."""
    from cascade.decode.engine import Engine
    from cascade.policy import load_policy
    from cascade.prompts import read_prompts
    from cascade.store import Store
    from cascade.store.queries import list_runs

    policy = REPO / "policies" / "speculative-ngram.yaml"
    prompts = [r["prompt"] for r in read_prompts(REPO / "prompts" / "stdlib-heldout.jsonl")][:16] * 4
    store = f"sqlite:///{tmp_path / 'load.db'}"
    server = Server.load([policy], max_num_seqs=8, max_waiting=64, store=store)
    url = server.serve_in_thread()
    texts: dict[int, str] = {}
    errors: list[str] = []
    pending = list(enumerate(prompts))
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=300) as h:
            while True:
                with lock:
                    if not pending:
                        return
                    i, prompt = pending.pop(0)
                r = h.post(
                    url + "/v1/completions", json={"model": "speculative-ngram", "prompt": prompt, "max_tokens": 32}
                )
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                texts[i] = r.json()["choices"][0]["text"]

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    joined = server.served["speculative-ngram"].loop.joined_live
    server.close()
    assert not errors and len(texts) == 64
    engine = Engine.from_policy(load_policy(policy))
    offline = [g.text for g in engine.generate(prompts[:16], max_new_tokens=32, batch_size=8)]
    assert [texts[i] for i in range(64)] == offline * 4
    assert joined > 0  # requests joined batches that were decoding
    with Store.open(store) as s:
        (run,) = [r for r in list_runs(s) if r["policy_name"] == "speculative-ngram"]
    assert run["num_sequences"] == 64


def test_bench_serve_reports_what_serving_benchmarks_report(family, tmp_path, capsys):
    from cascade.testing import policy_dict, write_policy

    f = family("gpt2")
    path = write_policy(tmp_path / "p.yaml", **{**policy_dict(f["target"], f["near"], ignore_eos=True), "name": "p"})
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ("def f(x):\n", "import os\n", "class A:\n")))
    server = Server.load([path], max_num_seqs=4, store=None)
    url = server.serve_in_thread()
    try:
        out = tmp_path / "serve.json"
        argv = ["bench", "serve", "--url", url, "--prompts", str(prompts), "--concurrency", "1,3"]
        assert main([*argv, "--requests", "6", "--max-new-tokens", "8", "--json", str(out)]) == 0
        levels = json.loads(out.read_text())["levels"]
        assert [(r["max_concurrency"], r["completed"], r["failed"]) for r in levels] == [(1, 6, 0), (3, 6, 0)]
        for r in levels:
            assert r["total_output_tokens"] == 6 * 8 and r["output_throughput"] > 0
            assert r["median_ttft_ms"] > 0 and r["p99_e2el_ms"] >= r["median_e2el_ms"] and r["median_tpot_ms"] > 0
            assert r["spec_decode_draft_tokens"] > 0 and 0 <= r["spec_decode_acceptance_rate"] <= 1
        assert "out tok/s" in capsys.readouterr().out
        assert main(["bench", "serve", "--url", url, "--model", "nope"]) == 2
    finally:
        server.close()


@pytest.mark.slow
def test_cascade_serve_runs_as_a_process_on_localhost(family, tmp_path):
    """The real command: `cascade serve` binds 127.0.0.1, answers, and stops cleanly on SIGINT."""
    import signal
    import socket
    import subprocess
    import sys

    from cascade.testing import policy_dict, write_policy

    f = family("gpt2")
    path = write_policy(tmp_path / "p.yaml", **{**policy_dict(f["target"], f["near"]), "name": "p"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "cascade.cli", "serve", str(path), "--port", str(port), "--no-store"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, proc)
        r = httpx.post(url + "/v1/completions", json={"model": "p", "prompt": "def f(x):\n", "max_tokens": 4})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"serving p on http://127.0.0.1:{port}/v1" in out
