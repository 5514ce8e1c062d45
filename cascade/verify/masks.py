"""The shape of a tree draft (SPEC.md "Tree drafts"): its parents checked, each node's depth, and which
positions of the block [root, nodes] a node attends to. Plain helpers over parent lists: the KV cache
builds its masks from them, the tree verifier its walk."""

from __future__ import annotations

import torch

from cascade.errors import PluginError


def check_parents(parents: list[int], name: str | None) -> None:
    for i, p in enumerate(parents):
        if not -1 <= p < i:
            raise PluginError(
                f"drafter {name!r} proposed a tree whose node {i} has parent {p}: parents must "
                "come before their children (-1 = the last emitted token)"
            )


def depths(parents: list[int]) -> list[int]:
    """Each node's depth below the root (the root's children: 1)."""
    d: list[int] = []
    for p in parents:
        d.append(1 if p < 0 else d[p] + 1)
    return d


def attention(parents: list[int], device: torch.device) -> torch.Tensor:
    """allowed[a, b] over the block [root, nodes]: b is a or one of its ancestors. (k + 1, k + 1) bool"""
    k = len(parents)
    allowed = torch.eye(k + 1, dtype=torch.bool, device=device)
    allowed[:, 0] = True
    for i, p in enumerate(parents):
        if p >= 0:
            allowed[i + 1] |= allowed[p + 1]
    return allowed
