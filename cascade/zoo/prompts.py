"""Deterministic code-completion prompts from the held-out stdlib files.

A case cuts a held-out file at a line boundary, moved back to the nearest token
boundary of the whole text (`align_to_tokens`): the prompt is the code before the cut
(whole lines, at most `max_prompt_tokens`), the reference is what follows (about
`reference_tokens`). The same Python, seed and tokenizer give the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from cascade.zoo import data


def cases(tokenizer, n: int = 50, seed: int = 0, max_prompt_tokens: int = 320, reference_tokens: int = 128,
          files: list[data.SourceFile] | None = None) -> list[dict]:
    if files is None:
        _, files = data.split_files(data.stdlib_files())
    rng = random.Random(seed)
    pool = [f for f in files if f.text.count("\n") >= 40]
    rng.shuffle(pool)
    out: list[dict] = []
    per_file = max(1, -(-n // max(len(pool), 1)))  # ceil: spread the cases over the files
    for f in pool:
        lines = f.text.splitlines(keepends=True)
        for _ in range(per_file):
            case = _cut(f, lines, rng, tokenizer, max_prompt_tokens, reference_tokens)
            if case:
                out.append(case)
        if len(out) >= n:
            break
    return out[:n]


def _cut(f, lines, rng, tokenizer, max_prompt_tokens, reference_tokens) -> dict | None:
    for _ in range(20):
        cut = rng.randrange(10, len(lines) - 5)
        if not lines[cut].strip():  # the continuation should start with code
            continue
        prompt_lines: list[str] = []
        budget = max_prompt_tokens
        for line in reversed(lines[:cut]):
            cost = len(tokenizer(line, add_special_tokens=False)["input_ids"])
            if cost > budget:
                break
            prompt_lines.insert(0, line)
            budget -= cost
        ref_lines: list[str] = []
        budget = reference_tokens
        for line in lines[cut:]:
            budget -= len(tokenizer(line, add_special_tokens=False)["input_ids"])
            if budget < 0:
                break
            ref_lines.append(line)
        prompt, reference = align_to_tokens(tokenizer, "".join(prompt_lines), "".join(ref_lines))
        if len(prompt_lines) >= 5 and reference.strip():
            return {"prompt": prompt, "reference": reference, "source": f.relpath, "line": cut + 1,
                    "python_version": data.python_version()}
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


def write_prompts(out: Path, tokenizer_dir: Path, n: int = 50, seed: int = 0) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = cases(tok, n, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)
