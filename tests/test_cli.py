"""`cascade run` end to end: JSON output, many prompts, the store, and bad input without tracebacks."""

import json
import subprocess
import sys

import pytest
from conftest import policy_dict, write_policy

from cascade.store import Store, queries


def cascade(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "cascade.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env)


@pytest.fixture(scope="module")
def policy(family, tmp_path_factory):
    f = family("gpt2")
    d = tmp_path_factory.mktemp("cli")
    return write_policy(d / "p.yaml", **policy_dict(f["target"], f["near"], rule="token_v3", alpha=0.3,
                                                     ignore_eos=True, max_new_tokens=12))


def test_run_json_and_store(policy, tmp_path):
    db = tmp_path / "runs.db"
    out = cascade("run", policy, "--prompt", "def add(a, b):", "--json", "--store", f"sqlite:///{db}")
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert set(obj) >= {"text", "token_ids", "metrics"} and len(obj["token_ids"]) == 12
    for key in ("num_drafts", "num_draft_tokens", "num_accepted_tokens", "accepted_per_position", "num_deferred",
                "target_calls", "drafter_calls", "num_generated_tokens", "decode_seconds", "tokens_per_second"):
        assert key in obj["metrics"], key
    with Store.open(f"sqlite:///{db}") as store:
        runs = queries.list_runs(store)
        assert len(runs) == 1 and runs[0]["status"] == "done"
        assert queries.check_totals(store, runs[0]["id"]) == []


def test_run_many_prompts_jsonl(policy, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "def f(x):"}\n\n{"prompt": "class A:", "reference": "pass"}\n')
    out = cascade("run", policy, "--prompts", prompts, "--json", "--no-store", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 2
    assert not (tmp_path / "cascade.db").exists()


def test_default_store_is_cascade_db_in_cwd(policy, tmp_path):
    out = cascade("run", policy, "--prompt", "x = 1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cascade.db").exists()


@pytest.mark.parametrize("args,message", [
    (["--prompt", ""], "empty prompt"),
    (["--prompt", "x = 1\n" * 400], "shorten it"),
    (["--prompts", "missing.jsonl"], "prompts file not found"),
    (["--prompt", "x", "--store", "postgresql+psycopg://u:secret@127.0.0.1:1/db"], "***"),
])
def test_bad_input_is_refused_without_traceback(policy, tmp_path, args, message):
    out = cascade("run", policy, *args, *([] if "--store" in args else ["--no-store"]), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert "secret" not in out.stderr


def test_bad_policy_and_bad_model_without_traceback(tmp_path, family):
    bad = write_policy(tmp_path / "bad.yaml", name="b", target={"model": "x"}, mode="speculative",
                       drafter={"plugin": "ngram"}, rule={"name": "chow", "alpha": 0.5})
    out = cascade("run", bad, "--prompt", "x", "--no-store")
    assert out.returncode == 2 and "needs drafter probabilities" in out.stderr and "Traceback" not in out.stderr
    missing = write_policy(tmp_path / "m.yaml", name="m", target={"model": str(tmp_path / "nope")}, mode="target")
    out = cascade("run", missing, "--prompt", "x", "--no-store")
    assert out.returncode == 2 and "could not load" in out.stderr and "Traceback" not in out.stderr


def test_vocabulary_mismatch_names_both_sizes(tmp_path, tokenizer_dir, family):
    from cascade.testing import build_model

    other = tmp_path / "other"
    build_model("gpt2", other, 5, tokenizer_dir, vocab=200)  # narrower than the tokenizer: not the same tokenizer
    p = write_policy(tmp_path / "v.yaml", **policy_dict(family("gpt2")["target"], other))
    out = cascade("run", p, "--prompt", "x", "--no-store")
    assert out.returncode == 2 and "200" in out.stderr and "320" in out.stderr and "Traceback" not in out.stderr
