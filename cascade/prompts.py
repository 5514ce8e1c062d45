"""Prompts: JSONL files (one object per line with a string "prompt" and optionally a "reference")
and single `--prompt` texts, checked before any model loads.

Every error names where the prompt came from: `file:line` for a file, `--prompt` for the flag.
"""

from __future__ import annotations

import json
from pathlib import Path

from cascade.errors import CascadeError


def check_prompt(text: str, where: str = "--prompt") -> str:
    """`text` when it has something besides whitespace; else a CascadeError starting with `where`."""
    if not text.strip():
        what = "empty prompt" if not text else "empty prompt (whitespace only)"
        raise CascadeError(f"{where}: {what}: give at least one token of text")
    return text


def read_numbered_prompts(path: str | Path, limit: int | None = None) -> list[tuple[str, dict]]:
    """`(where, row)` for each row of a JSONL prompts file, `where` being `file:line`; see `read_prompts`."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise CascadeError(f"--limit must be at least 1, got {limit}")
    if not path.is_file():
        raise CascadeError(f"prompts file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CascadeError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CascadeError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise CascadeError(f'{where}: each line must be an object with a string "prompt" field')
        check_prompt(row["prompt"], where)
        rows.append((where, row))
    if not rows:
        raise CascadeError(f"{path}: no prompts")
    return rows[:limit] if limit is not None else rows


def read_prompts(path: str | Path, limit: int | None = None) -> list[dict]:
    """The rows of a JSONL prompts file (blank lines skipped); the first `limit` of them when given.

    Errors name the file and line: a missing file, invalid JSON, a row without a string "prompt",
    an empty or whitespace-only "prompt", a file with no prompts, a `limit` below 1.
    """
    return [row for _, row in read_numbered_prompts(path, limit)]


def tail_prompts(prompts: list[dict], tokenizer, tokens: int) -> list[dict]:
    """Each prompt cut to its last `tokens` tokens (decoded back to text; the reference kept), for measuring
    at a fixed context length; prompts shorter than that are left out, with a clear error when none is left."""
    if tokens < 1:
        raise CascadeError(f"--prompt-tokens must be at least 1, got {tokens}")
    out = []
    for row in prompts:
        ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        if len(ids) >= tokens:
            out.append(dict(row, prompt=tokenizer.decode(ids[-tokens:]), prompt_tokens=tokens))
    if not out:
        longest = max(len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in prompts)
        raise CascadeError(
            f"no prompt has {tokens} tokens (the longest has {longest}): use longer prompts "
            "(e.g. prompts/stdlib-heldout-long.jsonl) or fewer --prompt-tokens"
        )
    return out
