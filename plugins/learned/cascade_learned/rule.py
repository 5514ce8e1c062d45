"""The rule `learned` and the acceptance predictor, both over a head trained by `cascade rules train`.

    rule: {name: learned, alpha: 0.4, options: {path: docs/learned/models/deferral-logistic-qp}}

Per block the engine hands the rule `DeferralInputs`; the rule builds the MODEL_FEATURES
matrix with `DeferralInputs.model_features()` (the function training used), scores every
position at once and defers a position when its score reaches α:

    r_i = 1[score_i ≥ α]     (k, 1): a whole-distribution rule; π, acceptance and residual unchanged

The score is the head's probability that the draft should go to the target: P(bad draft)
(or P(disagreement)) for a deferral head, 1 − P(accepted) for an acceptance head, kept in
[0, 1 − 1e-9] so that α = 0 defers every position (lossless: π = p) and α = 1 defers none
(the drafter-only end). A score that cannot be computed (NaN) defers.

What a head needs is read from its card when the rule is built: every head reads
drafter-side features (`reads_q`, so a deterministic drafter is refused when the policy is
checked); a head trained with `--features qp` also reads the target's (`reads_p` on the
instance), and the sequential cascade, which decides before the target runs, refuses it on
its first block with a message saying to train with `--features q`.

`AcceptancePredictor` exposes an acceptance head to a scheduler (SPEC.md, "Adaptive
verification length"): `predict_acceptance(features, positions, context)` is P(draft i is
accepted | the drafts before it were), from drafter-side features only, so it can run
before verification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from cascade import (
    CONTEXT,
    FEATURES,
    BlockContext,
    DeferralInputs,
    PolicyError,
    RuleBase,
    model_features,
    model_features_rows,
)
from cascade_learned.heads import P_SIDE, Head, load_head

MAX_SCORE = 1.0 - 1e-9  # scores stay below 1, so α = 1 (the drafter-only end) defers nothing


def resolve(path: Path, base_dir: Path | None) -> Path:
    """A relative head folder: against the policy's folder when cascade passes it (validation context
    `base_dir`) and it exists there, else against the working directory."""
    if path.is_absolute():
        return path
    if base_dir is not None and (Path(base_dir) / path).exists():
        return Path(base_dir) / path
    return path.resolve()


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path  # the head's folder (card.json + model file), written by `cascade rules train --out`

    @field_validator("path")
    @classmethod
    def _resolve(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
        return resolve(v, base)


class LearnedRule(RuleBase):
    """Defer a drafted position when the head's score reaches α (see the module docstring)."""

    name: ClassVar[str] = "learned"
    reads_q: ClassVar[bool] = True  # every head reads drafter-side features: deterministic drafters are refused
    reads_p: bool = False  # class: a q-only head runs in the sequential cascade; a qp head sets it True (instance)
    reads_features: ClassVar[bool] = True
    alpha_range: ClassVar[tuple[float, float]] = (0.0, 1.0)  # (speculative end: defer all, drafter-only end)
    Options: ClassVar[type[BaseModel]] = Options

    def __init__(self, alpha: float, options: BaseModel):
        assert isinstance(options, Options)
        self.alpha = float(alpha)
        self.options = options
        self.head: Head = load_head(options.path)
        self.reads_p = self.head.reads_p

    @classmethod
    def requirements(cls, options: BaseModel) -> tuple[bool, bool]:
        """(reads_q, reads_p) of the head `options` names, read from its card: for a policy check that wants
        to refuse a qp head in the sequential cascade at load time rather than on the first block."""
        assert isinstance(options, Options)
        return True, load_head(options.path).reads_p

    def __repr__(self) -> str:
        return f"LearnedRule(alpha={self.alpha}, head={self.head.folder.name}, {self.head.card['model']})"

    def provenance(self) -> dict[str, Any]:
        """The head this rule reads: its folder and the artefact's sha256 (calibration records them)."""
        return {"model": str(self.head.folder), "model_sha256": self.head.card.get("artefact_sha256")}

    def score(self, m: torch.Tensor) -> torch.Tensor:
        """The deferral score of each row of a MODEL_FEATURES matrix (k, M). (k,) float64 in [0, MAX_SCORE]"""
        prob = self.head.probability(m)
        s = prob if self.head.kind == "deferral" else 1.0 - prob
        return s.clamp(0.0, MAX_SCORE)

    def defer(
        self, q: torch.Tensor | None, p: torch.Tensor | None, inputs: DeferralInputs | None = None
    ) -> torch.Tensor:
        if inputs is None:
            raise PolicyError("rule 'learned' reads the decision features; this engine gave none")
        if self.head.reads_p and p is None:
            raise PolicyError(
                f"rule 'learned': head {self.head.folder} was trained on drafter and target features "
                f"({', '.join(f for f in self.head.features if f in P_SIDE)}), but the sequential cascade "
                "decides before the target runs; train a head with `cascade rules train --features q` for "
                "mode sequential, or use mode speculative"
            )
        s = self.score(inputs.model_features())  # (k,)
        return (~(s < self.alpha)).to(inputs.features.dtype).unsqueeze(-1)  # NaN score: defer

    def critical_alpha(self, columns: dict[str, Any]) -> np.ndarray:
        """For calibration: per logged drafted position, the α below which this rule defers it (its score).

        `columns`: FEATURES, `position` and CONTEXT as arrays (the store's columns, as in training)."""
        return self.score(rows_matrix(columns)).numpy()


def rows_matrix(columns: dict[str, Any]) -> torch.Tensor:
    """MODEL_FEATURES for logged rows: `model_features_rows` over the store's columns. (n, M) float32"""
    feats = torch.tensor(
        np.column_stack([np.asarray(columns[f], dtype=np.float64) for f in FEATURES]), dtype=torch.float32
    )
    pos = torch.as_tensor(np.asarray(columns["position"], dtype=np.int64))
    ctx = torch.tensor(
        np.column_stack([np.asarray(columns[c], dtype=np.float64) for c in CONTEXT]), dtype=torch.float32
    )
    return model_features_rows(feats.reshape(-1, len(FEATURES)), pos, ctx.reshape(-1, len(CONTEXT)))


class AcceptancePredictor:
    """An acceptance head for a scheduler: P(accepted | prefix accepted) per drafted position.

        pred = AcceptancePredictor("docs/learned/models/acceptance-logistic-q")
        a = pred.predict_acceptance(features, positions, context)   # (k,) on the features' device

    `features` (k, len(FEATURES)) as `cascade.features.decision_features` returns them (the
    target-side columns may be NaN: an acceptance head reads drafter-side features only),
    `positions` (k,) in the block, `context` the block's `BlockContext`. A logistic head runs
    as tensors on the features' device; a tree head calls scikit-learn once per block.
    """

    def __init__(self, path: str | Path):
        self.head = load_head(path)
        if self.head.kind != "acceptance":
            raise PolicyError(
                f"{self.head.folder} is a {self.head.kind} head; the scheduler needs an acceptance "
                "head (`cascade rules train --head acceptance`)"
            )
        if self.head.reads_p:
            raise PolicyError(
                f"{self.head.folder} reads target-side features; an acceptance predictor must run "
                "before verification: train it with --features q"
            )

    def predict_acceptance(
        self, features: torch.Tensor, positions: torch.Tensor, context: BlockContext
    ) -> torch.Tensor:
        m = model_features(features, positions, context)  # (k, M)
        return self.head.probability(m).to(features.dtype)

    def from_inputs(self, inputs: DeferralInputs) -> torch.Tensor:
        """The same from a rule's `DeferralInputs`. (k,)"""
        return self.head.probability(inputs.model_features()).to(inputs.features.dtype)
