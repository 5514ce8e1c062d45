"""The learned acceptance head as the adaptive schedule's predictor (`register_predictors`).

    decoding:
      schedule:
        name: adaptive
        options: {predictor: learned, predictor_options: {path: docs/learned/models/acceptance-logistic-q}}

The engine hands it the drafter-side features of each q at q's top token (known before the
token is drawn) and the block context; it returns the head's P(accepted | prefix accepted).
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from cascade import BlockContext
from cascade_learned.rule import AcceptancePredictor


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path  # an acceptance head's folder (`cascade rules train --head acceptance --features q --out DIR`)


class LearnedPredictor:
    Options = Options

    def __init__(self, options: Options):
        self.inner = AcceptancePredictor(options.path)

    def predict_acceptance(
        self, features: torch.Tensor, positions: torch.Tensor, context: BlockContext
    ) -> torch.Tensor:
        return self.inner.predict_acceptance(features, positions, context)
