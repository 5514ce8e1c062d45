"""Per-sequence alarms: near-zero acceptance (garbled: drafter and target disagree on everything) and
near-total acceptance with repeated n-grams (a loop both models agree on)."""

from __future__ import annotations

import math
from typing import Any

GARBLED_BELOW = 0.05  # acceptance rate under this, over at least MIN_DRAFTS drafted tokens
LOOP_ABOVE = 0.95  # acceptance rate over this ...
LOOP_REPEAT = 0.5  # ... and at least this share of token 4-grams repeating an earlier one
MIN_DRAFTS = 8


def repeated_ngram_rate(text: str, n: int = 4) -> float:
    """Share of whitespace-token n-grams that repeat an earlier n-gram of the same text (0 when too short)."""
    toks = text.split()
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def alarm(row: dict[str, Any]) -> str:
    """"garbled", "loop" or "" for one sequence (a `list_sequences` row)."""
    drafted = row.get("num_draft_tokens") or 0
    rate = _num(row.get("acceptance_rate"))
    if rate is None or drafted < MIN_DRAFTS:
        return ""
    if rate < GARBLED_BELOW:
        return "garbled"
    repeat = _num(row.get("repeat_4"))
    if repeat is None:
        repeat = repeated_ngram_rate(row.get("output_text") or "")
    if rate > LOOP_ABOVE and repeat >= LOOP_REPEAT:
        return "loop"
    return ""
