"""Real engine runs logged to the store: the stored rows add up to the run's totals."""

import pytest

from cascade.decode.engine import Engine
from cascade.policy import parse_policy
from cascade.store import Store, engine_info, queries
from cascade.testing import policy_dict

CASES = [
    dict(mode="speculative", rule="none"),
    dict(mode="speculative", rule="token_v3", alpha=0.4, temperature=1.0),
    dict(mode="speculative", rule="none", plugin="ngram"),
    dict(mode="lossy", rule="none", lenience=0.5, temperature=1.0),
    dict(mode="sequential", rule="chow", alpha=0.8),
    dict(mode="drafter"),
    dict(mode="target"),
    dict(mode="speculative", rule="diff", alpha=0.1, stop=["(", "="]),  # steps cut mid-block
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_stored_rows_add_up_on_real_runs(family, tmp_path, case):
    f = family("gpt2")
    case = dict(case)
    policy = parse_policy(policy_dict(f["target"], f["near"], max_new_tokens=30, ignore_eos=True, **case))
    engine = Engine.from_policy(policy)
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        with store.start_run(policy, engine_info(engine)) as run:
            for prompt in ("def add(a, b):", "class Point:\n    def __init__(self", "x = [i for i in"):
                seq = run.start_sequence(prompt)
                gen = engine.generate(prompt, on_step=run.step_logger(seq))
                run.end_sequence(seq, gen)
        assert queries.check_totals(store, run.run_id) == []
        shown = queries.show_run(store, run.run_id)
        assert shown["run"]["status"] == "done" and shown["rows"]["sequences"] == 3


def test_a_batched_run_logs_its_wall_clock_throughput(family, tmp_path):
    """Four rows decoded together: the run's wall-clock seconds are the batch's (not the sum of its rows'
    overlapping times), so its throughput is about B times the per-row figure; one row at a time, the two agree."""
    import time

    f = family("gpt2")
    policy = parse_policy(policy_dict(f["target"], f["near"], max_new_tokens=24, ignore_eos=True))
    engine = Engine.from_policy(policy)
    prompts = [{"prompt": p} for p in ("def add(a, b):", "class Point:", "x = [i for i in", "import os\n")]
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        with store.start_run(policy, engine_info(engine)) as batched:
            start = time.monotonic()
            texts = [p["prompt"] for p in prompts]
            list(batched.record(prompts, lambda on_step: engine.stream(texts, on_step=on_step, batch_size=4)))
            elapsed = time.monotonic() - start
        with store.start_run(policy, engine_info(engine)) as single:
            list(single.record(prompts, lambda on_step: engine.stream(texts, on_step=on_step, batch_size=1)))
        b, s = (queries.show_run(store, r.run_id)["totals"] for r in (batched, single))
    assert 0 < b["wall_seconds"] <= elapsed
    assert b["wall_seconds"] < 0.5 * b["decode_seconds"]  # four overlapping rows: the sum counts each second ~4x
    assert b["wall_tokens_per_second"] > 2 * b["tokens_per_second"]
    assert queries.throughput(b) == b["wall_tokens_per_second"]
    assert s["wall_seconds"] == pytest.approx(s["decode_seconds"], rel=0.05)  # one row at a time: no overlap
