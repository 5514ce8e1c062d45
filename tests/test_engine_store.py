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
