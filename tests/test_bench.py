"""`cascade bench`: rows side by side, speed-up against target-only in the same run, peers, store, table, JSON."""

import json
import math

import pytest

from cascade.bench import defaults, quality, report
from cascade.bench import run as bench
from cascade.cli import main as cascade_main
from cascade.policy import load_policy
from cascade.store import Store, queries
from cascade.testing import policy_dict, write_policy

PROMPTS = [
    {"prompt": "def add(a, b):\n", "reference": "    return a + b\n"},
    {
        "prompt": "class Point:\n    def __init__(self, x, y):\n",
        "reference": "        self.x = x\n        self.y = y\n",
    },
]


@pytest.fixture(scope="module")
def policies(family, tmp_path_factory):
    f = family("gpt2")
    d = tmp_path_factory.mktemp("bench")
    common = dict(ignore_eos=True, max_new_tokens=10)
    lossless = policy_dict(f["target"], f["near"], **common)
    lossless["name"] = "lossless"
    v3 = policy_dict(f["target"], f["near"], rule="token_v3", alpha=0.3, **common)
    v3["name"] = "v3"
    ngram = policy_dict(f["target"], plugin="ngram", **common)
    ngram["name"] = "ngram"
    return [write_policy(d / f"{p['name']}.yaml", **p) for p in (lossless, v3, ngram)]


@pytest.fixture(scope="module")
def result(policies, tmp_path_factory):
    db = tmp_path_factory.mktemp("benchdb") / "b.db"
    store = Store.open(f"sqlite:///{db}")
    res = bench.run_bench(
        [load_policy(p) for p in policies], PROMPTS, repeats=2, warmup=1, peers=("hf",), store=store, progress=False
    )
    yield res, store
    store.close()


def test_rows_target_only_added_first_and_models_loaded_once(result):
    res, _ = result
    assert [r.name for r in res.rows] == [
        "target-only",
        "lossless",
        "v3",
        "ngram",
        "hf-assisted",
        "hf-assisted-default",
        "hf-prompt-lookup",
    ]
    assert [r.kind for r in res.rows] == ["baseline", "policy", "policy", "policy", "peer", "peer", "peer"]
    assert res.meta["model_loads"] == 2  # target and drafter, shared by every row
    assert all(r.num_generated_tokens == 10 * len(PROMPTS) for r in res.rows)
    assert all(len(r.tokens_per_second_passes) == 2 for r in res.rows)


def test_speedup_is_relative_to_target_only_in_the_same_run(result):
    res, _ = result
    base = res.row("target-only")
    assert base.speedup == pytest.approx(1.0)
    for r in res.rows:
        assert r.baseline == "target-only"
        assert r.speedup == pytest.approx(r.tokens_per_second / base.tokens_per_second)
        assert r.tokens_per_second_min <= r.tokens_per_second <= r.tokens_per_second_max
        assert r.speedup_min <= r.speedup_max


def test_lossless_rows_and_peers_produce_identical_greedy_tokens(result):
    res, _ = result
    for name in ("lossless", "ngram"):
        row = res.row(name)
        assert row.lossless_greedy
        assert row.identical == {
            "target-only": True,
            "hf-assisted": True,
            "hf-assisted-default": True,
            "hf-prompt-lookup": True,
        }
    assert res.row("target-only").identical == {
        "hf-assisted": True,
        "hf-assisted-default": True,
        "hf-prompt-lookup": True,
    }
    for peer in ("hf-assisted", "hf-assisted-default", "hf-prompt-lookup"):
        assert res.row(peer).identical == {"target-only": True}
    default = res.row("hf-assisted-default")
    assert default.block_size == 20  # transformers' own defaults, not the policy's block
    assert res.row("v3").identical == {} and not res.row("v3").lossless_greedy
    assert res.outputs["hf-assisted"] == res.outputs["target-only"]


def test_metrics_and_quality_columns(result):
    res, _ = result
    base, lossless, v3, ngram = (res.row(n) for n in ("target-only", "lossless", "v3", "ngram"))
    assert base.target_calls_per_token == pytest.approx(1.0) and base.drafter_calls_per_token == 0
    assert 1 <= lossless.mean_acceptance_length <= 5 and 0 <= lossless.acceptance_rate <= 1
    assert lossless.target_calls_per_token < 1 and lossless.deferral_rate == pytest.approx(1.0)
    assert v3.deferral_rate < 1
    # identical tokens: identical quality
    assert lossless.chrf == pytest.approx(base.chrf) and lossless.chrf_rel == pytest.approx(1.0)
    assert lossless.target_logprob_delta == pytest.approx(0.0, abs=1e-6)
    assert base.chrf_rel == pytest.approx(1.0)
    assert v3.target_logprob < 0
    assert v3.target_logprob_delta == pytest.approx(v3.target_logprob - base.target_logprob)
    assert v3.chrf_rel == pytest.approx(v3.chrf / base.chrf)
    assert res.row("hf-assisted").mean_acceptance_length >= 1
    assert math.isnan(res.row("hf-prompt-lookup").drafter_calls_per_token)
    assert lossless.cost_model["c"] > 0 and ngram.cost_model["c"] == 0
    assert lossless.cost_model["speedup_ceiling"] > 0 and base.cost_model is None


def test_ceiling_comes_from_the_rows_own_counters(result):
    from cascade.runtime.costmodel import speedup_ceiling, verify_cost

    res, _ = result
    base = res.row("target-only")
    for name in ("lossless", "v3", "ngram"):
        row = res.row(name)
        cm = row.cost_model
        gamma = row.block_size
        assert len(cm["verify_costs"]) == gamma + 1 and cm["verify_costs"][0] == 1.0
        # the mean verified block: drafts per step + 1, from τ and the acceptance rate
        drafted_per_step = (row.mean_acceptance_length - 1) / row.acceptance_rate if row.acceptance_rate else None
        if drafted_per_step is not None:
            assert cm["mean_block_tokens"] == pytest.approx(1 + drafted_per_step)
        assert 1 <= cm["mean_block_tokens"] <= gamma + 1
        omega = max(1 / base.tokens_per_second / cm["target_step_seconds"] - 1, 0)
        assert cm["overhead"] == pytest.approx(omega)
        expected = speedup_ceiling(
            target_calls_per_token=row.target_calls_per_token,
            drafter_calls_per_token=row.drafter_calls_per_token,
            c=cm["c"],
            v=verify_cost(cm["verify_costs"], cm["mean_block_tokens"]),
            overhead=omega,
        )
        assert cm["speedup_ceiling"] == pytest.approx(expected)
        # in speculative mode: τ·(1 + ω) / (v(n̄) + ω + d·c), d = drafter calls per step
        d = row.drafter_calls_per_token * row.mean_acceptance_length
        assert cm["speedup_ceiling"] == pytest.approx(
            row.mean_acceptance_length * (1 + omega) / (cm["v_block"] + omega + d * cm["c"])
        )
    # the cascade asks the drafter for q_{k+1} too: more drafter calls per step than drafted tokens
    v3 = res.row("v3")
    assert v3.drafter_calls_per_token * v3.mean_acceptance_length > v3.cost_model["mean_block_tokens"] - 1


def test_target_logprob_is_the_token_weighted_mean_over_prompts(result, policies):
    res, _ = result
    from cascade.bench.run import ModelCache, build_engine

    engine = build_engine(load_policy(policies[0]), ModelCache())
    total, n = 0.0, 0
    for row, ids in zip(PROMPTS, res.outputs["v3"]):
        lp = quality.token_logprobs(engine.target_model, engine.encode(row["prompt"]).tolist(), ids)
        total, n = total + float(lp.sum()), n + lp.numel()
    assert res.row("v3").target_logprob == pytest.approx(total / n, abs=1e-5)


def test_every_policy_row_is_in_the_store_with_quality(result):
    res, store = result
    for r in res.rows:
        if r.kind == "peer":
            assert r.run_id is None
            continue
        run = queries.show_run(store, r.run_id)["run"]
        assert run["status"] == "done" and run["policy_name"] == r.name
        assert queries.check_totals(store, r.run_id) == []
        seqs = queries.list_sequences(store, r.run_id)
        assert len(seqs) == len(PROMPTS)
        for s, p in zip(seqs, PROMPTS):
            assert s["chrf"] is not None and s["target_logprob"] is not None and s["reference"] == p["reference"]


def test_table_and_json_shape(result, tmp_path):
    res, _ = result
    text = report.format_result(res)
    for col in (
        "tok/s",
        "speed-up",
        "τ",
        "accept",
        "defer",
        "target/tok",
        "drafter/tok",
        "TTFT",
        "chrF",
        "logp",
        "identical",
    ):
        assert col in text
    for r in res.rows:
        assert r.name in text
    out = tmp_path / "b.json"
    report.write_json(res, out)

    def no_nan(x):
        raise AssertionError(f"non-JSON constant {x}")

    data = json.loads(out.read_text(), parse_constant=no_nan)
    assert set(data) == {"meta", "rows"} and len(data["rows"]) == 7
    assert {"machine", "n_prompts", "repeats", "warmup"} <= set(data["meta"])
    row = data["rows"][1]
    for key in (
        "tokens_per_second",
        "tokens_per_second_min",
        "tokens_per_second_max",
        "tokens_per_second_q1",
        "tokens_per_second_q3",
        "speedup",
        "mean_acceptance_length",
        "acceptance_rate",
        "deferral_rate",
        "target_calls_per_token",
        "drafter_calls_per_token",
        "ttft_seconds",
        "chrf",
        "chrf_rel",
        "target_logprob",
        "target_logprob_delta",
        "identical",
        "run_id",
    ):
        assert key in row, key


def test_cli_bench_end_to_end(policies, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    out = tmp_path / "out.json"
    rc = cascade_main(
        [
            "bench",
            str(policies[0]),
            "--prompts",
            str(prompts),
            "--limit",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--max-new-tokens",
            "4",
            "--no-store",
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "target-only *" in printed and "lossless" in printed
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["rows"]] == ["target-only", "lossless"]
    assert data["meta"]["n_prompts"] == 1 and data["rows"][1]["num_generated_tokens"] == 4


def test_cli_bench_refuses_bad_input(policies, tmp_path, capsys):
    assert cascade_main(["bench", str(policies[0]), "--prompts", str(tmp_path / "missing.jsonl"), "--no-store"]) == 2
    assert "prompts file not found" in capsys.readouterr().err
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps(PROMPTS[0]) + "\n")
    assert (
        cascade_main(
            ["bench", str(policies[0]), "--prompts", str(prompts), "--repeats", "0", "--no-store", "--no-progress"]
        )
        == 2
    )
    assert "--repeats" in capsys.readouterr().err


def test_default_set_is_the_shipped_policies():
    paths = defaults.default_policies()
    assert [p.stem for p in paths] == list(defaults.DEFAULT_POLICIES)
    modes = [load_policy(p).mode for p in paths]
    assert modes[0] == "target" and "sequential" in modes and "lossy" in modes
    assert defaults.shipped(defaults.DEFAULT_PROMPTS).is_file()


def test_store_cost_measures_both_sides(family, tmp_path):
    from cascade.bench.store_cost import measure
    from cascade.decode.engine import Engine
    from cascade.policy import parse_policy
    from cascade.store import Store
    from cascade.testing import policy_dict

    f = family("gpt2")
    engine = Engine.from_policy(parse_policy(policy_dict(f["target"], f["near"], max_new_tokens=8, ignore_eos=True)))
    with Store.open(f"sqlite:///{tmp_path / 'c.db'}") as store:
        cost = measure(engine, store, ["def f(x):", "class A:"], passes=2)
        from cascade.store import queries

        runs = queries.list_runs(store)
    assert cost.seconds_with > 0 and cost.seconds_without > 0 and cost.tokens_per_pass == 16
    assert len(runs) == 3  # warm-up + 2 logged passes, each a run
    assert "logging cost" in cost.summary()


def test_quality_per_prompt_with_intervals_and_paired_differences(result):
    from cascade.bench import completion
    from cascade.metrics import QUALITY

    res, _ = result
    base, lossless, v3 = res.row("target-only"), res.row("lossless"), res.row("v3")
    for row in (base, lossless, v3):
        assert set(row.quality) == set(QUALITY) and row.seeds == 1
        es = row.quality["edit_similarity"]
        assert es["n"] == len(PROMPTS) and es["low"] <= es["mean"] <= es["high"]
        # the mean is the mean over prompts of each completion's own score
        texts = res.outputs[row.name]
        assert len(texts) == len(PROMPTS)
    # greedy lossless decoding writes what target-only writes: its paired differences are exactly 0
    for k in ("edit_similarity", "exact_match", "parses", "repeat_4"):
        d = lossless.quality_delta[k]
        assert d["mean"] == pytest.approx(0.0) and d["low"] == pytest.approx(0.0) and d["high"] == pytest.approx(0.0)
    d = v3.quality_delta["edit_similarity"]
    assert d["mean"] == pytest.approx(v3.quality["edit_similarity"]["mean"] - base.quality["edit_similarity"]["mean"])
    assert not base.quality_delta or base.quality_delta["edit_similarity"]["mean"] == pytest.approx(0.0)
    assert completion.METRICS  # the table shows the completion metrics
    assert "edit sim" in report.format_result(res)


def test_the_table_fits_a_terminal_and_names_what_it_left_out(result):
    res, _ = result
    full = report.format_result(res)
    table = full.split("\n\n")[1]
    assert max(map(len, table.splitlines())) > 120  # every column: wider than a terminal
    narrow = report.format_result(res, width=120)
    kept = narrow.split("\n\n")[1].splitlines()
    assert max(map(len, kept)) <= 120
    for col in ("policy", "speed-up", "τ", "edit sim"):
        assert col in kept[0]
    note = next(line for line in narrow.splitlines() if line.startswith("left out to fit 120 columns: "))
    dropped = note.split(": ", 1)[1].split(" (--wide")[0].split(", ")
    assert dropped == list(report.DROP_FIRST[: len(dropped)]) and all(c not in kept[0] for c in dropped)
    assert report.format_result(res, width=10_000) == full  # room for all: nothing dropped


def test_the_dashboard_shows_the_benchs_own_speedup_for_its_runs(result):
    """One estimator: the dashboard's run table gives each logged bench row the bench's speed-up and interval (its
    timed passes), against the bench's own target-only run, whatever else the store holds; and one chrF (the mean of
    the completions' chrF), the same number in both."""
    from cascade.store.queries import dashboard as Q

    res, store = result
    table = {r["id"]: r for r in Q.run_table(store)}
    base = next(r for r in res.rows if r.name == "target-only").run_id
    for row in res.rows:
        if row.run_id is None or row.name == "target-only":
            continue
        shown = table[row.run_id]
        assert shown["speedup_source"] == "bench" and shown["baseline_run_id"] == base
        assert shown["speedup"] == pytest.approx(row.speedup, rel=1e-12)
        assert (shown["speedup_low"], shown["speedup_high"]) == pytest.approx((row.speedup_low, row.speedup_high))
        assert shown["chrf"] == pytest.approx(row.chrf, rel=1e-9) and not math.isnan(row.chrf_corpus)
        written = queries.show_run(store, row.run_id)["run"]["info"]["bench"]
        assert written["chrf_corpus"] == pytest.approx(row.chrf_corpus) and written["timed_passes"] == 2


def test_speedup_interval_brackets_the_paired_ratio(result):
    res, _ = result
    for r in res.rows:
        if r.name == "target-only":
            continue
        assert r.speedup_low <= r.speedup <= r.speedup_high  # one estimator: the figure lies in its interval
        assert 0 < r.speedup_low and r.speedup_high < 100


def test_sampling_evaluation_with_seeds(policies, tmp_path):
    """--temperature 1 --seeds 2: every prompt decoded with seeds 0 and 1, quality averaged per prompt first."""
    out = tmp_path / "b.json"
    rc = cascade_main(
        [
            "bench",
            *map(str, policies[:2]),
            "--prompts",
            str(_prompts_file(tmp_path)),
            "--no-store",
            "--no-progress",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--temperature",
            "1",
            "--seeds",
            "2",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["meta"]["seeds"] == 2
    rows = {r["name"]: r for r in data["rows"]}
    assert all(r["temperature"] == 1.0 and r["seeds"] == 2 for r in rows.values())
    assert rows["v3"]["quality"]["edit_similarity"]["n"] == len(PROMPTS)
    assert rows["v3"]["quality_delta"]["edit_similarity"]["n"] == len(PROMPTS)
    assert not rows["lossless"]["lossless_greedy"]  # sampled: no token-identity claim


def test_peers_refuse_sampling(policies, tmp_path):
    rc = cascade_main(
        [
            "bench",
            str(policies[0]),
            "--prompts",
            str(_prompts_file(tmp_path)),
            "--no-store",
            "--temperature",
            "1",
            "--peers",
            "hf",
        ]
    )
    assert rc == 2


def _prompts_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def test_the_bench_says_which_runs_it_logged(policies, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    args = ["bench", str(policies[0]), "--prompts", str(_prompts_file(tmp_path)), "--store", url, "--no-progress"]
    assert cascade_main([*args, "--repeats", "1", "--warmup", "0"]) == 0
    err = capsys.readouterr().err
    with Store.open(url) as store:
        runs = {r["policy_name"]: r["id"] for r in queries.list_runs(store)}
    assert f"logged 2 runs to {url}: target-only = run {runs['target-only']}, lossless = run {runs['lossless']}" in err
