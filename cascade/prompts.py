"""Prompt files: JSONL, one object per line with a string "prompt" and optionally a "reference"."""

from __future__ import annotations

import json
from pathlib import Path

from cascade.errors import CascadeError


def read_prompts(path: str | Path, limit: int | None = None) -> list[dict]:
    """The rows of a JSONL prompts file (blank lines skipped); the first `limit` of them when given.

    Errors name the file and line: a missing file, invalid JSON, a row without a string "prompt",
    a file with no prompts, a `limit` below 1.
    """
    path = Path(path)
    if limit is not None and limit < 1:
        raise CascadeError(f"--limit must be at least 1, got {limit}")
    if not path.is_file():
        raise CascadeError(f"prompts file not found: {path}")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CascadeError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise CascadeError(f"{path}:{i}: each line must be an object with a string \"prompt\" field")
        rows.append(row)
    if not rows:
        raise CascadeError(f"{path}: no prompts")
    return rows[:limit] if limit is not None else rows
