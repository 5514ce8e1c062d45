"""Plain-text tables and the number formatting the command line and reports share.

A missing number (None or NaN) prints as "-" in a table and becomes null in JSON.
"""

from __future__ import annotations

import math
from typing import Any


def is_missing(x: Any) -> bool:
    """None or a float NaN: a number that was not measured."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(x: Any, spec: str, suffix: str = "") -> str:
    """`format(x, spec) + suffix`, or "-" for a missing number."""
    return "-" if is_missing(x) else format(x, spec) + suffix


def nan_to_none(obj: Any) -> Any:
    """NaN -> None, through nested dicts and lists (JSON has no NaN)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(v) for v in obj]
    return obj


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns two spaces apart, a dashed rule under the headers; cells printed with str()."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])
