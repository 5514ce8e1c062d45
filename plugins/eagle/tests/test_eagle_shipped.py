"""The shipped head (models/eagle-target) drafts for the shipped target, exactly, and says what it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascade.decode.engine import Engine
from cascade.policy import load_policy

REPO = Path(__file__).resolve().parents[3]
HEAD = REPO / "models" / "eagle-target"


def test_the_shipped_head_drafts_exactly_for_the_shipped_target():
    if not (HEAD / "config.json").exists():
        pytest.fail(f"{HEAD} is missing: train it with `cascade eagle train --target models/target --out {HEAD}`")
    card = json.loads((HEAD / "card.json").read_text())
    for key in (
        "target",
        "parameters",
        "tokens_seen",
        "steps",
        "training_minutes",
        "heldout_top1_acceptance_by_depth",
        "command",
        "data",
    ):
        assert key in card
    prompts = ["import os\n\n\ndef main(argv):\n    ", "class Stack:\n    def __init__(self):\n        self."]
    policy = load_policy(REPO / "policies" / "eagle-tree.yaml")
    e = Engine.from_policy(policy)
    plain = Engine.from_policy(policy.derive("t", {"mode": "target"}))
    outs = e.generate(prompts, max_new_tokens=24)
    assert [g.token_ids for g in outs] == [g.token_ids for g in plain.generate(prompts, max_new_tokens=24)]
    assert sum(s.accepted for g in outs for s in g.steps) / sum(len(g.steps) for g in outs) > 1.0  # τ > 2
