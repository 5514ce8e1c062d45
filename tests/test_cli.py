"""`cascade run` end to end: JSON output, many prompts, the store, and bad input without tracebacks;
the command line's own behaviour: help, --version, --debug, closed pipes."""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from cascade.drafter import DrafterBase
from cascade.store import Store, queries
from cascade.testing import policy_dict, write_policy


def cascade(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """`cascade ARGS` in this process (what `python -m cascade.cli` runs, without starting an interpreter and
    importing torch each time): its exit status and what it wrote to stdout and stderr. `cascade_process` runs
    the real command line, for what only a process shows (exit codes, tracebacks, closed pipes)."""
    from cascade.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main([str(a) for a in args])
            except SystemExit as exc:  # argparse's usage errors
                status = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
    return subprocess.CompletedProcess(list(args), status, out.getvalue(), err.getvalue())


def cascade_process(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cascade.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch):
    """The default store goes to a per-test CASCADE_HOME (inherited by subprocesses), never the user's."""
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CASCADE_STORE", raising=False)


@pytest.fixture(scope="module")
def policy(family, tmp_path_factory):
    f = family("gpt2")
    d = tmp_path_factory.mktemp("cli")
    return write_policy(
        d / "p.yaml",
        **policy_dict(f["target"], f["near"], rule="token_v3", alpha=0.3, ignore_eos=True, max_new_tokens=12),
    )


def test_run_json_and_store(policy, tmp_path):
    db = tmp_path / "runs.db"
    out = cascade("run", policy, "--prompt", "def add(a, b):", "--json", "--store", f"sqlite:///{db}")
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert set(obj) >= {"text", "token_ids", "metrics"} and len(obj["token_ids"]) == 12
    assert obj["run_id"] == 1 and obj["store"] == f"sqlite:///{db}"
    assert out.stderr.strip().splitlines()[-1] == f"logged run 1 to sqlite:///{db}"
    for key in (
        "num_drafts",
        "num_draft_tokens",
        "num_accepted_tokens",
        "accepted_per_position",
        "num_deferred",
        "target_calls",
        "drafter_calls",
        "num_generated_tokens",
        "decode_seconds",
        "tokens_per_second",
    ):
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

    def first(*extra) -> list[int]:
        out = cascade("run", policy, "--prompts", prompts, "--limit", "1", "--json", "--no-store", *extra)
        assert out.returncode == 0, out.stderr
        (row,) = [json.loads(line) for line in out.stdout.strip().splitlines()]  # --limit 1: one row
        return row["token_ids"]

    assert first("--seed", "0") == first("--seed", "1")  # the policy decodes greedily
    assert first("--temperature", "1", "--seed", "0") != first("--temperature", "1", "--seed", "1")


def test_run_batched_streams_rows_with_their_index_and_logs_each_row(policy, tmp_path):
    prompts = tmp_path / "p.jsonl"
    texts = ["def f(x):", "class A:", "import os", "x = [1, 2, 3]\nfor i in x:", "y"]
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    db = tmp_path / "runs.db"
    one = cascade("run", policy, "--prompts", prompts, "--json", "--no-store")
    out = cascade("run", policy, "--prompts", prompts, "--json", "--batch-size", "3", "--store", f"sqlite:///{db}")
    assert one.returncode == 0 and out.returncode == 0, out.stderr
    alone = {o["index"]: o for o in map(json.loads, one.stdout.splitlines())}
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(o["index"] for o in rows) == list(range(5)) and sorted(alone) == list(range(5))
    for o in rows:  # the same tokens as alone (greedy), whatever the batch
        assert o["token_ids"] == alone[o["index"]]["token_ids"]
    with Store.open(f"sqlite:///{db}") as store:
        run = queries.list_runs(store)[0]
        assert run["status"] == "done" and queries.check_totals(store, run["id"]) == []
        seqs = queries.list_sequences(store, run["id"])
        assert sorted(s["prompt_text"] for s in seqs) == sorted(texts)  # every row its own sequence
        assert all(s["prompt_text"] == texts[s["index"]] for s in seqs)  # logged under its prompt's index
        assert sum(s["num_generated_tokens"] for s in seqs) == sum(len(o["token_ids"]) for o in rows)
    bad = cascade("run", policy, "--prompts", prompts, "--batch-size", "0", "--no-store")
    assert bad.returncode == 2 and "--batch-size must be at least 1" in bad.stderr


def test_default_store_is_one_per_user_whatever_the_working_directory(policy, tmp_path):
    home = tmp_path / "home"  # CASCADE_HOME (_own_home); created on first use
    for i, cwd in enumerate([tmp_path / "a", tmp_path / "b"], 1):
        cwd.mkdir()
        out = cascade("run", policy, "--prompt", "x = 1", cwd=cwd)
        assert out.returncode == 0, out.stderr
        assert f"logged run {i} to sqlite:///{home / 'cascade.db'}" in out.stderr
        assert not (cwd / "cascade.db").exists()
    listed = cascade("runs", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [2, 1]


def test_json_objects_say_where_the_run_was_logged():
    from cascade.commands import generation_json
    from cascade.store import synthetic

    obj = generation_json(synthetic.generation(0), 3, "postgresql+psycopg://u:***@h/db")
    assert obj["run_id"] == 3 and obj["store"].endswith("u:***@h/db")
    assert generation_json(synthetic.generation(0))["run_id"] is None


@pytest.mark.parametrize(
    "args,message",
    [
        (["--prompt", ""], "empty prompt"),
        (["--prompt", "x = 1\n" * 400], "shorten it"),
        (["--prompts", "missing.jsonl"], "prompts file not found"),
        (["--prompt", "x", "--store", "postgresql+psycopg://u:secret@127.0.0.1:1/db"], "***"),
    ],
)
def test_bad_input_is_refused_without_traceback(policy, tmp_path, args, message):
    out = cascade("run", policy, *args, *([] if "--store" in args else ["--no-store"]), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert "secret" not in out.stderr


@pytest.mark.slow
def test_the_command_line_process_exits_2_with_one_error_line(policy, tmp_path):
    """The real process: a user error is status 2 and one `error:` line, no traceback (the in-process runs above
    check the messages)."""
    out = cascade_process("run", policy, "--prompt", "", "--no-store", cwd=tmp_path)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and last.startswith("error: ") and "empty prompt" in last
    assert "Traceback" not in out.stderr


def test_a_one_letter_password_masks_only_the_password(policy, tmp_path):
    out = cascade("run", policy, "--prompt", "x", "--store", "postgresql+psycopg://u:p@127.0.0.1:1/db", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip()
    assert line.startswith("error: cannot open store postgresql+psycopg://u:***@127.0.0.1:1/db: "), line
    assert "***ort" not in line and "port" in line  # the driver's "port 1 failed" is left alone


def test_bad_policy_and_bad_model_without_traceback(tmp_path, family):
    bad = write_policy(
        tmp_path / "bad.yaml",
        name="b",
        target={"model": "x"},
        mode="speculative",
        drafter={"plugin": "ngram"},
        rule={"name": "chow", "alpha": 0.5},
    )
    out = cascade("run", bad, "--prompt", "x", "--no-store")
    assert out.returncode == 2 and "needs drafter probabilities" in out.stderr and "Traceback" not in out.stderr
    missing = write_policy(tmp_path / "m.yaml", name="m", target={"model": str(tmp_path / "nope")}, mode="target")
    out = cascade("run", missing, "--prompt", "x", "--no-store")
    assert out.returncode == 2 and "no model folder at" in out.stderr and "Traceback" not in out.stderr


def test_vocabulary_mismatch_names_both_sizes(tmp_path, tokenizer_dir, family):
    from cascade.testing import build_model

    other = tmp_path / "other"
    build_model("gpt2", other, 5, tokenizer_dir, vocab=200)  # narrower than the tokenizer: not the same tokenizer
    p = write_policy(tmp_path / "v.yaml", **policy_dict(family("gpt2")["target"], other))
    out = cascade("run", p, "--prompt", "x", "--no-store")
    assert out.returncode == 2 and "200" in out.stderr and "320" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------------- a drafter plugin that raises


class Flaky(DrafterBase):
    """Drafts the last token again; raises in its third draft of the second sequence."""

    name, deterministic = "flaky", True

    class Options(__import__("pydantic").BaseModel):
        pass

    def __init__(self, options, ctx):
        self.sequences = self.calls = 0

    def start(self, prompts):
        self.sequences, self.calls = self.sequences + 1, 0

    def step(self, ask):
        from cascade.drafter import DraftStep

        if ask.drafted == 0:
            self.calls += 1
        if self.sequences == 2 and self.calls == 3:
            raise ZeroDivisionError("boom")
        return DraftStep(tokens=torch.stack([c[-1] for c in ask.contexts]))


@pytest.fixture
def flaky_installed(monkeypatch):
    """The `flaky` drafter registered by an in-process plugin, in the registry the CLI uses."""
    from cascade import plugins
    from cascade.hookspecs import hookimpl

    module = types.ModuleType("flaky-plugin")
    module.register_drafters = hookimpl(lambda register: register("flaky", Flaky))
    build = plugins.build_registry
    monkeypatch.setattr(
        plugins, "build_registry", lambda extra=None: build(extra=[*(extra or []), ("flaky-plugin", module)])
    )
    plugins.reset_registry()
    yield
    plugins.reset_registry()


def test_a_drafter_that_raises_is_one_error_line_and_a_failed_run(family, flaky_installed, tmp_path, capsys):
    from cascade.cli import main

    f = family("gpt2")
    p = write_policy(
        tmp_path / "flaky.yaml",
        **policy_dict(f["target"], plugin="flaky", drafter_options={}, ignore_eos=True, max_new_tokens=12),
    )
    prompts = tmp_path / "two.jsonl"
    prompts.write_text('{"prompt": "def f(x):"}\n{"prompt": "class A:"}\n')
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    message = "drafter 'flaky' raised in step(): ZeroDivisionError: boom"

    assert main(["run", str(p), "--prompts", str(prompts), "--store", url]) == 2
    out, err = capsys.readouterr()
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [f"error: {message}"]
    assert err.splitlines()[-1] == f"error: {message}" and "Traceback" not in err
    assert f"logged run 1 (failed) to {url}" in err
    assert out.strip()  # the first prompt's completion was printed before the error
    with Store.open(url) as store:
        shown = queries.show_run(store, 1)
        seqs = queries.list_sequences(store, 1)
    assert shown["run"]["status"] == "failed" and message in shown["run"]["error"]
    assert len(seqs) == 2 and seqs[0]["finished_at"] is not None and seqs[1]["finished_at"] is None
    assert seqs[0]["num_generated_tokens"] == 12
    assert shown["rows"]["steps"] >= 3 + 2  # the first sequence's steps and the second's two before the error: kept

    assert main(["--debug", "run", str(p), "--prompts", str(prompts), "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: boom" in err  # the plugin's own frame is shown
    assert err.splitlines()[-1] == f"error: {message}"


# ---------------------------------------------------------------------- prompts checked before models load


@pytest.fixture
def no_model_loading(monkeypatch):
    from cascade.decode.engine import Engine

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the prompts were checked")

    monkeypatch.setattr(Engine, "from_policy", refuse)


@pytest.mark.parametrize(
    "lines,where,message",
    [
        (['{"prompt": "ok"}', "", '{"prompt": ""}'], 3, "empty prompt"),
        (['{"prompt": "  \\n\\t"}'], 1, "empty prompt (whitespace only)"),
        (['{"prompt": "ok"}', '{"prompt": 7}'], 2, 'string "prompt" field'),
    ],
)
def test_bad_prompt_files_are_refused_with_file_and_line_before_any_model(
    policy, tmp_path, capsys, no_model_loading, lines, where, message
):
    from cascade.cli import main

    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert main(["run", str(policy), "--prompts", str(path), "--no-store"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:{where}: ") and message in err


@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_prompt_flag_is_refused_before_any_model(policy, capsys, no_model_loading, prompt):
    from cascade.cli import main

    assert main(["run", str(policy), "--prompt", prompt, "--no-store"]) == 2
    assert capsys.readouterr().err.startswith("error: --prompt: empty prompt")


def test_a_prompt_too_long_names_its_line_before_any_decoding(policy, tmp_path, capsys):
    from cascade.cli import main

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "x = 1"}) + "\n" + json.dumps({"prompt": "x = 1\n" * 400}) + "\n")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["run", str(policy), "--prompts", str(path), "--store", url]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {path}:2: prompt is ") and "shorten it" in err
    assert out == ""  # nothing decoded, not even line 1
    with Store.open(url) as store:
        assert queries.list_runs(store) == []


# ---------------------------------------------------------------------- the command line itself


def test_bare_cascade_prints_the_help_and_fails_as_a_usage_error(capsys):
    from cascade.cli import main

    assert main([]) == 2  # no command given: argparse's usage-error status, so scripts notice
    out = capsys.readouterr().err
    assert out.startswith("usage: cascade") and "run" in out and "--version" in out and "--debug" in out


def test_version_names_cascade_torch_and_transformers(capsys):
    import importlib.metadata as md

    from cascade.cli import main

    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"cascade {md.version('cascade-llm')} (torch {md.version('torch')}, transformers ")
    with pytest.raises(SystemExit) as done:  # among other flags, argparse's own --version answers
        main(["--debug", "--version"])
    assert done.value.code == 0 and capsys.readouterr().out == out


def test_version_loads_neither_plugins_nor_torch():
    code = (
        "import sys; from cascade.cli import main; main(['--version']); "
        "print(sorted({'torch', 'transformers', 'pluggy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "[]", out.stderr


# cascade/zoo/cli.py is owned elsewhere (issue 9): these are still to get their help text
def _options(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join((*path, action.option_strings[0] if action.option_strings else action.dest)), action


def test_every_option_of_every_command_has_help_text():
    from cascade.cli import build_parser

    options = dict(_options(build_parser()))
    assert {"run --prompt", "run policy", "--debug", "runs show run_id", "db upgrade --store"} <= set(options)
    missing = {name for name, action in options.items() if not (action.help or "").strip()}
    assert missing == set(), f"options without help text: {sorted(missing)}"


def test_the_stats_line_is_a_line_of_its_own_and_dashes_what_does_not_apply(capsys):
    from cascade.commands import print_generation
    from cascade.metrics import Metrics

    target_only = types.SimpleNamespace(
        text="    return x", metrics=Metrics(target_calls=3, num_generated_tokens=3, decode_seconds=0.5)
    )
    print_generation(target_only, as_json=False)
    out, err = capsys.readouterr()
    assert out == "    return x\n"  # the completion did not end a line: it is ended before the stats
    assert err == "[3 tokens, 6.0 tok/s, τ=-, target calls/token=1.00]\n"
    print_generation(types.SimpleNamespace(text="pass\n", metrics=Metrics()), as_json=False)
    out, err = capsys.readouterr()
    assert out == "pass\n" and err == "[0 tokens, - tok/s, τ=-, target calls/token=-]\n"
    print_generation(types.SimpleNamespace(text="", token_ids=[], finish_reason="eos", metrics=Metrics()), as_json=True)
    obj = json.loads(capsys.readouterr().out)  # strict JSON: NaN ("does not apply") is null
    assert obj["metrics"]["mean_acceptance_length"] is None


def test_target_only_run_prints_a_dash_for_tau(family, tmp_path):
    f = family("gpt2")
    p = write_policy(tmp_path / "t.yaml", **policy_dict(f["target"], mode="target", max_new_tokens=4, ignore_eos=True))
    out = cascade("run", p, "--prompt", "x = 1", "--no-store")
    assert out.returncode == 0, out.stderr
    assert "τ=-" in out.stderr and "nan" not in out.stderr


# ---------------------------------------------------------------------- closed pipes


@pytest.fixture
def big_run(tmp_path):
    """A store with one run whose `runs show` is far bigger than a pipe's buffer (thousands of positions)."""
    from test_store_support import make_policy

    from cascade.store import synthetic

    url = f"sqlite:///{tmp_path / 'big.db'}"
    with Store.open(url) as store, store.start_run(make_policy(), {"versions": {}, "git_commit": "x"}) as run:
        run.log_generation("p", synthetic.generation(0, n_steps=4, block_size=4000))
    return url


@pytest.mark.parametrize("extra", [[], pytest.param(["--json"], marks=pytest.mark.slow)])
def test_output_into_a_closed_pipe_ends_quietly(big_run, extra):
    """`cascade runs show 1 | head -1`: no BrokenPipeError traceback, the SIGPIPE status (141)."""
    cmd = [sys.executable, "-m", "cascade.cli", "runs", "show", "1", "--store", big_run, *extra]
    producer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-1"], stdin=producer.stdout, stdout=subprocess.PIPE)
    producer.stdout.close()  # only head reads it now: when head exits, the pipe is closed
    first, _ = head.communicate(timeout=60)
    err = producer.stderr.read().decode()
    producer.stderr.close()
    assert producer.wait(timeout=60) == 141, err
    assert err == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert first.decode().startswith("{" if extra else "run ")
