"""Per-sequence alarms: near-zero acceptance (garbled: drafter and target disagree on everything) and
near-total acceptance with repeated n-grams (a loop both models agree on)."""

from __future__ import annotations

import math
from typing import Any

from cascade.bench.completion import repeated_ngram_rate  # the measure behind the store's repeat_4

GARBLED_BELOW = 0.05  # acceptance rate under this, over at least MIN_DRAFTS drafted tokens
LOOP_ABOVE = 0.95  # acceptance rate over this ...
LOOP_REPEAT = 0.5  # ... and at least this share of code-token 4-grams repeating an earlier one
MIN_DRAFTS = 8


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def alarm(row: dict[str, Any]) -> str:
    """ "garbled", "loop" or "" for one sequence (a `list_sequences` row)."""
    drafted = row.get("num_draft_tokens") or 0
    rate = _num(row.get("acceptance_rate"))
    if rate is None or drafted < MIN_DRAFTS:
        return ""
    if rate < GARBLED_BELOW:
        return "garbled"
    repeat = _num(row.get("repeat_4"))
    if repeat is None:
        repeat = _num(repeated_ngram_rate(row.get("output_text") or "")) or 0.0  # NaN: too short to repeat
    if rate > LOOP_ABOVE and repeat >= LOOP_REPEAT:
        return "loop"
    return ""
