"""`cascade serve --ray`: two replicas of the shipped tiny pair behind Ray Serve's proxy, on loopback.

One local Ray cluster (2 logical CPUs, replicas at half a CPU) serves the module's tests: the official openai client
streams through the proxy and both replicas answer, each request equal to its offline decode; the replicas log to
one store (the CI's PostgreSQL server when CASCADE_TEST_PG_URL names one, else a SQLite file for one replica is the
only store allowed, so the shared-store test needs the server); /metrics is the cluster's whichever replica answers;
and killing a replica mid-load leaves only clean errors, Ray restarts it, and nothing logged is lost.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "policies" / "speculative-lossless.yaml"
PROMPTS = ["def add(a, b):\n", "class Point:\n    def __init__(self, x, y):\n", "for i in range(10):\n", "import os\n"]
TOKENS = 24
PG_ENV = "CASCADE_TEST_PG_URL"


@pytest.fixture(scope="module")
def pg_store():
    """A PostgreSQL schema of its own for the module (None without a server)."""
    base = os.environ.get(PG_ENV)
    if not base:
        yield None
        return
    from test_store_support import pg_schema

    with pg_schema(base, prefix="ray_") as url:
        yield url


@pytest.fixture(scope="module")
def cluster(pg_store, tmp_path_factory):
    """Two replicas deployed on a local Ray cluster: (base URL, options, store URL or None)."""
    pytest.importorskip("ray.serve")
    import socket

    from cascade.serve import ray_serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = ray_serve.RayServeOptions(name="cascade-test", replicas=2, num_cpus=0.5, cluster_cpus=2)
    url = ray_serve.deploy([POLICY], options, port=port, max_num_seqs=4, max_waiting=16, store=pg_store)
    yield url, options, pg_store
    ray_serve.shutdown()


def offline(prompt: str) -> str:
    from cascade.decode.engine import Engine
    from cascade.policy import load_policy

    return Engine.from_policy(load_policy(POLICY)).generate(prompt, max_new_tokens=TOKENS).text


def complete(h: httpx.Client, url: str, prompt: str) -> httpx.Response:
    body = {"model": "speculative-lossless", "prompt": prompt, "max_tokens": TOKENS}
    return h.post(url + "/v1/completions", json=body, timeout=120)


def test_two_replicas_answer_the_openai_client_as_cascade_run_decodes(cluster):
    from openai import OpenAI

    url, _, _ = cluster
    want = {p: offline(p) for p in PROMPTS}
    seen: set[str] = set()
    with httpx.Client() as h:
        for i in range(16):  # power of two choices over two idle replicas: both answer within a few requests
            r = complete(h, url, PROMPTS[i % len(PROMPTS)])
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["text"] == want[PROMPTS[i % len(PROMPTS)]]
            seen.add(r.headers["x-cascade-replica"])
    assert len(seen) == 2, seen
    c = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
    assert [m.id for m in c.models.list().data] == ["speculative-lossless"]
    stream = c.completions.create(model="speculative-lossless", prompt=PROMPTS[0], max_tokens=TOKENS, stream=True)
    assert "".join(ch.choices[0].text for ch in stream if ch.choices) == want[PROMPTS[0]]


def test_metrics_are_the_clusters_whichever_replica_answers(cluster):
    """Ray's names (`ray_cascade_...`), one series per replica; the drafted-token counters of both replicas appear
    in every scrape, and they only grow."""
    from prometheus_client.parser import text_string_to_metric_families

    url, _, _ = cluster

    def drafted() -> dict[str, float]:
        text = httpx.get(url + "/metrics", timeout=30).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == "ray_cascade_spec_decode_num_draft_tokens":
                for s in family.samples:
                    if s.name.endswith("_total"):
                        out[s.labels["replica"]] = s.value
        return out

    with httpx.Client() as h:
        for i in range(8):
            assert complete(h, url, PROMPTS[i % len(PROMPTS)]).status_code == 200
    deadline = time.monotonic() + 30  # Ray's agent exports every 2 s here
    while len(first := drafted()) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert len(first) == 2 and all(v > 0 for v in first.values()), first
    for _ in range(3):  # each scrape reaches one replica or the other; each shows both
        again = drafted()
        assert set(again) == set(first) and all(again[k] >= first[k] for k in first)


def _logged(store: str, deployment: str) -> tuple[int, set[str]]:
    """(sequences, replicas) of the runs the deployment logged."""
    from cascade.store import Store
    from cascade.store.queries import served_runs

    with Store.open(store, create=False) as s:
        runs = served_runs(s, deployment)
    return sum(r["sequences"] for r in runs), {r["replica"] for r in runs}


def test_replicas_log_to_one_store_none_missing(cluster):
    url, options, store = cluster
    if store is None:
        pytest.skip(f"the shared store is PostgreSQL: set {PG_ENV} (CI does)")
    before, _ = _logged(store, options.name)
    with httpx.Client() as h:
        for i in range(12):
            assert complete(h, url, PROMPTS[i % len(PROMPTS)]).status_code == 200
    deadline = time.monotonic() + 30  # each replica's decision log flushes within a couple of seconds
    while (got := _logged(store, options.name))[0] < before + 12 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert got[0] == before + 12 and len(got[1]) == 2, got


def test_killing_a_replica_mid_load_gives_clean_errors_and_recovers(cluster):
    """A load of 4 concurrent clients; one replica's actor is killed. Every request either completes with the
    offline text or fails with a 5xx (never a hang or a truncated 200); Ray restarts the replica and the service
    answers again from two replicas; what was logged before stays."""
    import ray

    url, options, store = cluster
    want = {p: offline(p) for p in PROMPTS}
    logged_before = _logged(store, options.name)[0] if store else 0
    outcomes: list[tuple[int, bool]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client() as h:
            i = 0
            while not stop.is_set():
                p = PROMPTS[i % len(PROMPTS)]
                try:
                    r = complete(h, url, p)
                    ok = r.status_code != 200 or r.json()["choices"][0]["text"] == want[p]
                    code = r.status_code
                except httpx.HTTPError:
                    code, ok = 599, True  # a dropped connection is a clean failure for the client too
                with lock:
                    outcomes.append((code, ok))
                i += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]
    assert len(names) == 2, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    time.sleep(6)
    stop.set()
    for t in threads:
        t.join(180)
    assert outcomes and all(ok for _, ok in outcomes), outcomes  # no 200 ever carried a wrong or truncated text
    assert all(code == 200 or code >= 500 for code, _ in outcomes), outcomes
    assert sum(code == 200 for code, _ in outcomes) > 0
    deadline = time.monotonic() + 120  # the controller replaces the replica (a fresh process loads the models)
    seen: set[str] = set()
    with httpx.Client() as h:
        while len(seen) < 2 and time.monotonic() < deadline:
            r = complete(h, url, PROMPTS[0])
            if r.status_code == 200:
                assert r.json()["choices"][0]["text"] == want[PROMPTS[0]]
                seen.add(r.headers["x-cascade-replica"])
            else:
                time.sleep(1)
    assert len(seen) == 2, seen
    if store:
        assert _logged(store, options.name)[0] >= logged_before


def test_session_affinity_keeps_a_conversation_on_one_replica(cluster):
    """Deployed anew with --session-affinity: each x-session-id is answered by one replica, every time; the
    sessions spread over both. (Ray's proxy keeps a deployment's router across a redeploy: this is a new deployment.)"""
    from ray import serve

    from cascade.serve import ray_serve

    url, options, store = cluster
    sticky = options.model_copy(update={"session_affinity": True, "name": options.name + "-sticky"})
    port = int(url.rsplit(":", 1)[1])
    serve.delete(options.name)
    ray_serve.deploy([POLICY], sticky, port=port, max_num_seqs=4, max_waiting=16, store=store)
    by_session: dict[str, set[str]] = {}
    with httpx.Client() as h:
        for i in range(24):
            session = f"chat-{i % 8}"
            body = {"model": "speculative-lossless", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 4}
            r = h.post(url + "/v1/completions", json=body, headers={"x-session-id": session}, timeout=120)
            assert r.status_code == 200, r.text
            by_session.setdefault(session, set()).add(r.headers["x-cascade-replica"])
    assert all(len(v) == 1 for v in by_session.values()), by_session
    assert len(set().union(*by_session.values())) == 2, by_session
