"""What the head reads from the target: its features, its embedding table and its LM head (frozen, shared)."""

from __future__ import annotations

from typing import Any

import torch


def target_features(target: Any, ids: torch.Tensor) -> torch.Tensor:
    """The target's last hidden states after its final norm (what its LM head reads). (B, T) -> (B, T, d)"""
    out = target(input_ids=ids, output_hidden_states=True, use_cache=False)
    return out.hidden_states[-1]


def embed(target: Any, ids: torch.Tensor) -> torch.Tensor:
    """The target's token embeddings (no positions). (B, T) -> (B, T, d)"""
    return target.get_input_embeddings()(ids)


def lm_head(target: Any, g: torch.Tensor) -> torch.Tensor:
    """The target's LM head on features. (..., d) -> (..., V)"""
    return target.get_output_embeddings()(g)


def hidden_size(target: Any) -> int:
    return int(target.get_input_embeddings().weight.shape[1])


def vocab_size(target: Any) -> int:
    return int(target.get_output_embeddings().weight.shape[0])
