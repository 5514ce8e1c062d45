"""Pure tensor functions for decoding: warping, acceptance, residuals (SPEC.md).

Shapes: `k` drafted positions, `V` vocabulary. Every function works on the device
its inputs live on and never synchronises with the host; the engine reads back
one small tensor per step.

References: Leviathan et al. 2023 (speculative sampling, lenience), Chen et al.
2023, Narasimhan et al. 2025 (the cascade target distribution π).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy: scaled distributions are one-hot on the argmax
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """The unscaled (T = 1) distribution the deferral rules read. (..., V)"""
    return torch.softmax(logits.float(), dim=-1)


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The scaled distribution used for sampling, acceptance and residuals. (..., V)

    T = 0 gives one-hot on the argmax; otherwise softmax(logits / T) restricted to
    the top-k tokens and to the smallest set whose mass reaches top-p, renormalised.
    """
    logits = logits.float()
    if params.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # drop a token when the mass *before* it already reaches top_p (keeps >= 1 token)
        drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= params.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.softmax(logits, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `probs` (..., V) -> (...,). Argmax when a row is one-hot-like."""
    flat = probs.reshape(-1, probs.shape[-1])
    out = torch.multinomial(flat, 1, generator=generator).squeeze(-1)
    return out.reshape(probs.shape[:-1])


def pick(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """The next token from logits (..., V): argmax when greedy, else a draw from warp(logits)."""
    if params.greedy:
        return logits.argmax(-1)
    return sample(warp(logits, params), generator)


def one_hot(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """q for a deterministic drafter: one-hot on the drafted tokens. (k,) -> (k, V)"""
    return torch.nn.functional.one_hot(tokens, vocab).float()


def mixture(r: torch.Tensor, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The verification target π of a deferral rule. r: (k, 1) or (k, V); q, p: (k, V).

    π(v) = q(v)·(1 − r(v)) + η·p(v),  η = Σ_u r(u)·q(u)
    With r constant over v (whole-distribution rules) this is (1 − r)·q + r·p.
    """
    eta = (r * q).sum(-1, keepdim=True)  # (k, 1)
    return q * (1 - r) + eta * p


def acceptance_probs(target: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """min(1, π(x) / q(x)) per drafted token. target, q: (k, V); tokens: (k,) -> (k,)"""
    idx = tokens.unsqueeze(-1)
    t_x = target.gather(-1, idx).squeeze(-1)
    q_x = q.gather(-1, idx).squeeze(-1)
    return torch.where(q_x > 0, (t_x / q_x.clamp_min(1e-30)).clamp(max=1.0), torch.zeros_like(q_x))


def lenient_acceptance_probs(p: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor, lenience: float) -> torch.Tensor:
    """Lossy speculative decoding: min(1, p(x) / (l·q(x))), l in (0, 1]. (k,)"""
    idx = tokens.unsqueeze(-1)
    p_x = p.gather(-1, idx).squeeze(-1)
    q_x = q.gather(-1, idx).squeeze(-1)
    return (p_x / (lenience * q_x).clamp_min(1e-30)).clamp(max=1.0)


def residual(target: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, π − q)) row-wise (..., V); falls back to π where the difference has no mass."""
    diff = (target - q).clamp_min(0)
    mass = diff.sum(-1, keepdim=True)
    return torch.where(mass > 1e-12, diff / mass.clamp_min(1e-30), target)


def first_rejection(accept_p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Number of leading accepted drafts: draws u_i ~ U[0, 1) and accepts while u_i < a_i.

    accept_p: (k,) -> 0-d long tensor in [0, k]. Stays on the device.
    """
    u = torch.rand(accept_p.shape, generator=generator, device=accept_p.device)
    rejected = u >= accept_p  # (k,)
    # index of the first rejection, or k when none: cumprod of "accepted so far"
    return (~rejected).long().cumprod(0).sum()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats. (..., V) -> (...,)"""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """D_TV(p, q) = Σ_v max(0, p(v) − q(v)). (..., V) -> (...,)"""
    return (p - q).clamp_min(0).sum(-1)
