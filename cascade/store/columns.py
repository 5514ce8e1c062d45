"""How Python values become column values on every backend (used by the store's writers)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import CursorResult


def now() -> datetime:
    return datetime.now(timezone.utc)


def nullable(x: float | None) -> float | None:
    """NaN (the engine's "absent") is stored as NULL on every backend."""
    return None if x is None or math.isnan(x) else x


def new_id(result: CursorResult[Any]) -> int:
    """The primary key of a one-row INSERT (no RETURNING: works with SQLite older than 3.35)."""
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
