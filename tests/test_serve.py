"""`cascade serve` on loopback: the official openai client, continuous batching, errors, Prometheus, the log."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Mapping

import httpx
import pytest
from openai import OpenAI

from cascade.decode.engine import Engine
from cascade.serve.server import Server
from cascade.testing import policy_dict, write_policy

PROMPTS = ["def add(a, b):\n", "class Point:\n    def __init__(self, x, y):\n", "for i in range(10):\n", "x"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def policies(family, tmp_path_factory):
    """Two policies over the tiny GPT-2 family, the target's tokenizer with a chat template."""
    f = family("gpt2")
    root = tmp_path_factory.mktemp("serve")
    target = root / "target"
    shutil.copytree(f["target"], target)
    cfg = json.loads((target / "tokenizer_config.json").read_text())
    (target / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": TEMPLATE}))
    spec = policy_dict(target, f["near"], max_new_tokens=16, block_size=3, ignore_eos=True)
    spec["name"] = "spec"
    cascade = policy_dict(
        target, f["near"], rule="token_v3", alpha=0.3, max_new_tokens=16, block_size=3, ignore_eos=True
    )
    cascade["name"] = "cascade-v3"
    return [write_policy(root / "spec.yaml", **spec), write_policy(root / "cascade.yaml", **cascade)]


@pytest.fixture
def server(policies, tmp_path):
    s = Server.load(policies, max_num_seqs=4, max_waiting=16, store=f"sqlite:///{tmp_path / 'serve.db'}")
    url = s.serve_in_thread()
    yield s, url
    s.close()


def offline(policy_path, prompt, **kw):
    from cascade.policy import load_policy

    return Engine.from_policy(load_policy(policy_path)).generate(prompt, **kw)


def client(url: str) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)


def test_the_openai_client_completes_and_chats_as_cascade_run_decodes(server, policies):
    s, url = server
    c = client(url)
    assert [m.id for m in c.models.list().data] == ["spec", "cascade-v3"]
    for i, prompt in enumerate(PROMPTS[:2]):
        want = offline(policies[i], prompt)
        model = ["spec", "cascade-v3"][i]
        r = c.completions.create(model=model, prompt=prompt, max_tokens=16)
        assert r.choices[0].text == want.text and r.usage.completion_tokens == len(want.token_ids)
        assert r.usage.prompt_tokens == want.prompt_tokens and r.choices[0].finish_reason == "length"
        m = r.model_extra["metrics"]
        assert m["speculative_decoding"]["num_draft_tokens"] == want.metrics.num_draft_tokens
        assert m["cascade"]["deferred_tokens"] == want.metrics.num_deferred and m["cascade"]["rule"] == want_rule(i)
        parts, usage = [], None
        stream = c.completions.create(
            model=model, prompt=prompt, max_tokens=16, stream=True, stream_options={"include_usage": True}
        )
        for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].text)
            else:
                usage = chunk
        assert "".join(parts) == want.text and len(parts) > 2  # a chunk per engine step
        assert usage.usage.completion_tokens == len(want.token_ids)
        assert usage.model_extra["metrics"]["speculative_decoding"]["num_accepted_draft_tokens"] == (
            want.metrics.num_accepted_tokens
        )
    chat = c.chat.completions.create(model="spec", messages=[{"role": "user", "content": "add two numbers"}])
    tok = s.served["spec"].engine.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "add two numbers"}], add_generation_prompt=True)
    ids = list(ids["input_ids"] if isinstance(ids, Mapping) else ids)
    assert chat.choices[0].message.content == offline(policies[0], ids).text
    streamed = c.chat.completions.create(
        model="spec", messages=[{"role": "user", "content": "add two numbers"}], stream=True
    )
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == chat.choices[0].message.content
    )


def want_rule(i: int) -> str:
    return ["none", "token_v3"][i]


def test_alpha_per_request_and_sampling_per_request(server, policies):
    s, url = server
    c = client(url)
    at = c.completions.create(model="cascade-v3@0.9", prompt=PROMPTS[0], max_tokens=16)
    from cascade.policy import load_policy

    alt = load_policy(policies[1]).derive("alt", {"rule": {"alpha": 0.9}})
    assert at.choices[0].text == Engine.from_policy(alt).generate(PROMPTS[0]).text
    assert at.model_extra["metrics"]["cascade"]["alpha"] == 0.9
    body = c.completions.create(
        model="cascade-v3", prompt=PROMPTS[0], max_tokens=16, extra_body={"cascade": {"alpha": 0.9}}
    )
    assert body.choices[0].text == at.choices[0].text
    sampled = [
        c.completions.create(model="spec", prompt=PROMPTS[0], max_tokens=16, temperature=1.0, seed=seed).choices[0].text
        for seed in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1] != sampled[2]
    hot = load_policy(policies[0]).derive("hot", {"decoding": {"temperature": 1.0}})
    assert sampled[0] == Engine.from_policy(hot).generate(PROMPTS[0], seed=1).text


def test_requests_join_a_running_batch_and_decode_as_alone(server, policies):
    s, url = server
    want = {p: offline(policies[0], p, max_new_tokens=150).text for p in PROMPTS}
    out: dict[str, str] = {}

    def ask(prompt: str, delay: float) -> None:
        time.sleep(delay)
        out[prompt] = client(url).completions.create(model="spec", prompt=prompt, max_tokens=150).choices[0].text

    threads = [threading.Thread(target=ask, args=(p, 0.05 * i)) for i, p in enumerate(PROMPTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == want
    assert s.served["spec"].loop.joined_live >= 1  # some request was admitted while others decoded


def test_a_client_that_goes_away_frees_its_row(server):
    s, url = server
    loop = s.served["spec"].loop
    body = {"model": "spec", "prompt": PROMPTS[0], "max_tokens": 2000, "stream": True}
    with httpx.Client(timeout=30) as h, h.stream("POST", url + "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")  # decoding
        assert loop.active
    deadline = time.monotonic() + 20
    while loop.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not loop.active  # the row left the batch
    assert (
        'cascade:request_success_total{finished_reason="abort",policy="spec"} 1.0' in httpx.get(url + "/metrics").text
    )


def test_a_full_queue_answers_503_with_retry_after(policies):
    s = Server.load(policies[:1], max_num_seqs=1, max_waiting=1, store=None)
    url = s.serve_in_thread()
    try:
        codes: list[tuple[int, str | None]] = []

        def ask() -> None:
            r = httpx.post(
                url + "/v1/completions", json={"model": "spec", "prompt": "x", "max_tokens": 400}, timeout=120
            )
            codes.append((r.status_code, r.headers.get("retry-after")))

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (503, "1") in codes and (200, None) in codes
        assert httpx.get(url + "/health").status_code == 200
    finally:
        s.close()


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server):
    s, url = server
    cases = [
        ({"model": "nope", "prompt": "x"}, 404, "model"),
        ({"model": "cascade-v3@2.5", "prompt": "x"}, 400, "alpha"),
        ({"model": "cascade-v3@high", "prompt": "x"}, 400, "model"),
        ({"model": "spec", "prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
        ({"model": "spec", "prompt": "x", "n": 2}, 400, "n"),
        ({"model": "spec", "prompt": "x", "logprobs": 2}, 400, "logprobs"),
        ({"model": "spec", "prompt": "x " * 400}, 400, "prompt"),
        ({"model": "spec", "prompt": "x", "cascade": {"rule": "chow"}}, 400, "cascade.rule"),
        ({"model": "spec", "prompt": "x", "cascade": {"rule": "fancy"}}, 400, "cascade.rule"),
        ({"model": "cascade-v3", "prompt": "x", "cascade": {"speculate": False}}, 400, "cascade.speculate"),
        ({"model": "spec", "prompt": "x", "cascade": {"beam": 2}}, 400, "cascade.beam"),
        ({"model": "spec"}, 400, "prompt"),
    ]
    for body, status, param in cases:
        r = httpx.post(url + "/v1/completions", json=body, timeout=30)
        err = r.json()["error"]
        assert (r.status_code, err["code"], err["param"]) == (status, status, param), (body, err)
        assert err["message"] and err["type"]
    r = httpx.post(url + "/v1/completions", content=b"{not json", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == 400
    assert client(url).completions.create(model="spec", prompt="x", max_tokens=4).choices[0].text is not None
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    assert httpx.get(url + "/version").json()["version"]


def test_metrics_parse_and_add_up_the_responses(server):
    from prometheus_client.parser import text_string_to_metric_families

    s, url = server
    c = client(url)
    got = [c.completions.create(model="spec", prompt=p, max_tokens=16).model_extra["metrics"] for p in PROMPTS]
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(url + "/metrics").text)}

    def total(name: str, **labels: str) -> float:
        return sum(
            x.value
            for x in families[name].samples
            if x.name.endswith("_total") and all(x.labels.get(k) == v for k, v in labels.items())
        )

    spec = [m["speculative_decoding"] for m in got]
    assert total("cascade:spec_decode_num_draft_tokens", policy="spec") == sum(m["num_draft_tokens"] for m in spec)
    assert total("cascade:spec_decode_num_accepted_tokens", policy="spec") == sum(
        m["num_accepted_draft_tokens"] for m in spec
    )
    assert total("cascade:spec_decode_num_drafts", policy="spec") == sum(m["num_spec_steps"] for m in spec)
    first = total("cascade:spec_decode_num_accepted_tokens_per_pos", policy="spec", position="0")
    assert first == sum((m["accepted_per_position"] or [0])[0] for m in spec)
    assert total("cascade:request_success", policy="spec", finished_reason="length") == len(PROMPTS)
    for name in (
        "cascade:time_to_first_token_seconds",
        "cascade:e2e_request_latency_seconds",
        "cascade:request_queue_time_seconds",
        "cascade:inter_token_latency_seconds",
        "cascade:request_time_per_output_token_seconds",
        "cascade:request_spec_decode_acceptance_rate",
    ):
        count = [x.value for x in families[name].samples if x.name == name + "_count" and x.labels["policy"] == "spec"]
        assert count and count[0] > 0, name
    assert "cascade:num_requests_running" in families and "cascade:num_requests_waiting" in families


def test_served_requests_are_runs_in_the_store(server, tmp_path):
    from cascade.store import Store
    from cascade.store.queries import list_runs

    s, url = server
    c = client(url)
    for p in PROMPTS:
        c.completions.create(model="cascade-v3", prompt=p, max_tokens=8)
    s.close()
    with Store.open(f"sqlite:///{tmp_path / 'serve.db'}") as store:
        runs = {r["policy_name"]: r for r in list_runs(store)}
    assert runs["cascade-v3"]["num_sequences"] == len(PROMPTS) and runs["cascade-v3"]["status"] == "done"


def test_a_failing_store_drops_rows_and_serving_goes_on(server):
    s, url = server
    book = s.served["spec"].loop.logbook

    def broken(*a, **k):
        raise RuntimeError("database is locked")

    book.run.log_generation = broken
    c = client(url)
    for p in PROMPTS[:2]:
        assert c.completions.create(model="spec", prompt=p, max_tokens=4).choices[0].text is not None
    deadline = time.monotonic() + 10
    while book.dropped < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert book.dropped == 2
    assert 'cascade:store_dropped_total{policy="spec"} 2.0' in httpx.get(url + "/metrics").text


def test_a_dead_engine_loop_fails_its_requests_and_health(server):
    s, url = server
    engine = s.served["spec"].engine

    def boom(rows):
        raise RuntimeError("device lost")

    engine.step_fn = boom
    r = httpx.post(url + "/v1/completions", json={"model": "spec", "prompt": "x", "max_tokens": 4}, timeout=30)
    assert r.status_code == 500 and "device lost" in r.json()["error"]["message"]
    assert httpx.get(url + "/health").status_code == 503
    r = httpx.post(url + "/v1/completions", json={"model": "spec", "prompt": "x", "max_tokens": 4}, timeout=30)
    assert r.status_code == 503
    assert client(url).completions.create(model="cascade-v3", prompt="x", max_tokens=4).choices  # the other serves


def test_a_request_may_bring_another_rule_or_switch_speculation_off(server, policies):
    from cascade.policy import load_policy

    s, url = server
    c = client(url)
    chow = c.completions.create(
        model="cascade-v3", prompt=PROMPTS[0], max_tokens=16, extra_body={"cascade": {"rule": "chow", "alpha": 0.5}}
    )
    alt = load_policy(policies[1]).derive("alt", {"rule": {"name": "chow", "alpha": 0.5}})
    assert chow.choices[0].text == Engine.from_policy(alt).generate(PROMPTS[0]).text
    assert chow.model_extra["metrics"]["cascade"]["rule"] == "chow"
    off = c.completions.create(
        model="spec", prompt=PROMPTS[1], max_tokens=16, extra_body={"cascade": {"speculate": False}}
    )
    assert off.model_extra["metrics"]["speculative_decoding"]["num_draft_tokens"] == 0
    target = load_policy(policies[0]).derive("t", {"mode": "target"})
    assert off.choices[0].text == Engine.from_policy(target).generate(PROMPTS[1]).text
    deferred = 'cascade:deferred_tokens_total{policy="cascade-v3",rule="chow"}'
    assert deferred in httpx.get(url + "/metrics").text
