"""Fit a head on logged decisions, measure it on held-out prompts, write it with its card.

    rows = training_rows(store, run_ids=[3, 4])                  # cascade.store.queries.training
    card = train(rows, TrainConfig("deferral", "qp", "logistic", "bad"), Path("heads/d-lr"))

The split is by prompt (GroupShuffleSplit): no prompt has rows on both sides. The model
written is the one fitted on the training part, so the card's held-out figures describe it.
Models: `logistic` = SimpleImputer(mean) → StandardScaler → LogisticRegression, stored folded
as JSON (`artefact.fold_logistic`; the card records the largest difference between the folded
scores and scikit-learn's `predict_proba` on the held-out rows); `hgb` =
HistGradientBoostingClassifier (NaN handled natively), stored with skops. Fitting runs with
one thread (`threadpool_limits(1)`): on 2 shared cores that is faster, not slower.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cascade import CascadeError
from cascade_learned import artefact, dataset, evaluate

MODELS = ("logistic", "hgb")
MIN_PER_CLASS = 10  # rows of each class, in each part of the split


@dataclass(frozen=True)
class TrainConfig:
    head: str  # deferral | acceptance
    features: str  # q | qp
    model: str  # logistic | hgb
    label: str  # dataset.LABELS[head]
    margin: float = 1.0  # nats, for the `bad` label
    test_size: float = 0.25  # share of prompts held out
    seed: int = 0
    min_rows: int = 200  # fewer usable rows than this: refuse
    exclude: tuple[str, ...] = ()  # features of the set left out (e.g. policy-dependent context)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_model(name: str, seed: int) -> Any:
    if name == "logistic":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline(
            [
                ("impute", SimpleImputer(strategy="mean")),
                ("scale", StandardScaler()),
                ("model", LogisticRegression(max_iter=2000)),
            ]
        )
    if name == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.1, max_leaf_nodes=31, l2_regularization=1.0, random_state=seed
        )
    raise CascadeError(f"--model must be one of {MODELS}, got {name!r}")


def _check_classes(y: np.ndarray, where: str, what: str) -> None:
    counts = np.bincount(y, minlength=2)
    if counts.min() < MIN_PER_CLASS:
        raise CascadeError(
            f"{where}: the label {what} has {counts[1]} positive and {counts[0]} negative rows; "
            f"a head needs at least {MIN_PER_CLASS} of each (one class only cannot be learned): "
            "log more prompts, or choose another --label / --margin"
        )


def split(ds: dataset.Dataset, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import GroupShuffleSplit

    n_prompts = len(np.unique(ds.groups))
    if n_prompts < 4:
        raise CascadeError(
            f"the rows come from {n_prompts} prompt(s); the split is by prompt and needs at least 4 "
            "(log runs over more prompts)"
        )
    gss = GroupShuffleSplit(n_splits=1, test_size=cfg.test_size, random_state=cfg.seed)
    train_idx, test_idx = next(gss.split(ds.x, ds.y, groups=ds.groups))
    return train_idx, test_idx


def fit(model: Any, ds: dataset.Dataset, idx: np.ndarray, cfg: TrainConfig) -> Any:
    from threadpoolctl import threadpool_limits

    x, y = ds.x[idx], ds.y[idx]
    weight = None
    if ds.soft is not None:  # soft label a: a row (y=1, weight a) and a row (y=0, weight 1 − a)
        a = ds.soft[idx]
        x, y, weight = np.vstack([x, x]), np.r_[np.ones(len(a)), np.zeros(len(a))].astype(np.int64), np.r_[a, 1 - a]
    key = "model__sample_weight" if cfg.model == "logistic" else "sample_weight"
    with threadpool_limits(1):
        return model.fit(x, y, **({key: weight} if weight is not None else {}))


def train(rows: Any, cfg: TrainConfig, out: Path, say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Build the set, split by prompt, fit, evaluate, write `out/` (card.json + model); the card."""
    import sklearn
    import skops

    t0 = time.perf_counter()
    say(f"read {len(rows)} drafted positions from runs {[r['id'] for r in rows.runs]} ({len(rows.prompts)} prompts)")
    ds = dataset.build(rows, cfg.head, cfg.features, cfg.label, cfg.margin, cfg.exclude)
    usable = len(ds.y)
    if usable < cfg.min_rows:
        raise CascadeError(
            f"only {usable} usable rows for a {cfg.head} head with label {cfg.label!r} "
            f"({', '.join(f'{v} {k}' for k, v in ds.dropped.items() if v)} left out); at least "
            f"{cfg.min_rows} are needed (--min-rows): log more prompts"
        )
    _check_classes(ds.y, "all rows", repr(cfg.label))
    train_idx, test_idx = split(ds, cfg)
    _check_classes(ds.y[train_idx], "the training prompts", repr(cfg.label))
    _check_classes(ds.y[test_idx], "the held-out prompts", repr(cfg.label))
    say(
        f"fitting {cfg.model} on {len(train_idx)} rows × {len(ds.features)} features "
        f"({len(np.unique(ds.groups[train_idx]))} prompts); {len(test_idx)} rows held out "
        f"({len(np.unique(ds.groups[test_idx]))} prompts)"
    )
    t1 = time.perf_counter()
    model = fit(make_model(cfg.model, cfg.seed), ds, train_idx, cfg)
    fit_seconds = time.perf_counter() - t1
    say(f"fitted in {fit_seconds:.1f} s; evaluating on the held-out prompts")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        prob = model.predict_proba(ds.x[test_idx])[:, 1]
    cols = {k: v[test_idx] for k, v in ds.columns.items()}
    heldout = evaluate.report(cfg.head, ds.y[test_idx], prob, cols)
    stored: Any = model
    extra: dict[str, Any] = {}
    if cfg.model == "logistic":
        stored = artefact.fold_logistic(model)
        folded = _folded_probability(stored, ds.x[test_idx])
        extra["folded_max_abs_diff"] = float(np.max(np.abs(folded - prob))) if len(prob) else 0.0
    label_text = dataset.LABEL_TEXT[cfg.label].format(margin=cfg.margin)
    card = {
        "head": cfg.head,
        "model": cfg.model,
        "features": list(ds.features),
        "feature_set": cfg.features,
        "label": {
            "name": cfg.label,
            "definition": label_text,
            "margin": cfg.margin if cfg.label == "bad" else None,
            "positive": "defer" if cfg.head == "deferral" else "accepted",
        },
        "score": (
            "P(positive): defer when it is >= alpha"
            if cfg.head == "deferral"
            else "1 - P(accepted): defer when it is >= alpha"
        ),
        "sklearn_version": sklearn.__version__,
        "skops_version": skops.__version__,
        "config": asdict(cfg),
        "data": {
            "query": rows.query,
            "sha256": rows.sha256(),
            "runs": rows.runs,
            "rows_read": len(rows),
            "rows_used": usable,
            "rows_dropped": ds.dropped,
            "prompts": len(rows.prompts),
            "train_rows": int(len(train_idx)),
            "heldout_rows": int(len(test_idx)),
            "heldout_prompts": int(len(np.unique(ds.groups[test_idx]))),
            "split": f"GroupShuffleSplit(test_size={cfg.test_size}, random_state={cfg.seed}) by prompt",
        },
        "heldout": heldout,
        "fit_seconds": round(fit_seconds, 3),
        **extra,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    artefact.write_head(out, _jsonable(card), stored)
    say(
        f"held-out ROC-AUC {_fmt(heldout['roc_auc'])}, PR-AUC {_fmt(heldout['pr_auc'])}, Brier "
        f"{heldout['calibration']['brier']:.4f}; best closed-form ROC-AUC "
        f"{_fmt(max((b['roc_auc'] or 0) for b in heldout['baselines'].values()))}; wrote {out} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return card


def _folded_probability(params: artefact.LogisticParams, x: np.ndarray) -> np.ndarray:
    import torch

    from cascade_learned.heads import FoldedLogistic

    return FoldedLogistic(params)(torch.from_numpy(x)).numpy()


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _jsonable(x: Any) -> Any:
    """NaN/inf → None, numpy scalars → Python: the card is strict JSON."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x
