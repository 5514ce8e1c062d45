"""Held-out metrics of a head and of the closed-form scores on the same rows.

Ranking: ROC-AUC and PR-AUC (average precision; acceptance is imbalanced). Calibration:
the Brier score and a reliability table (10 equal-width bins of predicted probability:
mean predicted, observed rate, count). Baselines are the closed-form rules' scores,
oriented so that a larger score means the head's positive class:

- deferral head (positive = defer): chow −max q, diff max p − max q, opt (max p − max q)/D_TV,
  token_v3 1 − p(x)/max p, and D_TV itself;
- acceptance head (positive = accepted): max q, q(x).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def ranking(y: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    """ROC-AUC and PR-AUC of `score` for the 0/1 labels `y` (rows with a NaN score left out)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    ok = ~np.isnan(score)
    y, score = y[ok], score[ok]
    if len(np.unique(y)) < 2:
        return {"roc_auc": None, "pr_auc": None, "rows": int(ok.sum())}
    return {
        "roc_auc": _finite(roc_auc_score(y, score)),
        "pr_auc": _finite(average_precision_score(y, score)),
        "rows": int(ok.sum()),
    }


def reliability(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            table.append(
                {
                    "bin": [float(edges[b]), float(edges[b + 1])],
                    "mean_predicted": float(prob[sel].mean()),
                    "observed": float(y[sel].mean()),
                    "count": int(sel.sum()),
                }
            )
    return {"brier": float(np.mean((prob - y) ** 2)), "bins": table}


def baselines(head: str, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        if head == "acceptance":
            return {"max_q": cols["q_max"], "q_x": cols["q_x"]}
        return {
            "chow (-max q)": -cols["q_max"],
            "diff (max p - max q)": cols["p_max"] - cols["q_max"],
            "opt ((max p - max q) / d_tv)": (cols["p_max"] - cols["q_max"]) / cols["d_tv"],
            "token_v3 (1 - p(x)/max p)": 1.0 - cols["p_x"] / cols["p_max"],
            "d_tv": cols["d_tv"],
        }


def report(head: str, y: np.ndarray, prob: np.ndarray, cols: dict[str, np.ndarray]) -> dict[str, Any]:
    """The card's `heldout` entry: the head's ranking and calibration, the baselines' ranking."""
    out: dict[str, Any] = {
        "rows": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else None,
        **ranking(y, prob),
        "calibration": reliability(y, prob),
    }
    out["baselines"] = {name: ranking(y, s) for name, s in baselines(head, cols).items()}
    return out
