"""What `cascade bench` and `cascade sweep` run when not told: the shipped policies and prompts, the peers."""

from __future__ import annotations

from pathlib import Path

from cascade.errors import CascadeError

# `cascade bench` with no POLICY: the shipped policies, in this order
DEFAULT_POLICIES = (
    "target-only",
    "speculative-lossless",
    "speculative-ngram",
    "eagle-chain",
    "cascade-token-v3",
    "cascade-ngram-token-v3",
    "sequential-chow",
    "lossy-speculative",
)
# `cascade sweep` with no POLICY
DEFAULT_SWEEP = ("cascade-token-v3", "cascade-chow", "cascade-ngram-token-v3", "speculative-ngram")
# the 200 held-out prompts ordered so the first N come from N different source files (`cascade zoo prompts --spread`):
# `--limit 30` reads 30 files, not 8; the figures in README measured before this default name the file they read
DEFAULT_PROMPTS = "prompts/stdlib-heldout-spread.jsonl"
DEFAULT_LIMIT = 30  # prompts a bench or sweep reads unless told (`--limit 0`: every one of the 200)
PEERS = ("hf",)  # `--peers`: transformers' assisted generation and prompt lookup


def shipped(relative: str) -> Path:
    """A shipped file (policies/, prompts/): from the working directory, else from this checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / relative
        if candidate.exists():
            return candidate
    raise CascadeError(
        f"{relative} not found in {Path.cwd()} or next to the cascade package: "
        "run from the cascade checkout or name the files explicitly"
    )


def default_policies(names: tuple[str, ...] = DEFAULT_POLICIES) -> list[Path]:
    return [shipped(f"policies/{name}.yaml") for name in names]
