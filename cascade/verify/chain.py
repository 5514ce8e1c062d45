"""Verify one drafted block against the target (SPEC.md, "One speculative step").

Given the drafted tokens x_1..x_k, the drafter's q_1..q_k (or None) and the
target's logits for p_1..p_{k+1} from one forward pass, decide how many drafts
are accepted and which token follows them. Everything stays on the device; the
caller reads back the two integers of the `Verdict` in one transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cascade.features import BlockContext, decision_features
from cascade.rules import DeferralInputs, Rule
from cascade.verify import sampling as S


@dataclass(frozen=True)
class Verdict:
    n_accepted: torch.Tensor  # 0-d long: leading drafts kept, in [0, k]
    next_token: torch.Tensor  # 0-d long: the correction (n < k) or the bonus token (n = k)
    deferred: torch.Tensor  # (k,) float: r(x_i), 1 = the rule deferred that drafted token to the target


def q_unscaled(tokens: torch.Tensor, q_raw: torch.Tensor | None, vocab: int) -> torch.Tensor:
    """q at T = 1 for the drafted positions; one-hot for a deterministic drafter. (k, V)"""
    if q_raw is None:
        return S.one_hot(tokens, vocab)
    if q_raw.shape[-1] < vocab:  # a drafter head narrower than the target's (padded embeddings)
        q_raw = torch.nn.functional.pad(q_raw, (0, vocab - q_raw.shape[-1]))
    return q_raw


def q_scaled(q_raw: torch.Tensor, deterministic: bool, params: S.SamplingParams) -> torch.Tensor:
    """The distribution the drafter sampled from (temperature, top-k, top-p applied). (k, V)"""
    return q_raw if deterministic else S.warp(q_raw.clamp_min(1e-30).log(), params)


def deferral(
    rule: Rule,
    tokens: torch.Tensor,  # (k,) the drafted tokens
    q_raw: torch.Tensor,  # (k, V) q at T = 1 (one-hot for a deterministic drafter)
    p_raw: torch.Tensor | None,  # (k, V) p at T = 1, None when the target has not run
    block: BlockContext | None = None,
    first: int = 0,  # position of tokens[0] in its block
    real_q: bool = True,  # False: q is the one-hot of a deterministic drafter (its features are absent)
    positions: torch.Tensor | None = None,  # (k,) each token's position in its path (tree drafts); default first..
) -> tuple[torch.Tensor, torch.Tensor]:
    """r for every candidate token (k, 1) or (k, V), and r(x_i) for the drafted ones (k,)."""
    inputs = None
    if rule.reads_features:
        k = tokens.shape[0]
        block = block or BlockContext(sequence_position=0)
        inputs = DeferralInputs(
            features=decision_features(tokens, q_raw if real_q else None, p_raw),  # (k, F)
            positions=positions if positions is not None else torch.arange(first, first + k, device=tokens.device),
            sequence_position=block.sequence_position,
            recent_acceptance=block.recent_acceptance,
            logq_q10=block.logq_q10,
            logq_q50=block.logq_q50,
        )
    r = rule.defer(q_raw, p_raw if rule.reads_p else None, inputs)
    r_x = r.expand(tokens.shape[0], -1).gather(-1, tokens.unsqueeze(-1)) if r.shape[-1] > 1 else r
    return r, r_x.squeeze(-1)


def verify_block(
    tokens: torch.Tensor,  # (k,) drafted x_1..x_k
    q_raw: torch.Tensor | None,  # (k, V) drafter's q at T = 1, None for a deterministic drafter
    p_logits: torch.Tensor,  # (k + 1, V) target logits for positions 1..k+1
    rule: Rule,
    params: S.SamplingParams,
    generator: torch.Generator | None,
    lenience: float | None = None,  # lossy speculative decoding: accept min(1, p / (l·q))
    q_next: torch.Tensor | None = None,  # (V,) drafter's q_{k+1} at T = 1, for the bonus position
    block: BlockContext | None = None,  # where the block sits, for rules that read features
) -> Verdict:
    """Accept a prefix of the drafts and pick the token after it.

    The bonus token (all k accepted) is drawn from p_{k+1} for lossless decoding
    and, when the drafter also gave q_{k+1}, from the rule's π_{k+1}: every emitted
    token is then distributed as π, and the drafter-only end of α emits only
    drafter tokens.
    """
    k, vocab = tokens.shape[0], p_logits.shape[-1]
    deterministic = q_raw is None
    q_raw = q_unscaled(tokens, q_raw, vocab)
    # p at T = 1, what the rules read; not built for rules that never look at it (lossless, chow)
    reads_p = rule.reads_p or rule.reads_features
    p_raw = S.softmax(p_logits) if reads_p else None  # (k + 1, V)
    p_next_raw = None if p_raw is None else p_raw[k:]  # (1, V)
    r, r_x = deferral(rule, tokens, q_raw, None if p_raw is None else p_raw[:k], block, 0, not deterministic)
    cascade_bonus = q_next is not None and lenience is None
    if cascade_bonus:
        assert q_next is not None
        q_next = q_unscaled(tokens[:0], q_next.view(1, -1), vocab)  # (1, V)

    if params.greedy:
        # keep x_i when the rule keeps the draft (r = 0) or it is the target's argmax
        best = p_logits.argmax(-1)  # (k + 1,)
        keep = best[:k] == tokens
        if lenience is None:
            keep = keep | (r_x == 0)
        if cascade_bonus:  # π_{k+1} at T = 0: the drafter's argmax unless the rule defers it
            assert q_next is not None
            x_next = q_next.argmax(-1)  # (1,) the drafter's greedy guess at k+1
            _, r_next_x = deferral(rule, x_next, q_next, p_next_raw, block, k)
            best = torch.cat([best[:k], torch.where(r_next_x == 0, x_next, best[k:])])
        n = keep.long().cumprod(0).sum()
        return Verdict(n, best[n], r_x)

    q = q_scaled(q_raw, deterministic, params)  # (k, V)
    p = S.warp(p_logits, params)  # (k + 1, V) scaled target
    if lenience is None:
        pi = S.mixture(r, q, p[:k])  # π = q(1 − r) + η p
        accept = S.acceptance_probs(pi, q, tokens)  # min(1, π(x) / q(x))
    else:
        pi = p[:k]
        accept = S.lenient_acceptance_probs(pi, q, tokens, lenience)
    n = S.first_rejection(accept, generator)
    bonus = p[k:]  # (1, V)
    if cascade_bonus:
        assert q_next is not None
        q_bonus = q_scaled(q_next, False, params)  # (1, V)
        if rule.reads_features:  # r is read at a drafted token: the bonus is one more draft, judged as the k were
            bonus = S.one_hot(bonus_draft(rule, q_next, q_bonus, p_next_raw, bonus, block, k, generator), vocab)
        else:
            r_next, _ = deferral(rule, q_next.argmax(-1), q_next, p_next_raw, block, k)
            bonus = S.mixture(r_next, q_bonus, bonus)  # π_{k+1}
    # row n of [residuals of the k positions; the bonus distribution] is what follows the accepted prefix
    candidates = torch.cat([S.residual(pi, q), bonus], dim=0)  # (k + 1, V)
    return Verdict(n, S.sample(candidates[n], generator), r_x)


def bonus_draft(
    rule: Rule,
    q_raw: torch.Tensor,  # (1, V) q_{k+1} at T = 1
    q: torch.Tensor,  # (1, V) q_{k+1} warped, what the draft is drawn from
    p_raw: torch.Tensor | None,  # (1, V) p_{k+1} at T = 1
    p: torch.Tensor,  # (1, V) p_{k+1} warped
    block: BlockContext | None,
    k: int,  # the bonus's position in its block
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The bonus token under a rule read at the drafted token (a learned head, `reads_features`): x ~ q_{k+1}, kept
    where r_x = 0, accepted with min(1, p(x) / q(x)) where r_x = 1, else drawn from norm(max(0, p − q)). Its law is
    every drafted position's (SPEC.md, "Learned deferral, in more detail"); π_{k+1} built from r at q's argmax is not.
    (1,)"""
    x = S.sample(q, generator)  # (1,)
    r, _ = deferral(rule, x, q_raw, p_raw, block, k)  # (1, 1)
    pi = S.mixture(r, q, p)  # q where the rule keeps x, p where it defers it
    kept = S.first_rejection(S.acceptance_probs(pi, q, x), generator)  # 0-d: 1 = x stands
    return torch.where(kept > 0, x, S.sample(S.residual(pi, q), generator))
