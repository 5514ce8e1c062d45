"""cascade.schedules.profile: measured cost tables, their cache with provenance, and confidence calibration."""

from __future__ import annotations

import json
import logging
import random

import pytest

from cascade.decode.engine import Engine
from cascade.policy import parse_policy
from cascade.schedules import profile
from cascade.schedules.costs import CostTable, calibrate, fit_temperatures, monotone
from cascade.testing import policy_dict

PROMPT = "def add(a, b):\n    return a + b\n"


def engine(**kw) -> Engine:
    return Engine.from_policy(parse_policy(policy_dict(**kw)))


def test_monotone_is_the_running_maximum():
    assert monotone([1.0, 1.3, 1.2, 1.5, 1.4]) == (1.0, 1.3, 1.3, 1.5, 1.5)


def test_an_adaptive_engine_measures_once_then_reads_the_cache(family, monkeypatch, tmp_path):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    f = family("gpt2")
    kw = dict(target=f["target"], drafter=f["near"], schedule="adaptive", max_block_size=5)
    first = engine(**kw)
    table = first.schedule_settings.costs
    assert table is not None and table.max_k == 5 and len(table.verify_seconds) == 6
    assert list(table.verify_seconds) == sorted(table.verify_seconds) and table.draft_seconds > 0
    (path,) = (tmp_path / "profiles").glob("*.json")
    saved = json.loads(path.read_text())
    ident = saved["provenance"]["identity"]
    assert ident["max_k"] == 5 and ident["drafter"] == "hf-model" and ident["device"] == "cpu"
    assert saved["provenance"]["trials"] == profile.TRIALS and "measured_at" in saved["provenance"]
    # the loop's own time per step: target-only's seconds per token through the engine, less one forward
    per_token = saved["provenance"]["target_only_seconds_per_token"]
    assert table.step_seconds == pytest.approx(max(per_token - table.verify_seconds[0], 0.0))

    def no_timing(*a, **k):
        raise AssertionError("measured again although a table was cached")

    monkeypatch.setattr(profile, "measure", no_timing)
    assert engine(**kw).schedule_settings.costs == table  # read back from disk, not re-timed
    monkeypatch.undo()
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    engine(**dict(kw, max_block_size=3))  # another K: another table
    assert len(list((tmp_path / "profiles").glob("*.json"))) == 2
    engine(**dict(kw, batch_size=4))  # a batch's step (one call for 4 rows): another table
    tables = [json.loads(p.read_text())["provenance"]["identity"] for p in (tmp_path / "profiles").glob("*.json")]
    assert sorted(t["rows"] for t in tables) == [1, 1, 4]


def test_a_model_free_drafter_costs_nothing_to_draft(family, monkeypatch, tmp_path):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    f = family("gpt2")
    e = engine(target=f["target"], plugin="ngram", schedule="adaptive", max_block_size=4)
    assert e.schedule_settings.costs.draft_seconds == 0.0


def test_a_corrupt_cache_file_is_logged_and_measured_again(family, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    f = family("gpt2")
    kw = dict(target=f["target"], drafter=f["near"], schedule="adaptive", max_block_size=2)
    engine(**kw)
    (path,) = (tmp_path / "profiles").glob("*.json")
    path.write_text("{ not json")
    with caplog.at_level(logging.WARNING, logger="cascade.schedules.profile"):
        table = engine(**kw).schedule_settings.costs
    assert "unusable" in caplog.text and table.max_k == 2
    assert json.loads(path.read_text())["verify_seconds"]  # rewritten whole


def test_remeasuring_keeps_the_calibration(family, monkeypatch, tmp_path):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    f = family("gpt2")
    e = engine(target=f["target"], drafter=f["near"], schedule="adaptive", max_block_size=3)
    table, _, _ = profile.cost_table(e, 3)
    profile.with_temperatures(e, table, [2.0, 1.5, 1.0], {"runs": [1]})
    again, _, measured = profile.cost_table(e, 3, remeasure=True)
    assert measured and again.temperatures == (2.0, 1.5, 1.0) and again.provenance["calibration"] == {"runs": [1]}


def test_fit_temperatures_recovers_a_known_miscalibration():
    """Acceptance drawn as σ(logit(c)/2) at position 1 and as c at position 2: T ≈ 2 then ≈ 1."""
    rng = random.Random(0)
    rows = []
    for _ in range(4000):
        c = rng.uniform(0.05, 0.99)
        rows.append((0, c, rng.random() < calibrate(c, 2.0)))
        rows.append((1, c, rng.random() < c))
    rows += [(2, 0.5, True)] * 5  # too few at position 3: left at 1
    temps, report = fit_temperatures(rows, 3)
    assert 1.6 < temps[0] < 2.5 and 0.8 < temps[1] < 1.25 and temps[2] == 1.0
    assert report[0]["logloss_after"] <= report[0]["logloss_before"] and report[2]["n"] == 5


def test_the_cost_table_in_target_steps():
    t = CostTable(0.002, (0.01, 0.012, 0.015))
    rel = t.relative()
    assert rel["c"] == pytest.approx(0.2) and rel["verify_costs"] == pytest.approx([1.0, 1.2, 1.5])


def test_cascade_profile_calibrates_from_logged_runs(family, monkeypatch, tmp_path, capsys):
    """End to end: log a speculative run, then `cascade profile --calibrate` fits and saves temperatures."""
    from cascade.cli import main
    from cascade.testing import write_policy

    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    f = family("gpt2")
    policy = write_policy(
        tmp_path / "p.yaml",
        **policy_dict(target=f["target"], drafter=f["near"], block_size=4, max_new_tokens=40),
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": p}) + "\n"
            for p in ["def f(x):\n", "class A:\n", "import os\n", "for i in range(3):\n"]
        )
    )
    store = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["run", str(policy), "--prompts", str(prompts), "--store", store]) == 0
    capsys.readouterr()
    assert main(["profile", str(policy), "--calibrate", "--store", store, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["temperatures"]) == 4 and out["calibration"][0]["n"] > 0
    assert out["provenance"]["calibration"]["rows"] == sum(r["n"] for r in out["calibration"])
    assert main(["profile", str(policy)]) == 0  # cached now: shown, not measured
    assert "cached" in capsys.readouterr().out
