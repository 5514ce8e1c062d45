"""A learned head on disk, and loading it safely.

A head is a folder:

    card.json     what it is: head, features (names and order), label, model type, versions,
                  training data (query, sha256), held-out metrics, the model file and its sha256
    model.json    a logistic head: plain JSON numbers (the scaler folded into the weights)
    model.skops   a tree head (HistGradientBoostingClassifier), in skops' format

No pickle or joblib, ever: loading a pickle runs whatever code it names. A skops file is
checked before anything in it is built: `skops.io.get_untrusted_types` lists the types it
holds beyond skops' defaults, and any type outside `TRUSTED_TYPES` (written here, in code)
refuses the file. The list is passed to `load` as `trusted`; what the file asks for never is.
A head is also refused when its card does not match its model file (sha256, feature list),
names a feature this cascade does not compute, or (skops) was written by another
scikit-learn major.minor (tree internals change between minor versions). A logistic head
is plain numbers and needs no scikit-learn to load or to score.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cascade import MODEL_FEATURES, CascadeError

FORMAT = "cascade-learned/1"
CARD = "card.json"
LOGISTIC_FILE = "model.json"
SKOPS_FILE = "model.skops"
HEADS = ("deferral", "acceptance")
MODELS = {"logistic": LOGISTIC_FILE, "hgb": SKOPS_FILE}

TRUSTED_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)
"""Types a skops artefact may hold beyond skops' default-trusted ones (scikit-learn estimators, numpy
arrays, builtins): what a HistGradientBoostingClassifier needs. Anything else is refused."""
TREE_CLASS = "HistGradientBoostingClassifier"


class ArtefactError(CascadeError):
    """A head that cannot be used: missing, malformed, tampered with, or from another version."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def major_minor(version: str) -> tuple[int, ...]:
    parts = []
    for p in version.split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@dataclass(frozen=True)
class LogisticParams:
    """σ(x̃·w + b) with x̃ = x where present, `fill` (the training mean) where NaN: exact folding of
    SimpleImputer(mean) → StandardScaler → LogisticRegression."""

    weights: tuple[float, ...]
    intercept: float
    fill: tuple[float, ...]


def fold_logistic(pipeline: Any) -> LogisticParams:
    """The two vectors and the intercept of a fitted Pipeline(SimpleImputer, StandardScaler, LogisticRegression)."""
    imputer, scaler, lr = (pipeline.named_steps[k] for k in ("impute", "scale", "model"))
    coef = lr.coef_[0]
    scale = scaler.scale_
    w = coef / scale
    b = float(lr.intercept_[0] - (coef * scaler.mean_ / scale).sum())
    return LogisticParams(tuple(float(v) for v in w), b, tuple(float(v) for v in imputer.statistics_))


def write_head(out: Path, card: dict[str, Any], model: Any) -> Path:
    """Write `model` (LogisticParams, or a fitted tree for skops) and its card into folder `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, LogisticParams):
        path = out / LOGISTIC_FILE
        data = {
            "format": FORMAT,
            "features": card["features"],
            "weights": list(model.weights),
            "intercept": model.intercept,
            "fill": list(model.fill),
        }
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    else:
        import skops.io as sio

        path = out / SKOPS_FILE
        sio.dump(model, path)
    card = {**card, "format": FORMAT, "artefact": path.name, "artefact_sha256": sha256_file(path)}
    (out / CARD).write_text(json.dumps(card, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out / CARD


def read_card(folder: Path) -> dict[str, Any]:
    path = folder / CARD
    if not folder.is_dir():
        raise ArtefactError(f"no learned head at {folder}: not a folder (train one with `cascade rules train`)")
    if not path.is_file():
        raise ArtefactError(f"{folder}: no {CARD}; a head folder holds {CARD} and its model (`cascade rules train`)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"{path}: not valid JSON ({exc})") from None
    problems = []
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ArtefactError(f"{path}: not a cascade-learned card (format {FORMAT!r} expected)")
    if card.get("head") not in HEADS:
        problems.append(f"head must be one of {HEADS}, got {card.get('head')!r}")
    if card.get("model") not in MODELS:
        problems.append(f"model must be one of {tuple(MODELS)}, got {card.get('model')!r}")
    elif card.get("artefact") != MODELS[card["model"]]:
        problems.append(f"a {card['model']} head is stored in {MODELS[card['model']]}, not {card.get('artefact')!r}")
    feats = card.get("features")
    if not isinstance(feats, list) or not feats or len(set(feats)) != len(feats):
        problems.append("features must be a non-empty list of distinct names")
    else:
        unknown = [f for f in feats if f not in MODEL_FEATURES]
        if unknown:
            problems.append(
                f"features {unknown} are not computed by this cascade (cascade.features.MODEL_FEATURES: "
                f"{', '.join(MODEL_FEATURES)}); retrain the head"
            )
    if problems:
        raise ArtefactError(f"{path}: refused: " + "; ".join(problems))
    return card


def _check_hash(folder: Path, card: dict[str, Any]) -> Path:
    path = folder / card["artefact"]
    if not path.is_file():
        raise ArtefactError(f"{folder}: {card['artefact']} is missing")
    digest = sha256_file(path)
    if digest != card.get("artefact_sha256"):
        raise ArtefactError(
            f"{path}: refused: its sha256 {digest[:12]}… is not the card's "
            f"{str(card.get('artefact_sha256'))[:12]}… (changed after training?)"
        )
    return path


def load_logistic(folder: Path, card: dict[str, Any]) -> LogisticParams:
    path = _check_hash(folder, card)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        w, fill, b = data["weights"], data["fill"], data["intercept"]
        names = data["features"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtefactError(f"{path}: not a logistic head ({type(exc).__name__}: {exc})") from None
    if names != card["features"]:
        raise ArtefactError(f"{path}: refused: its feature list {names} is not the card's {card['features']}")
    n = len(names)
    numbers = [*w, *fill, b]
    if len(w) != n or len(fill) != n or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
        raise ArtefactError(f"{path}: refused: expected {n} finite weights and fill values and a finite intercept")
    return LogisticParams(tuple(map(float, w)), float(b), tuple(map(float, fill)))


def untrusted_types(path: Path) -> list[str]:
    """Types in a skops file beyond skops' defaults (read from its schema; nothing is built)."""
    import skops.io as sio

    try:
        return list(sio.get_untrusted_types(file=path))
    except Exception as exc:  # a corrupt zip or schema: never try to load it
        raise ArtefactError(f"{path}: not a readable skops file ({type(exc).__name__}: {exc})") from None


def load_tree(folder: Path, card: dict[str, Any]) -> Any:
    """The tree model of a head, after the checks of the module docstring."""
    import warnings

    import sklearn
    import skops.io as sio

    path = _check_hash(folder, card)
    written = str(card.get("sklearn_version", "?"))
    if major_minor(written) != major_minor(sklearn.__version__):
        raise ArtefactError(
            f"{path}: refused: written by scikit-learn {written}, this is {sklearn.__version__} "
            "(major.minor must match); retrain the head with this version"
        )
    extra = sorted(set(untrusted_types(path)) - set(TRUSTED_TYPES))
    if extra:
        raise ArtefactError(
            f"{path}: refused: it holds types outside the allow-list "
            f"(cascade_learned.artefact.TRUSTED_TYPES): {', '.join(extra)}"
        )
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        try:
            model = sio.load(path, trusted=list(TRUSTED_TYPES))
        except InconsistentVersionWarning as exc:
            raise ArtefactError(f"{path}: refused: {exc}") from None
        except Exception as exc:
            raise ArtefactError(f"{path}: cannot load ({type(exc).__name__}: {exc})") from None
    if type(model).__name__ != TREE_CLASS:
        raise ArtefactError(f"{path}: refused: holds a {type(model).__name__}, a tree head holds a {TREE_CLASS}")
    if getattr(model, "n_features_in_", None) != len(card["features"]):
        raise ArtefactError(
            f"{path}: refused: the model reads {getattr(model, 'n_features_in_', '?')} features, "
            f"the card lists {len(card['features'])}"
        )
    return model
