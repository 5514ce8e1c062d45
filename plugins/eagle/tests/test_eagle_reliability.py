"""The head's confidence against measured acceptance."""

from __future__ import annotations

from eagle_helpers import PROMPTS, eagle


def test_reliability_pairs_confidence_with_acceptance(family, tmp_path):
    from cascade_eagle.reliability import record, report

    e = eagle(family("gpt2"))
    pairs = record(e, PROMPTS[:2], 20)
    assert pairs["node"] and len(pairs["path"]) >= len(pairs["node"])
    assert all(0 <= p <= 1 for p, _ in pairs["path"]) and any(a for _, a in pairs["node"])
    result = report(pairs, tmp_path, "test")
    assert sum(r["count"] for r in result["node"]["bins"]) == len(pairs["node"])
    assert (tmp_path / "reliability.png").stat().st_size > 0
