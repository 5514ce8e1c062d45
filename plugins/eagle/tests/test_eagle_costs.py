"""The cost model's ceiling with the head's measured pass."""

from __future__ import annotations

import pytest
from eagle_helpers import PROMPT, eagle


@pytest.mark.slow
def test_the_costs_ceiling_charges_the_head_its_measured_pass(family):
    from cascade_eagle.costs import ceilings, pass_seconds

    e = eagle(family("llama"))
    assert pass_seconds(e, PROMPT, 3, trials=3) > 0
    cm = {
        "overhead": 0.2,
        "target_calls_per_token": 0.5,
        "drafter_calls_per_token": 2.0,
        "v_block": 1.5,
        "speedup_ceiling": 1.2 / (0.5 * 1.7),
    }
    bench = {
        "rows": [
            {
                "name": "e",
                "mean_acceptance_length": 2.0,
                "speedup": 1.1,
                "speedup_min": 1.0,
                "speedup_max": 1.2,
                "cost_model": cm,
            },
            {"name": "other", "cost_model": cm},
        ]
    }
    (row,) = ceilings(bench, {"e": 0.1})
    assert row["ceiling"] == round(1.2 / (0.5 * 1.7 + 2.0 * 0.1), 3) < row["ceiling_free_drafts"]
