"""Code-completion quality of one completion against its reference (SPEC.md, "Metrics").

Line-level completion as in CodeXGLUE's code-completion task, on the held-out prompts
(each cut at a line boundary; its reference is the code that followed):

- `exact_match`: the completion's first non-blank line equals the reference's, both
  stripped of surrounding whitespace (CodeXGLUE's line-level EM), 0 or 1.
- `edit_similarity`: normalised Levenshtein similarity of the first line (rapidfuzz's
  `Levenshtein.normalized_similarity`), 0..100; `edit_similarity_lines` does the same
  for the first `LINES` non-blank lines joined, so a right first line followed by
  nonsense scores lower than a right block.
- `parses`: prompt + completion, cut at the last complete line, is Python: `ast.parse`
  accepts it, or it fails only by being incomplete (an open bracket, string or block at
  the end of the text, which more lines could close). Prompts start at a top-level
  statement, so prompt + reference passes (a test checks it on the shipped prompts).

And a degeneration signal on code tokens (identifiers, numbers, strings, operators;
independent of any model's tokenizer, so a reference scores on the same scale):

- `distinct_2`: distinct token bigrams / token bigrams (Li et al. 2016), 0..1.
- `repeat_4`: share of token 4-grams that repeat an earlier 4-gram of the same text
  (Welleck et al. 2020's seq-rep-4), 0..1. A looping completion scores near 1; the
  references score what the held-out code itself does.
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
from collections.abc import Sequence

from cascade.metrics import Quality

LINES = 3  # lines compared by edit_similarity_lines
CODE_TOKEN = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|==|!=|<=|>=|->|\*\*|//|\S")


METRICS = ("exact_match", "edit_similarity", "edit_similarity_lines", "parses", "distinct_2", "repeat_4")


def score(prompt: str, completion: str, reference: str | None) -> Quality:
    """This module's metrics of one completion (chrF and the log-prob are left to the caller); the
    reference-based ones are None without a reference, the degeneration ones NaN for too short a text."""
    return Quality(
        exact_match=None if reference is None else exact_match(completion, reference),
        edit_similarity=None if reference is None else edit_similarity(completion, reference, 1),
        edit_similarity_lines=None if reference is None else edit_similarity(completion, reference, LINES),
        parses=float(parses(prompt, completion)),
        distinct_2=distinct_n(completion, 2),
        repeat_4=repeated_ngram_rate(completion, 4),
    )


# ---------------------------------------------------------------------- lines


def next_lines(text: str, n: int) -> list[str]:
    """The first n non-blank lines of `text`, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip()][:n]


def exact_match(completion: str, reference: str) -> float:
    return float(next_lines(completion, 1) == next_lines(reference, 1))


def edit_similarity(completion: str, reference: str, lines: int = 1) -> float:
    """Normalised Levenshtein similarity of the first `lines` non-blank lines, 0..100 (100 = equal)."""
    from rapidfuzz.distance import Levenshtein

    hyp, ref = "\n".join(next_lines(completion, lines)), "\n".join(next_lines(reference, lines))
    return 100.0 * Levenshtein.normalized_similarity(hyp, ref)


# ---------------------------------------------------------------------- syntax


def complete_lines(text: str) -> str:
    """`text` up to and including its last newline (a trailing partial line dropped)."""
    return text[: text.rfind("\n") + 1]


def syntax_status(code: str) -> str:
    """ "ok" (parses), "incomplete" (fails only because it ends early) or "error"."""
    try:
        ast.parse(code)
        return "ok"
    except SyntaxError as exc:
        if _ends_early(code, exc):
            return "incomplete"
        return "error"
    except (ValueError, MemoryError, RecursionError):  # null bytes, absurd nesting
        return "error"


def _ends_early(code: str, exc: SyntaxError) -> bool:
    msg = str(exc.msg or "")
    if "was never closed" in msg or "unexpected EOF" in msg or "unterminated triple-quoted" in msg:
        return True
    if isinstance(exc, IndentationError) and "expected an indented block" in msg:
        header = re.search(r"on line (\d+)", msg)  # the block's body would come next: nothing follows its header
        after = code.splitlines()[int(header.group(1)) if header else (exc.lineno or 1) - 1 :]
        return not any(line.strip() for line in after)
    lines = code.splitlines()
    last = max((i + 1 for i, line in enumerate(lines) if line.strip()), default=0)
    if (exc.lineno or 0) < last:  # the parser stopped before the end: broken, not unfinished
        return False
    try:  # the tokenizer says so: EOF inside a bracket or a multi-line string
        for _ in tokenize.generate_tokens(io.StringIO(code).readline):
            pass
    except tokenize.TokenError as err:
        return "EOF" in str(err)
    except (SyntaxError, ValueError):
        return False
    return False


def parses(prompt: str, completion: str) -> bool:
    """prompt + completion, cut at the last complete line, parses or is only incomplete."""
    return syntax_status(enclose(complete_lines(prompt + completion))) != "error"


def enclose(code: str) -> str:
    """Code whose first line is indented by w, inside `if True:` headers at indents 0..w-1, so a
    window cut from inside a block parses as it did in its file (dedents included)."""
    first = next((line for line in code.splitlines() if line.strip()), "")
    width = len(first) - len(first.lstrip(" \t"))
    return "".join(" " * i + "if True:\n" for i in range(width)) + code


# ---------------------------------------------------------------------- degeneration


def code_tokens(text: str) -> list[str]:
    return CODE_TOKEN.findall(text)


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(text: str, n: int = 2) -> float:
    """Distinct code-token n-grams / all of them; NaN when the text has none."""
    grams = _ngrams(code_tokens(text), n)
    return len(set(grams)) / len(grams) if grams else math.nan


def repeated_ngram_rate(text: str, n: int = 4) -> float:
    """Share of code-token n-grams that already occurred earlier in the text; NaN when it has none."""
    grams = _ngrams(code_tokens(text), n)
    if not grams:
        return math.nan
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)
