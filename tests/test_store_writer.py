"""The batched writer, run statuses, totals that add up, queries and the `db` / `runs` commands."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time

import pytest
from sqlalchemy import event, text, update
from test_store_support import count_rows, make_policy

from cascade.errors import CascadeError
from cascade.metrics import QUALITY, Metrics, Quality
from cascade.store import Store, cli, migrate, queries, synthetic
from cascade.store.models import Run, Sequence

pytest_plugins = ["test_store_support"]  # the store_url fixture


def _log_streaming(run, prompt: str, gen) -> int:
    """As `cascade run` does: the sequence row first, steps through on_step, then the outcome."""
    seq = run.start_sequence(prompt, gen.prompt_tokens)
    on_step = run.step_logger(seq)
    for step in gen.steps:
        on_step(step)
    run.end_sequence(seq, gen)
    return seq


def test_steps_and_decisions_add_up_to_sequence_and_run_totals(store_url):
    gens = [synthetic.generation(seed, n_steps=6 + seed) for seed in range(4)]
    with Store.open(store_url) as store:
        with store.start_run(make_policy(), {"device": "cpu", "dtype": "float32"}, flush_rows=7) as run:
            for i, gen in enumerate(gens[:3]):
                _log_streaming(run, f"prompt {i}", gen)
            run.log_generation("prompt 3", gens[3])
        assert queries.check_totals(store, run.run_id) == []
        shown = queries.show_run(store, run.run_id)
        total = Metrics.total([g.metrics for g in gens])
        for name in (
            "num_drafts",
            "num_draft_tokens",
            "num_accepted_tokens",
            "num_deferred",
            "num_generated_tokens",
            "target_calls",
            "drafter_calls",
        ):
            assert shown["totals"][name] == getattr(total, name), name
        assert shown["totals"]["accepted_per_position"] == total.accepted_per_position
        assert shown["deferral_rate"] == pytest.approx(total.deferral_rate)
        assert shown["totals"]["mean_acceptance_length"] == pytest.approx(total.mean_acceptance_length)
        assert [p["accepted"] for p in shown["per_position"]][
            : len(total.accepted_per_position)
        ] == total.accepted_per_position
        n_steps = sum(len(g.steps) for g in gens)
        n_decisions = sum(len(s.decisions) for g in gens for s in g.steps)
        assert shown["rows"] == {"sequences": 4, "finished_sequences": 4, "steps": n_steps}
        assert count_rows(store_url, "decisions") == n_decisions
        assert shown["run"]["status"] == "done" and shown["run"]["num_sequences"] == 4

        # the check is live: one step row that disagrees with its sequence is reported
        seq_id = queries.list_sequences(store, run.run_id)[0]["id"]
        with store.engine.begin() as conn:
            conn.execute(
                text('UPDATE steps SET accepted = accepted + 1 WHERE sequence_id = :s AND "index" = 0'), {"s": seq_id}
            )
        problems = queries.check_totals(store, run.run_id)
        assert len(problems) == 1 and f"sequence {seq_id} (steps): num_accepted_tokens" in problems[0]


def test_runs_without_decision_rows_still_add_up(store_url):
    with Store.open(store_url) as store:
        with store.start_run(make_policy()) as run:
            run.log_generation("p", synthetic.generation(1, record_decisions=False))
        assert queries.check_totals(store, run.run_id) == []
        assert count_rows(store_url, "decisions") == 0


def test_rows_are_written_in_batches_not_one_commit_per_row(store_url):
    gen = synthetic.generation(3, n_steps=200)
    n_rows = len(gen.steps) + sum(len(s.decisions) for s in gen.steps)
    with Store.open(store_url) as store:
        commits, executemany = [], []
        event.listen(store.engine, "commit", lambda conn: commits.append(1))
        event.listen(
            store.engine, "before_cursor_execute", lambda conn, cur, stmt, params, ctx, many: executemany.append(many)
        )
        with store.start_run(make_policy(), flush_rows=500, flush_seconds=1e9) as run:
            run.log_generation("p", gen)
        # start_run, start_sequence, ~n_rows/500 flushes, end_sequence, finish
        assert n_rows > 800 and len(commits) <= 4 + n_rows // 500 + 1
        assert any(executemany)
    assert count_rows(store_url, "steps") == len(gen.steps)


def test_old_enough_rows_are_flushed_without_waiting_for_the_sequence(store_url):
    gen = synthetic.generation(5, n_steps=4)
    with Store.open(store_url) as store, store.start_run(make_policy(), flush_seconds=0.05) as run:
        seq = run.start_sequence("p", 5)
        run.log_step(seq, gen.steps[0])
        assert count_rows(store_url, "steps") == 0  # buffered
        time.sleep(0.1)
        run.log_step(seq, gen.steps[1])
        assert count_rows(store_url, "steps") == 2  # the second step found the buffer old: both written
        run.end_sequence(seq, gen)


@pytest.mark.parametrize("exc, status", [(KeyboardInterrupt, "interrupted"), (RuntimeError, "failed")])
def test_leaving_a_run_by_an_exception_flushes_and_marks_it(store_url, exc, status):
    gen = synthetic.generation(2, n_steps=10)
    with Store.open(store_url) as store:
        with pytest.raises(exc), store.start_run(make_policy(), flush_rows=10**6, flush_seconds=1e9) as run:
            seq = run.start_sequence("p", 5)
            for step in gen.steps:
                run.log_step(seq, step)
            raise exc("stop here")
        shown = queries.show_run(store, run.run_id)
    assert shown["run"]["status"] == status
    assert shown["run"]["error"] == f"{exc.__name__}: stop here"
    assert shown["run"]["finished_at"] is not None
    assert shown["rows"] == {"sequences": 1, "finished_sequences": 0, "steps": 10}


def test_a_finished_run_takes_no_more_rows(store_url):
    with Store.open(store_url) as store:
        run = store.start_run(make_policy())
        run.finish("done")
        run.finish("failed")  # a second finish is a no-op
        with pytest.raises(CascadeError, match="already finished"):
            run.start_sequence("p", 1)
        assert queries.show_run(store, run.run_id)["run"]["status"] == "done"


def test_runs_of_dead_writers_are_marked_interrupted_on_open(store_url):
    gone = subprocess.Popen(["true"])
    gone.wait()
    with Store.open(store_url) as store:
        dead = store.start_run(make_policy("dead"))
        alive = store.start_run(make_policy("alive"))  # this process: still running
        elsewhere = store.start_run(make_policy("elsewhere"))  # another host: cannot tell, left alone
        with store.engine.begin() as conn:
            conn.execute(update(Run).where(Run.id == dead.run_id).values(pid=gone.pid, pid_started=None))
            conn.execute(update(Run).where(Run.id == elsewhere.run_id).values(hostname="some-other-host"))
    with Store.open(store_url) as store:
        status = {r["policy_name"]: r["status"] for r in queries.list_runs(store)}
        assert status == {"dead": "interrupted", "alive": "running", "elsewhere": "running"}
        assert "ended without finishing" in queries.show_run(store, dead.run_id)["run"]["error"]
        alive.finish("done")


def test_quality_fields_are_filled_later(store_url):
    with Store.open(store_url) as store:
        with store.start_run(make_policy()) as run:
            seq = run.log_generation("p", synthetic.generation(4), reference="expected")
        store.set_quality(seq, Quality(chrf=51.5, target_logprob=-1.25))
        (row,) = queries.list_sequences(store, run.run_id)
        assert (row["reference"], row["chrf"], row["target_logprob"]) == ("expected", 51.5, -1.25)
        assert row["output_text"] == synthetic.generation(4).text
        assert all(row[name] is None for name in QUALITY[2:]) and row["seed"] is None

        # every field by its QUALITY name; None leaves a column as it is, NaN is stored as NULL
        store.set_quality(
            seq,
            Quality(
                exact_match=1.0,
                edit_similarity=87.5,
                edit_similarity_lines=60.0,
                parses=True,
                distinct_2=0.75,
                repeat_4=math.nan,
            ),
            reference="new ref",
        )
        (row,) = queries.list_sequences(store, run.run_id)
    assert {name: row[name] for name in QUALITY} == {
        "chrf": 51.5,
        "target_logprob": -1.25,
        "exact_match": 1.0,
        "edit_similarity": 87.5,
        "edit_similarity_lines": 60.0,
        "parses": 1.0,
        "distinct_2": 0.75,
        "repeat_4": None,
    }
    assert row["reference"] == "new ref"


def test_sequences_keep_the_seed_they_were_decoded_with(store_url):
    with Store.open(store_url) as store:
        with store.start_run(make_policy()) as run:
            for seed in (0, 1, 2**31 - 1):
                seq = run.start_sequence("same prompt", 5, reference="r", seed=seed)
                run.end_sequence(seq, synthetic.generation(seed % 7))
            run.start_sequence("no seed", 5)  # backward compatible: positional prompt tokens, no seed
            run.log_generation("logged", synthetic.generation(1))
            with pytest.raises(ValueError, match="32-bit"):
                run.start_sequence("too big", seed=2**32)
        rows = queries.list_sequences(store, run.run_id)
    assert [(r["prompt_text"], r["seed"]) for r in rows] == [
        ("same prompt", 0),
        ("same prompt", 1),
        ("same prompt", 2**31 - 1),
        ("no seed", None),
        ("logged", None),
    ]
    assert rows[0]["reference"] == "r" and rows[3]["num_prompt_tokens"] == 5


def test_quality_summary_averages_finished_sequences_per_run(store_url):
    with Store.open(store_url) as store:
        with store.start_run(make_policy("a")) as a:
            seqs = [
                a.log_generation(f"p{i}", synthetic.generation(i), reference=f"r{i}" if i < 3 else None)
                for i in range(4)
            ]
            a.start_sequence("unfinished", seed=9)  # not finished: left out
        for i, (seq, chrf, em, rep) in enumerate(
            zip(seqs, (40.0, 50.0, 90.0, None), (1.0, 0.0, 1.0, None), (0.1, math.nan, 0.3, 0.5))
        ):
            store.set_quality(seq, Quality(chrf=chrf, exact_match=em, repeat_4=rep, target_logprob=-1.0 - i))
        with store.engine.begin() as conn:  # two seeds among a's finished sequences
            conn.execute(update(Sequence).where(Sequence.id.in_(seqs[:2])).values(seed=3))
            conn.execute(update(Sequence).where(Sequence.id == seqs[2]).values(seed=4))
        with store.start_run(make_policy("b")) as b:  # a run with no finished sequence
            b.start_sequence("p", seed=1)
        with store.start_run(make_policy("c")) as c:
            c.log_generation("p", synthetic.generation(5), reference="r")

        summary = queries.quality_summary(store, [b.run_id, a.run_id, c.run_id])
        assert [s["run_id"] for s in summary] == [b.run_id, a.run_id, c.run_id]  # the order asked for
        sb, sa, sc = summary
        assert list(sa) == ["run_id", "sequences", "with_reference", "seeds", *QUALITY]
        assert (sa["sequences"], sa["with_reference"], sa["seeds"]) == (4, 3, 2)
        assert sa["chrf"] == pytest.approx(60.0)  # NULL ignored
        assert sa["exact_match"] == pytest.approx(2 / 3)
        assert sa["repeat_4"] == pytest.approx(0.3)  # NaN stored as NULL: (0.1 + 0.3 + 0.5) / 3
        assert sa["target_logprob"] == pytest.approx(-2.5)
        assert all(sa[name] is None for name in ("edit_similarity", "edit_similarity_lines", "parses", "distinct_2"))
        assert (sb["sequences"], sb["with_reference"], sb["seeds"]) == (0, 0, 0)
        assert all(sb[name] is None for name in QUALITY)
        assert (sc["sequences"], sc["with_reference"]) == (1, 1) and all(sc[name] is None for name in QUALITY)
        assert json.loads(json.dumps(summary)) == summary  # plain values
        assert queries.quality_summary(store, []) == []
        with pytest.raises(CascadeError, match="no run 12345"):
            queries.quality_summary(store, [a.run_id, 12345])
        shown = queries.show_run(store, a.run_id)["quality"]  # `cascade runs show` carries the same numbers
        assert shown == {k: v for k, v in sa.items() if k != "run_id"}


def test_showing_an_unknown_run_says_how_to_find_one(store_url):
    with Store.open(store_url) as store, pytest.raises(CascadeError, match="cascade runs list"):
        queries.show_run(store, 12345)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="cascade")
    cli.add_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_db_and_runs_commands(store_url, capsys):
    assert _cli("db", "upgrade", "--store", store_url) == 0
    assert f"upgraded (empty) -> {migrate.head()}" in capsys.readouterr().out
    assert _cli("db", "current", "--store", store_url, "--json") == 0
    assert json.loads(capsys.readouterr().out)["up_to_date"] is True
    assert _cli("db", "history") == 0
    assert "0001" in capsys.readouterr().out
    with Store.open(store_url) as store, store.start_run(make_policy("cli-run")) as run:
        run.log_generation("p", synthetic.generation(9))
    assert _cli("runs", "list", "--store", store_url) == 0
    out = capsys.readouterr().out
    assert "cli-run" in out and "done" in out and "accept" in out
    assert _cli("runs", "list", "--store", store_url, "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == run.run_id
    assert _cli("runs", "show", str(run.run_id), "--store", store_url) == 0
    out = capsys.readouterr().out
    assert "deferral rate" in out and "position" in out
    assert _cli("runs", "show", str(run.run_id), "--store", store_url, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"]["policy_name"] == "cli-run" and shown["per_position"]


def test_runs_commands_default_to_the_environment_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CASCADE_STORE", raising=False)
    with pytest.raises(CascadeError, match="no store at"):
        _cli("runs", "list")
    monkeypatch.setenv("CASCADE_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    with Store.open(f"sqlite:///{tmp_path / 'env.db'}") as store, store.start_run(make_policy("from-env")):
        pass
    assert _cli("runs", "list") == 0
    assert "from-env" in capsys.readouterr().out


def test_annotate_run_sets_one_info_key_and_refuses_a_missing_run(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'a.db'}") as store:
        with store.start_run(make_policy(), {"source": "cascade bench"}) as run:
            pass
        store.annotate_run(run.run_id, "bench", {"speedup": 1.5})
        store.annotate_run(run.run_id, "bench", {"speedup": 1.25})  # a second write replaces the key
        info = queries.show_run(store, run.run_id)["run"]["info"]
        assert info["source"] == "cascade bench" and info["bench"] == {"speedup": 1.25}
        with pytest.raises(CascadeError, match="no run 999"):
            store.annotate_run(999, "bench", {})
