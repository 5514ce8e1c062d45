"""Deterministic code-completion prompts from the stdlib files of one split.

A case cuts a file where a statement starts, moved back to the nearest token boundary
of the whole text (`align_to_tokens`): the prompt is the code before the cut (whole
lines starting at a statement too, so prompt + reference is Python up to its
indentation; at most `max_prompt_tokens`), the reference is what follows (about
`reference_tokens`). The held-out split is the evaluation set; the train split gives
the prompts that rules are learned and α calibrated on, so nothing is tuned on the
evaluation prompts. The same Python, seed and tokenizer give the same file.
"""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

from cascade.bench.completion import parses
from cascade.zoo import data

SPLITS = ("heldout", "train")
CLAUSES = ("elif", "else", "except", "finally", "case")  # statement lines that cannot open a window


def cases(
    tokenizer,
    n: int = 200,
    seed: int = 0,
    max_prompt_tokens: int = 320,
    reference_tokens: int = 128,
    files: list[data.SourceFile] | None = None,
    split: str = "heldout",
    min_prompt_tokens: int = 0,
) -> list[dict]:
    if files is None:
        train, heldout = data.split_files(data.stdlib_files())
        files = heldout if split == "heldout" else train
    rng = random.Random(seed)
    pool = [f for f in files if f.text.count("\n") >= 40]
    if min_prompt_tokens:  # long prompts: only files that hold one
        pool = [
            f
            for f in pool
            if len(tokenizer(f.text, add_special_tokens=False)["input_ids"]) >= min_prompt_tokens + reference_tokens
        ]
    rng.shuffle(pool)
    out: list[dict] = []
    per_file = max(1, -(-n // max(len(pool), 1)))  # ceil: spread the cases over the files
    for f in pool:
        lines = f.text.splitlines(keepends=True)
        starts = statement_starts(f.text, lines)
        if not starts:
            continue
        for _ in range(per_file):
            case = _cut(f, lines, starts, rng, tokenizer, max_prompt_tokens, reference_tokens, min_prompt_tokens)
            if case:
                out.append(case)
        if len(out) >= n:
            break
    return out[:n]


def statement_starts(text: str, lines: list[str]) -> list[int]:
    """0-based indices of the lines where a statement starts (not an elif/else/except clause), sorted."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            i = node.lineno - 1
            if (
                i < len(lines)
                and lines[i][: node.col_offset].strip() == ""
                and not lines[i].lstrip().startswith(CLAUSES)
            ):
                found.add(i)
    return sorted(found)


def _cut(f, lines, starts, rng, tokenizer, max_prompt_tokens, reference_tokens, min_prompt_tokens=0) -> dict | None:
    cuts = [i for i in starts if 10 <= i < len(lines) - 5]
    if min_prompt_tokens:  # cut only where enough code comes before
        before = 0
        enough = set()
        for i, line in enumerate(lines):
            if before >= min_prompt_tokens:
                enough.add(i)
            before += len(tokenizer(line, add_special_tokens=False)["input_ids"])
        cuts = [i for i in cuts if i in enough]
    for _ in range(20):
        if not cuts:
            return None
        cut = rng.choice(cuts)  # the reference starts with a statement
        budget = max_prompt_tokens
        first = cut
        for i in range(cut - 1, -1, -1):  # grow the window upwards while it fits
            cost = len(tokenizer(lines[i], add_special_tokens=False)["input_ids"])
            if cost > budget:
                break
            budget -= cost
            first = i
        ref_lines: list[str] = []
        budget = reference_tokens
        for line in lines[cut:]:
            budget -= len(tokenizer(line, add_special_tokens=False)["input_ids"])
            if budget < 0:
                break
            ref_lines.append(line)
        # the window opens at the earliest statement that keeps prompt + reference Python
        # (not inside a `try:` whose `except` comes later, say)
        for start in [i for i in starts if first <= i <= cut - 5]:
            prompt, reference = align_to_tokens(tokenizer, "".join(lines[start:cut]), "".join(ref_lines))
            if min_prompt_tokens and len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) < min_prompt_tokens:
                break  # later starts are shorter still
            if reference.strip() and parses(prompt, reference):
                return {
                    "prompt": prompt,
                    "reference": reference,
                    "source": f.relpath,
                    "line": cut + 1,
                    "python_version": data.python_version(),
                }
    return None


def align_to_tokens(tokenizer, prompt: str, reference: str) -> tuple[str, str]:
    """Move the cut back to the token boundary the model saw in training.

    Byte-level BPE merges a run of whitespace with what follows ("\n" + indentation
    + " name"), so a prompt ending at "\n" ends mid-token for the model. Cut where the
    tokenization of the whole text has a boundary at or before the line cut instead.
    """
    text = prompt + reference
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    cut = 0
    for start, _ in enc["offset_mapping"]:
        if start > len(prompt):
            break
        cut = start
    return text[:cut], text[cut:]


def spread_by_source(rows: list[dict]) -> list[dict]:
    """The same rows, round-robin over their source files (in order of first appearance): the first N rows
    come from N different files while there are files left, so `--limit N` does not measure a handful of
    files N/k times over (prompts cut from one file are not independent)."""
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(r.get("source", ""), []).append(r)
    queues = list(by_file.values())
    out: list[dict] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def write_prompts(
    out: Path,
    tokenizer_dir: Path,
    n: int = 200,
    seed: int = 0,
    split: str = "heldout",
    min_prompt_tokens: int = 0,
    max_prompt_tokens: int = 320,
    spread: bool = False,
) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [
        dict(r, split=split)
        for r in cases(
            tok, n, seed, split=split, min_prompt_tokens=min_prompt_tokens, max_prompt_tokens=max_prompt_tokens
        )
    ]
    if spread:
        rows = spread_by_source(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)
