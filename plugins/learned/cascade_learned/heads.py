"""A loaded head: which MODEL_FEATURES it reads and how it scores a block.

- A logistic head is folded into tensors (`FoldedLogistic`): per block it is one
  `where` (NaN → the training mean), one matrix-vector product and a sigmoid, on the
  features' device, with no scikit-learn call.
- A tree head (`TreeScorer`) calls scikit-learn once per block (every position of the
  block in one `predict_proba`), with its OpenMP threads limited to 1 (measured: 8 ms
  per call with the default threads on 2 loaded cores, about 0.3 ms with one).

`Head.probability(m)` takes the (k, len(MODEL_FEATURES)) matrix of
`cascade.features.model_features` and returns the model's probability of the positive
class of its label: "defer" (a bad draft, a disagreement) for a deferral head, "accepted"
for an acceptance head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cascade import MODEL_FEATURES, P_FEATURES
from cascade_learned import artefact

P_SIDE = frozenset(P_FEATURES) | {"d_tv", "agree", "log_ratio"}
"""Model features that need the target's distribution (absent before the target runs)."""


class FoldedLogistic:
    """σ(x̃·w + b); the scaler is folded into w and b, NaN inputs take the training mean."""

    def __init__(self, params: artefact.LogisticParams):
        self.params = params
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:  # once per device, then cached
            w = torch.tensor(self.params.weights, dtype=torch.float64, device=device)  # (m,)
            fill = torch.tensor(self.params.fill, dtype=torch.float64, device=device)  # (m,)
            self._on[device] = (w, fill)
        return self._on[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # x (k, m) -> (k,) float64
        w, fill = self._tensors(x.device)
        x = x.to(torch.float64)
        x = torch.where(torch.isnan(x), fill, x)
        return torch.sigmoid(x @ w + self.params.intercept)


class TreeScorer:
    """predict_proba of a HistGradientBoostingClassifier over a whole block, one OpenMP thread."""

    def __init__(self, model: Any):
        from threadpoolctl import ThreadpoolController

        self.model = model
        self.controller = ThreadpoolController()  # finds the thread pools once (a few ms); limiting is then cheap

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # x (k, m) -> (k,) float64
        if x.shape[0] == 0:
            return torch.empty(0, dtype=torch.float64, device=x.device)
        host = x.detach().to("cpu", torch.float64).numpy()  # trees run on the CPU: one transfer per block
        with self.controller.limit(limits=1):
            p = self.model.predict_proba(host)[:, 1]
        return torch.from_numpy(p).to(x.device)


@dataclass
class Head:
    folder: Path
    card: dict[str, Any]
    scorer: Any  # FoldedLogistic | TreeScorer
    columns: dict[torch.device, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str:
        return str(self.card["head"])

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.card["features"])

    @property
    def reads_p(self) -> bool:
        """Whether it reads target-side features (then it cannot run in the sequential cascade)."""
        return any(f in P_SIDE for f in self.features)

    def select(self, m: torch.Tensor) -> torch.Tensor:
        """This head's columns of a (k, len(MODEL_FEATURES)) matrix, in the card's order. (k, len(features))"""
        if m.shape[-1] != len(MODEL_FEATURES):
            raise artefact.ArtefactError(f"expected {len(MODEL_FEATURES)} model features, got {m.shape[-1]}")
        if m.device not in self.columns:
            idx = [MODEL_FEATURES.index(f) for f in self.features]
            self.columns[m.device] = torch.tensor(idx, dtype=torch.long, device=m.device)
        return m.index_select(-1, self.columns[m.device])

    def probability(self, m: torch.Tensor) -> torch.Tensor:
        """P(positive class of the head's label) per row of a MODEL_FEATURES matrix. (k,) float64"""
        return self.scorer(self.select(m))


_CACHE: dict[tuple[str, str], Head] = {}  # (folder, hashes of its card and model file) -> head


def load_head(folder: str | Path) -> Head:
    """Read, check and build a head (cached per folder and model file hash: sweeps build many engines)."""
    folder = Path(folder).resolve()
    card = artefact.read_card(folder)
    model_file = folder / str(card["artefact"])
    key = (
        str(folder),
        artefact.sha256_file(folder / artefact.CARD)
        + (artefact.sha256_file(model_file) if model_file.is_file() else ""),
    )
    if key in _CACHE:
        return _CACHE[key]
    if card["model"] == "logistic":
        scorer: Any = FoldedLogistic(artefact.load_logistic(folder, card))
    else:
        scorer = TreeScorer(artefact.load_tree(folder, card))
    head = Head(folder, card, scorer)
    _CACHE[key] = head
    return head
