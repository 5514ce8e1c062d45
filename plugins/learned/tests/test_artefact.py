"""Heads on disk: folding, writing, and refusing what must not load (tampered, mismatched, unknown)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cascade.errors import CascadeError
from cascade_learned import artefact
from cascade_learned.heads import FoldedLogistic, load_head
from cascade_learned.train import make_model

FEATS = ["q_x", "q_max", "q_entropy", "position"]


def data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATS))) * [1.0, 3.0, 0.2, 10.0] + [0.5, -1.0, 2.0, 4.0]
    y = (x[:, 0] + 0.3 * x[:, 1] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    x[rng.random(x.shape) < 0.1] = np.nan  # absent values: imputed with the training mean
    return x, y


def card(model: str) -> dict:
    return {"head": "deferral", "model": model, "features": FEATS, "sklearn_version": __import__("sklearn").__version__}


def test_folded_logistic_equals_sklearn_predict_proba():
    x, y = data()
    pipe = make_model("logistic", 0).fit(x, y)
    folded = FoldedLogistic(artefact.fold_logistic(pipe))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(folded, pipe.predict_proba(x)[:, 1], rtol=0, atol=1e-12)


def test_logistic_head_round_trip_scores_on_tensors(tmp_path):
    x, y = data()
    pipe = make_model("logistic", 0).fit(x, y)
    artefact.write_head(tmp_path / "h", card("logistic"), artefact.fold_logistic(pipe))
    head = load_head(tmp_path / "h")
    assert head.features == tuple(FEATS) and not head.reads_p
    assert json.loads((tmp_path / "h" / "model.json").read_text())["features"] == FEATS  # plain JSON numbers
    m = torch.full((len(x), 16), 7.0)  # a MODEL_FEATURES matrix: the head picks its own columns by name
    from cascade.features import MODEL_FEATURES

    for j, f in enumerate(FEATS):
        m[:, MODEL_FEATURES.index(f)] = torch.from_numpy(x[:, j])
    np.testing.assert_allclose(head.probability(m.double()).numpy(), pipe.predict_proba(x)[:, 1], atol=1e-6)


def hgb_head(tmp_path: Path) -> Path:
    x, y = data()
    model = make_model("hgb", 0).fit(x, y)
    artefact.write_head(tmp_path / "t", card("hgb"), model)
    return tmp_path / "t"


def test_tree_head_loads_with_the_allow_list_only(tmp_path):
    folder = hgb_head(tmp_path)
    assert artefact.untrusted_types(folder / "model.skops") == list(artefact.TRUSTED_TYPES)
    head = load_head(folder)
    x, _ = data(8, seed=1)
    p = head.scorer(torch.from_numpy(x))
    assert p.shape == (8,) and ((p >= 0) & (p <= 1)).all()


def test_tampered_artefact_with_a_dangerous_type_is_refused_before_loading(tmp_path, monkeypatch):
    import skops.io as sio

    folder = hgb_head(tmp_path)
    model = sio.load(folder / "model.skops", trusted=list(artefact.TRUSTED_TYPES))
    model.hook = os.system  # what an attacker would smuggle in: a callable that runs shell commands
    sio.dump(model, folder / "model.skops")
    c = json.loads((folder / "card.json").read_text())
    c["artefact_sha256"] = artefact.sha256_file(folder / "model.skops")  # the attacker rewrites the card too
    (folder / "card.json").write_text(json.dumps(c))
    calls = []
    monkeypatch.setattr(sio, "load", lambda *a, **k: calls.append(a) or pytest.fail("skops.io.load was called"))
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or pytest.fail("os.system was called"))
    with pytest.raises(artefact.ArtefactError, match=r"outside the allow-list.*posix\.system|system"):
        load_head(folder)
    assert calls == []


def test_changed_model_file_is_refused_by_its_hash(tmp_path):
    folder = hgb_head(tmp_path)
    with open(folder / "model.skops", "ab") as f:
        f.write(b"\0")
    with pytest.raises(artefact.ArtefactError, match="sha256"):
        load_head(folder)


def test_other_sklearn_minor_version_is_refused(tmp_path):
    folder = hgb_head(tmp_path)
    c = json.loads((folder / "card.json").read_text())
    c["sklearn_version"] = "0.99.0"
    (folder / "card.json").write_text(json.dumps(c))
    with pytest.raises(artefact.ArtefactError, match="major.minor"):
        load_head(folder)


def test_feature_lists_must_match_and_be_known(tmp_path):
    x, y = data()
    params = artefact.fold_logistic(make_model("logistic", 0).fit(x, y))
    artefact.write_head(tmp_path / "a", {**card("logistic"), "features": [*FEATS[:-1], "hidden_state_7"]}, params)
    with pytest.raises(artefact.ArtefactError, match="hidden_state_7.*not computed"):
        load_head(tmp_path / "a")
    artefact.write_head(tmp_path / "b", card("logistic"), params)
    c = json.loads((tmp_path / "b" / "card.json").read_text())
    c["features"] = list(reversed(FEATS))  # same names, another order: the weights would be misapplied
    (tmp_path / "b" / "card.json").write_text(json.dumps(c))
    with pytest.raises(artefact.ArtefactError, match="feature list"):
        load_head(tmp_path / "b")


def test_missing_or_foreign_folders_are_clear_errors(tmp_path):
    with pytest.raises(CascadeError, match="not a folder"):
        load_head(tmp_path / "nope")
    (tmp_path / "e").mkdir()
    with pytest.raises(CascadeError, match="no card.json"):
        load_head(tmp_path / "e")


def test_no_pickle_or_joblib_anywhere_in_the_plugin():
    src = Path(artefact.__file__).parent
    for path in src.glob("*.py"):
        code = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(pickle|joblib|cloudpickle|dill)\b", code, re.M), path
        assert "torch.load(" not in code, path
