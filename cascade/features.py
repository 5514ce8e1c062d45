"""The decision features: one home for their names, order and computation.

Per drafted position the engine computes these once per block, on the device; the
decision log stores them as columns of the same names (`cascade.store.models.Decision`),
`cascade.metrics.Decision` carries them as fields, and a learned deferral rule reads
them in this order. A test asserts the three agree.

    q_x        q(x) at T = 1: the drafter's probability of its drafted token x
    q_max      max_v q(v): the drafter's confidence
    q_entropy  H(q) in nats
    p_x        p(x) at T = 1: the target's probability of the drafted token
    p_max      max_v p(v)
    p_entropy  H(p) in nats
    d_tv       D_TV(p, q) = ½ Σ_v |p(v) − q(v)|

Drafter-side features are absent (NaN, NULL in the store) for a deterministic drafter;
target-side ones are absent where the target did not run (drafter-only mode, a position
the sequential cascade kept).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Q_FEATURES = ("q_x", "q_max", "q_entropy")  # drafter side
P_FEATURES = ("p_x", "p_max", "p_entropy")  # target side
FEATURES = Q_FEATURES + P_FEATURES + ("d_tv",)


def decision_features(tokens: torch.Tensor, q_raw: torch.Tensor | None, p_raw: torch.Tensor | None) -> torch.Tensor:
    """FEATURES for each drafted position, in that order. (k, len(FEATURES)); NaN = absent.

    tokens: (k,) drafted x; q_raw, p_raw: (k, V) at T = 1 or None.
    """
    import torch

    from cascade import sampling as S

    k = tokens.shape[0]
    nan = torch.full((k,), math.nan, device=tokens.device)  # (k,)
    idx = tokens.unsqueeze(-1)  # (k, 1)

    def side(dist: torch.Tensor | None) -> list[torch.Tensor]:  # [d(x), max d, H(d)], each (k,)
        if dist is None:
            return [nan, nan, nan]
        return [dist.gather(-1, idx).squeeze(-1), dist.max(-1).values, S.entropy(dist)]

    dtv = S.total_variation(p_raw, q_raw) if (p_raw is not None and q_raw is not None) else nan
    return torch.stack(side(q_raw) + side(p_raw) + [dtv], dim=-1)  # (k, 7)


def named(row: list[float], names: tuple[str, ...] = FEATURES) -> dict[str, float]:
    """One row of `decision_features(...).tolist()` as {feature name: value}, for keyword-built records."""
    if len(row) != len(names):
        raise ValueError(f"expected {len(names)} features ({', '.join(names)}), got {len(row)}")
    return dict(zip(names, row))
