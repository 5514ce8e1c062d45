"""The decision features: one home for their names, order and computation.

Per drafted position the engine computes FEATURES once per block, on the device; the
decision log stores them as columns of the same names (`cascade.store.models.Decision`),
`cascade.metrics.Decision` carries them as fields, and a learned deferral rule reads
them in this order. A test asserts the three agree.

    q_x        q(x) at T = 1: the drafter's probability of its drafted token x
    q_max      max_v q(v): the drafter's confidence
    q_entropy  H(q) in nats
    q_margin   top-1 − top-2 of q
    q_rank     how many tokens q ranks above x (0: x is q's argmax)
    p_x        p(x) at T = 1: the target's probability of the drafted token
    p_max      max_v p(v)
    p_entropy  H(p) in nats
    d_tv       D_TV(p, q) = ½ Σ_v |p(v) − q(v)|
    agree      1 when argmax p = argmax q, else 0

Drafter-side features are absent (NaN, NULL in the store) for a deterministic drafter;
target-side ones are absent where the target did not run (drafter-only mode, a position
the sequential cascade kept).

Per block the engine also knows where the block sits: CONTEXT, the fields of
`BlockContext`, logged as columns of `steps` (Gupta et al.'s running quantiles of the
drafter's log-probs among them). `model_features` joins both into the one vector a
learned rule consumes, at decode time and at training time alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Q_FEATURES = ("q_x", "q_max", "q_entropy", "q_margin", "q_rank")  # drafter side
P_FEATURES = ("p_x", "p_max", "p_entropy")  # target side
JOINT_FEATURES = ("d_tv", "agree")  # need both
FEATURES = Q_FEATURES + P_FEATURES + JOINT_FEATURES

CONTEXT = ("sequence_position", "recent_acceptance", "logq_q10", "logq_q50")
"""Per block: `BlockContext`'s fields, in order (columns of `steps`)."""

RECENT_STEPS = 8  # verification steps in a sequence's recent acceptance
LOGQ_WINDOW = 64  # drafted positions behind the running quantiles of log q(x)
LOGQ_QUANTILES = (0.1, 0.5)  # logq_q10, logq_q50

MODEL_FEATURES = FEATURES + ("log_ratio", "position", "sequence_position", "recent_acceptance", "logq_q10", "logq_q50")
"""What `model_features` returns, in order: FEATURES, log p(x) − log q(x), the position in the block,
the position in the sequence, and the block's recent acceptance and log q quantiles."""

Q_MODEL_FEATURES = tuple(n for n in MODEL_FEATURES if n not in P_FEATURES + JOINT_FEATURES + ("log_ratio",))
"""The drafter-side subset: what a head may read before the target has run (sequential cascade)."""


@dataclass(frozen=True)
class BlockContext:
    """Where a block sits in its sequence: what the engine knows beyond the block's q and p."""

    sequence_position: int  # tokens in the sequence (prompt + emitted) before the block
    recent_acceptance: float = math.nan  # accepted / drafted over the last RECENT_STEPS verification steps
    logq_q10: float = math.nan  # 10% quantile of log q(x) over the last LOGQ_WINDOW drafted positions
    logq_q50: float = math.nan  # their median; NaN before any, or for a deterministic drafter


def decision_features(tokens: torch.Tensor, q_raw: torch.Tensor | None, p_raw: torch.Tensor | None) -> torch.Tensor:
    """FEATURES for each drafted position, in that order. (k, len(FEATURES)); NaN = absent.

    tokens: (k,) drafted x; q_raw, p_raw: (k, V) at T = 1 or None.
    """
    import torch

    from cascade.verify import sampling as S

    k = tokens.shape[0]
    nan = torch.full((k,), math.nan, device=tokens.device)  # (k,)
    idx = tokens.unsqueeze(-1)  # (k, 1)

    def side(dist: torch.Tensor | None, extra: bool) -> list[torch.Tensor]:  # [d(x), max d, H(d) (, margin, rank)]
        if dist is None:
            return [nan] * (5 if extra else 3)
        d_x = dist.gather(-1, idx)  # (k, 1)
        top2 = dist.topk(min(2, dist.shape[-1]), dim=-1).values  # (k, 2)
        cols = [d_x.squeeze(-1), top2[:, 0], S.entropy(dist)]
        if extra:
            margin = top2[:, 0] - top2[:, 1] if top2.shape[-1] > 1 else top2[:, 0]
            cols += [margin, (dist > d_x).sum(-1).to(dist.dtype)]
        return cols

    both = p_raw is not None and q_raw is not None
    dtv = S.total_variation(p_raw, q_raw) if both else nan  # type: ignore[arg-type]
    agree = (p_raw.argmax(-1) == q_raw.argmax(-1)).to(nan.dtype) if both else nan  # type: ignore[union-attr]
    cols = side(q_raw, True) + side(p_raw, False) + [dtv, agree]
    return torch.stack([c.float() for c in cols], dim=-1)  # (k, 10)


def model_features(features: torch.Tensor, positions: torch.Tensor, context: BlockContext) -> torch.Tensor:
    """MODEL_FEATURES for each position of a block. (k, len(MODEL_FEATURES)); NaN = absent.

    features: (k, len(FEATURES)) from `decision_features` (or the logged columns); positions: (k,)
    in the block. Training builds its matrix with this same function, one block at a time or with
    per-row context columns through `model_features_rows`.
    """
    import torch

    k = features.shape[0]
    ctx = torch.tensor(
        [[context.sequence_position, context.recent_acceptance, context.logq_q10, context.logq_q50]],
        dtype=features.dtype,
        device=features.device,
    ).expand(k, 4)  # (k, 4)
    return model_features_rows(features, positions, ctx)


def model_features_rows(features: torch.Tensor, positions: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """`model_features` with one context row per position: context (n, len(CONTEXT)). (n, len(MODEL_FEATURES))"""
    import torch

    f = {name: features[:, i] for i, name in enumerate(FEATURES)}  # each (n,)
    log_ratio = f["p_x"].clamp_min(1e-30).log() - f["q_x"].clamp_min(1e-30).log()  # (n,) NaN where absent
    pos = positions.to(features.dtype)  # (n,)
    seq_pos = context[:, 0] + pos  # (n,) the token's own position in the sequence
    cols = [log_ratio, pos, seq_pos, context[:, 1], context[:, 2], context[:, 3]]
    return torch.cat([features, torch.stack(cols, dim=-1)], dim=-1)  # (n, F + 6)


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of `values` with linear interpolation (numpy's and torch's default); NaN if empty."""
    xs = sorted(v for v in values if not math.isnan(v))
    if not xs:
        return math.nan
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def named(row: list[float], names: tuple[str, ...] = FEATURES) -> dict[str, float]:
    """One row of `decision_features(...).tolist()` as {feature name: value}, for keyword-built records."""
    if len(row) != len(names):
        raise ValueError(f"expected {len(names)} features ({', '.join(names)}), got {len(row)}")
    return dict(zip(names, row))
