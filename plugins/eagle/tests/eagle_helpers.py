"""Helpers for the eagle plugin's tests (a module of its own: every plugin's tests have a conftest)."""

from __future__ import annotations

from cascade.testing import CORPUS

PROMPT = "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self"
PROMPTS = [PROMPT, "for i in range(10):\n", "x"]


def eagle(f, tree="dynamic", **decoding):
    """An engine over family `f`'s target with its head (top_k 3, depth 4, a constant block of 8 unless told)."""
    from cascade.decode.engine import Engine
    from cascade.policy import parse_policy
    from cascade.testing import policy_dict

    opts = {"head": str(f["head"]), "tree": tree, "top_k": 3, "depth": 4}
    opts.update(decoding.pop("options", {}))
    if decoding.get("schedule", "constant") == "constant":
        decoding = {"block_size": 8, **decoding}
    d = policy_dict(target=f["target"], plugin="eagle", drafter_options=opts, **decoding)
    return Engine.from_policy(parse_policy(d))


def target_only(f, **decoding):
    from cascade.decode.engine import Engine
    from cascade.policy import parse_policy
    from cascade.testing import policy_dict

    return Engine.from_policy(parse_policy(policy_dict(target=f["target"], mode="target", **decoding)))


def tiny_split():
    """Training and held-out files for a tiny head: the test corpus, cut in two."""
    from cascade.zoo.data import SourceFile

    half = len(CORPUS) // 2
    return [SourceFile("train.py", CORPUS[:half] * 3)], [SourceFile("held.py", CORPUS[half:])]
