"""From logged decision rows to a training set: features (the engine's function), labels, groups.

The matrix is built with `cascade.features.model_features_rows` from the store's columns:
the same function the rule calls per block at decode time, so the two cannot drift.

Labels (`LABELS`):

- deferral head (positive = "send it to the target"):
  - `bad`: the target disagrees strongly, log p(argmax p) − log p(x) > margin (SPEC.md);
  - `disagree`: argmax q ≠ argmax p.
- acceptance head (positive = "accepted"):
  - `accepted`: the logged accept bit, on the positions up to the block's first rejection
    (a later position was never judged);
  - `soft`: min(1, p(x)/q(x)), the chance it is accepted under sampling (SpecDec++), fitted as
    two weighted rows (y = 1 with weight a, y = 0 with weight 1 − a); evaluated against the
    accept bit where there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cascade import MODEL_FEATURES, Q_MODEL_FEATURES, CascadeError

LABELS = {"deferral": ("bad", "disagree"), "acceptance": ("accepted", "soft")}
FEATURE_SETS = {"q": Q_MODEL_FEATURES, "qp": MODEL_FEATURES}
LABEL_TEXT = {
    "bad": "1[log p(argmax p) − log p(x) > {margin}] (the target disagrees strongly; SPEC.md)",
    "disagree": "1[argmax q ≠ argmax p]",
    "accepted": "the logged accept bit, positions up to the block's first rejection",
    "soft": "min(1, p(x)/q(x)) (soft; fitted as weighted 1/0 rows)",
}


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # (n, m) float64, NaN = absent
    y: np.ndarray  # (n,) 0/1 hard label (for `soft`: the accept bit where known, else soft ≥ 0.5)
    soft: np.ndarray | None  # (n,) target in [0, 1] for the soft label, else None
    groups: np.ndarray  # (n,) prompt index: the split keeps a prompt's rows together
    features: tuple[str, ...]
    columns: dict[str, np.ndarray]  # the kept rows' store columns (for the closed-form baselines)
    dropped: dict[str, int]  # rows left out, by reason


def _arr(rows: Any, name: str) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in rows.columns[name]], dtype=np.float64)


def label(rows: Any, head: str, name: str, margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(y, keep, soft) over every row: the label, which rows have it, the soft target (or None)."""
    if name not in LABELS[head]:
        raise CascadeError(f"--label {name!r} is not a label of the {head} head; choose one of {LABELS[head]}")
    p_x, p_max, q_x = _arr(rows, "p_x"), _arr(rows, "p_max"), _arr(rows, "q_x")
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "bad":
            gap = np.log(np.maximum(p_max, 1e-30)) - np.log(np.maximum(p_x, 1e-30))
            keep = ~np.isnan(p_x) & ~np.isnan(p_max)
            return (gap > margin).astype(np.int64), keep, None
        if name == "disagree":
            agree = _arr(rows, "agree")
            return (agree == 0).astype(np.int64), ~np.isnan(agree), None
        accepted = _arr(rows, "accepted")
        judged = np.asarray(rows.columns["position"]) <= np.asarray(rows.columns["step_accepted"])
        if name == "accepted":
            return (accepted == 1).astype(np.int64), ~np.isnan(accepted) & judged, None
        soft = np.minimum(1.0, p_x / q_x)
        keep = ~np.isnan(soft)
        y = np.where(judged & ~np.isnan(accepted), accepted == 1, soft >= 0.5).astype(np.int64)
        return y, keep, np.nan_to_num(soft)


def build(
    rows: Any, head: str, feature_set: str, name: str, margin: float = 1.0, exclude: tuple[str, ...] = ()
) -> Dataset:
    """The training set of `rows` (a `cascade.store.queries.training.TrainingRows`) for one head; `exclude`
    names features of the set to leave out."""
    import torch

    from cascade_learned.rule import rows_matrix

    if head not in LABELS:
        raise CascadeError(f"--head must be one of {tuple(LABELS)}, got {head!r}")
    if feature_set not in FEATURE_SETS:
        raise CascadeError(f"--features must be one of {tuple(FEATURE_SETS)}, got {feature_set!r}")
    if head == "acceptance" and feature_set != "q":
        raise CascadeError(
            "an acceptance head predicts before verification: it reads drafter-side features only (--features q)"
        )
    unknown = [f for f in exclude if f not in FEATURE_SETS[feature_set]]
    if unknown:
        raise CascadeError(
            f"--exclude {', '.join(unknown)}: not in the {feature_set} features "
            f"({', '.join(FEATURE_SETS[feature_set])})"
        )
    features = tuple(f for f in FEATURE_SETS[feature_set] if f not in exclude)
    n = len(rows)
    if n == 0:
        raise CascadeError(
            f"no drafted positions in runs {[r['id'] for r in rows.runs]}: log runs of a "
            "speculative or sequential policy with a drafter first (`cascade run ... --prompts`)"
        )
    with torch.no_grad():
        m = rows_matrix({k: _arr(rows, k) if k != "position" else np.asarray(v) for k, v in rows.columns.items()})
    idx = [MODEL_FEATURES.index(f) for f in features]
    x = m.numpy().astype(np.float64)[:, idx]
    y, keep, soft = label(rows, head, name, margin)
    dropped = {
        f"no {name} label (target-side values absent)"
        if name in ("bad", "disagree", "soft")
        else "never judged (after the block's first rejection)": int((~keep).sum())
    }
    never = [f for j, f in enumerate(features) if np.isnan(x[keep, j]).all()]
    if never:
        raise CascadeError(
            f"features {', '.join(never)} are absent (NULL) in every usable row of runs "
            f"{[r['id'] for r in rows.runs]}: the logged drafter never produced them (rows logged before store "
            "revision 0004, or a deterministic drafter such as ngram, which has no q) or the target never ran "
            "there; log runs with a model drafter (hf-model) in speculative mode, or train with other --features"
        )
    cols = {k: _arr(rows, k)[keep] for k in ("q_max", "q_x", "p_max", "p_x", "d_tv")}
    return Dataset(
        x[keep],
        y[keep],
        None if soft is None else soft[keep],
        np.asarray(rows.prompt_index)[keep],
        tuple(features),
        cols,
        dropped,
    )
