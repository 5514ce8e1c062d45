"""The pages' pure helpers: alarms, KPI deltas, token spans, trade-off points, derived policies."""

from __future__ import annotations

import yaml

from cascade_dashboard import alarms, jobs, kpis, tokens, tradeoff


def test_alarms_flag_garbled_and_loops_only():
    assert alarms.alarm({"num_draft_tokens": 40, "acceptance_rate": 0.01}) == "garbled"
    loop = "x = 1\n" * 20
    assert (
        alarms.alarm({"num_draft_tokens": 40, "acceptance_rate": 0.99, "repeat_4": None, "output_text": loop}) == "loop"
    )
    assert alarms.alarm({"num_draft_tokens": 40, "acceptance_rate": 0.99, "repeat_4": 0.1}) == ""
    assert alarms.alarm({"num_draft_tokens": 3, "acceptance_rate": 0.0}) == ""  # too few drafts to judge
    assert alarms.repeated_ngram_rate("a b c d a b c d") == 0.2


def test_kpi_deltas_against_a_baseline():
    run = {"totals": {"tokens_per_second": 30.0, "target_calls_per_token": 0.5}, "quality": {"chrf": 50.0}}
    base = {"totals": {"tokens_per_second": 10.0, "target_calls_per_token": 1.0}, "quality": {"chrf": 55.0}}
    cards = {c["key"]: c for c in kpis.cards(run, base)}
    assert cards["throughput"]["delta"] == "+20.0 (3.00x)"  # runs without wall-clock time: the per-row figures
    assert cards["target_calls_per_token"]["delta"] == "-0.500"
    assert cards["target_calls_per_token"]["delta_color"] == "inverse"
    assert cards["chrf"]["delta"] == "-5.0" and cards["mean_acceptance_length"]["value"] == "–"
    run["totals"]["wall_tokens_per_second"] = 90.0  # a batched run: its throughput, against the baseline's
    base["totals"]["wall_tokens_per_second"] = 10.0
    assert kpis.cards(run, base)[0]["delta"] == "+80.0 (9.00x)"
    del base["totals"]["wall_tokens_per_second"]  # one side without: both per-row, never mixed
    assert kpis.cards(run, base)[0]["delta"] == "+20.0 (3.00x)"


def test_spans_escape_text_mark_blocks_and_hide_rejected_drafts():
    rows = [
        {
            "step": 0,
            "position": 0,
            "kind": "draft",
            "drafted_token": 1,
            "emitted_token": 1,
            "accepted": True,
            "deferred": False,
            "q_x": 0.5,
            "rule": "chow",
            "alpha": 0.3,
        },
        {
            "step": 0,
            "position": 1,
            "kind": "draft",
            "drafted_token": 2,
            "emitted_token": None,
            "accepted": False,
            "deferred": True,
            "rule": "chow",
            "alpha": 0.3,
        },
        {"step": 0, "position": 1, "kind": "correction", "drafted_token": None, "emitted_token": 3},
        {"step": 1, "position": 0, "kind": "bonus", "drafted_token": None, "emitted_token": 4},
    ]
    texts = {1: "<a>", 2: "b", 3: "c", 4: "d"}
    body = tokens.spans_html(rows, texts)
    assert "&lt;a&gt;" in body and "<a>" not in body
    assert body.count('class="tok ') == 3 and "tok-rejected" not in body
    assert body.count("border-left") == 1  # one block boundary
    assert "tok-rejected" in tokens.spans_html(rows, texts, show_rejected=True)
    assert [r["how"] for r in tokens.table_rows(rows, texts)] == [
        tokens.HOW[k][0] for k in ("kept", "rejected", "correction", "bonus")
    ]


def test_tradeoff_points_frontier_and_within_1pct():
    runs = [
        {
            "id": 1,
            "mode": "target",
            "rule": "none",
            "policy_name": "t",
            "alpha": 0,
            "baseline_run_id": 1,
            "edit_similarity": 50.0,
            "parses": 1.0,
            "speedup": 1.0,
            "target_calls_per_token": 1.0,
        },
        {
            "id": 2,
            "mode": "speculative",
            "rule": "chow",
            "policy_name": "a",
            "alpha": 0.1,
            "baseline_run_id": 1,
            "edit_similarity": 49.8,
            "parses": 1.0,
            "speedup": 2.0,
            "target_calls_per_token": 0.5,
        },
        {
            "id": 3,
            "mode": "speculative",
            "rule": "chow",
            "policy_name": "b",
            "alpha": 0.9,
            "baseline_run_id": 1,
            "edit_similarity": 49.7,
            "parses": 0.5,
            "speedup": 1.5,
            "target_calls_per_token": 0.6,
        },
        {
            "id": 4,
            "mode": "speculative",
            "rule": "chow",
            "policy_name": "c",
            "alpha": 0.9,
            "baseline_run_id": None,
            "edit_similarity": 49.9,
            "parses": 1.0,
            "speedup": None,
            "target_calls_per_token": 0.6,
        },
    ]
    pts = {p["run_id"]: p for p in tradeoff.points(runs)}
    assert set(pts) == {1, 2, 3}  # run 4 has no baseline
    assert pts[2]["within_1pct"] and not pts[3]["within_1pct"]  # run 3 fails the parse-rate guard
    assert pts[2]["pareto_speedup"] and pts[1]["pareto_speedup"] and not pts[3]["pareto_speedup"]
    assert tradeoff.pareto_front([1, 2, None], [3, 1, 5]) == [0, 1]


def test_derived_policy_replaces_the_rule_and_keeps_the_rest():
    logged = yaml.safe_dump(
        {
            "name": "p",
            "description": "d",
            "target": {"model": "m"},
            "mode": "speculative",
            "drafter": {"plugin": "hf-model", "options": {"model": "s"}},
            "rule": {"name": "opt", "alpha": 1.0},
            "decoding": {"schedule": {"name": "constant", "options": {"block_size": 3}}},
            "store": {"enabled": False},
        }
    )
    pol = jobs.derived_policy(logged, "chow", 0.25)
    assert (pol.name, pol.rule.name, pol.rule.alpha) == ("p-chow-a0.25", "chow", 0.25)
    assert (
        pol.decoding.schedule.options == {"block_size": 3}
        and pol.store.enabled
        and pol.drafter.options == {"model": "s"}
    )
    assert yaml.safe_load(jobs.policy_yaml(pol))["rule"] == {"name": "chow", "alpha": 0.25, "options": {}}
