"""Real processes against one store: concurrent writers lose nothing; SIGKILL keeps what was flushed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from test_store_support import count_rows

from cascade.store import Store, queries, synthetic

pytestmark = pytest.mark.slow  # end to end: ./scripts/test.sh runs it, --fast skips it

pytest_plugins = ["test_store_support"]  # the store_url fixture

POLICY = textwrap.dedent("""
    from cascade.policy import parse_policy
    policy = parse_policy({"name": NAME, "target": {"model": "models/target"},
                           "drafter": {"plugin": "hf-model", "options": {"model": "models/tiny"}},
                           "rule": {"name": "token_v3", "alpha": 0.3}}, text="name: " + NAME)
""")

WRITER = POLICY + textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cascade.store import Store, synthetic
    url, worker, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print("ready", flush=True)
    while not go.exists():  # start together, so that the first open of the store is concurrent too
        time.sleep(0.001)
    with Store.open(url) as store, store.start_run(policy, flush_rows=25, flush_seconds=1e9) as run:
        for j in range(3):
            run.log_generation(f"w{worker} p{j}", synthetic.generation(10 * worker + j, n_steps=40))
    print(run.run_id)
""")

KILLED = POLICY + textwrap.dedent("""
    import sys, time
    from cascade.store import Store, synthetic
    store = Store.open(sys.argv[1])
    run = store.start_run(policy, flush_rows=10**6, flush_seconds=1e9)
    gen = synthetic.generation(7, n_steps=30)
    seq = run.start_sequence("p", 5)
    for step in gen.steps[:20]:
        run.log_step(seq, step)
    run.flush()
    print("flushed", run.run_id, 20, sum(len(s.decisions) for s in gen.steps[:20]), flush=True)
    for step in gen.steps[20:]:
        run.log_step(seq, step)  # buffered: lost by SIGKILL, by design
    print("buffered", flush=True)
    time.sleep(120)
""")


def _python(script: str, name: str, *args: str, cwd) -> subprocess.Popen:
    code = f"NAME = {name!r}\n" + script
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_four_processes_writing_runs_at_once_lose_no_rows(store_url, tmp_path):
    go = tmp_path / "go"
    procs = [_python(WRITER, f"worker-{w}", store_url, str(w), str(go), cwd=tmp_path) for w in range(4)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    go.touch()
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, results):
        assert p.returncode == 0, err
    assert len({int(out) for out, _ in results}) == 4  # four distinct runs
    gens = [synthetic.generation(10 * w + j, n_steps=40) for w in range(4) for j in range(3)]
    assert count_rows(store_url, "runs") == 4
    assert count_rows(store_url, "sequences") == 12
    assert count_rows(store_url, "steps") == sum(len(g.steps) for g in gens)
    assert count_rows(store_url, "decisions") == sum(len(s.decisions) for g in gens for s in g.steps)
    with Store.open(store_url) as store:
        runs = queries.list_runs(store)
        assert sorted(r["policy_name"] for r in runs) == [f"worker-{w}" for w in range(4)]
        assert {r["status"] for r in runs} == {"done"}
        for r in runs:
            assert queries.check_totals(store, r["id"]) == []


def test_sigkill_keeps_flushed_rows_and_the_run_is_marked_interrupted(store_url, tmp_path):
    proc = _python(KILLED, "killed", store_url, cwd=tmp_path)
    try:
        first = proc.stdout.readline().split()
        assert first[:1] == ["flushed"], proc.stderr.read()
        assert proc.stdout.readline().strip() == "buffered"
        run_id, n_steps, n_decisions = map(int, first[1:])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert count_rows(store_url, "runs", "WHERE status = 'running'") == 1  # nobody has looked yet
    with Store.open(store_url) as store:  # opening the store notices the dead writer
        shown = queries.show_run(store, run_id)
    assert shown["run"]["status"] == "interrupted"
    assert shown["rows"] == {"sequences": 1, "finished_sequences": 0, "steps": n_steps}
    assert count_rows(store_url, "decisions") == n_decisions
