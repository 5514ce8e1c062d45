"""Tiny models and a store filled by real runs of them, built once per session for the plugin's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from learned_support import PROMPTS, log_runs, make_policy

from cascade.testing import build_family, isolate, make_tokenizer

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.mktemp("cascade-home"))


@pytest.fixture(scope="session")
def fam(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-learned")
    make_tokenizer(root / "tok")
    return build_family(root, "llama", root / "tok")


@pytest.fixture(scope="session")
def logged(fam, tmp_path_factory):
    """A store with two runs of a speculative token_v3 cascade (α = 0 and 0.5) over 16 prompts."""
    from cascade.store import Store

    root = tmp_path_factory.mktemp("logged")
    url = f"sqlite:///{root / 'log.db'}"
    ids = []
    with Store.open(url) as store:
        for alpha in (0.0, 0.5):
            pol = make_policy(root / f"log-{alpha}.yaml", fam, rule="token_v3", alpha=alpha)
            ids.append(log_runs(store, pol, PROMPTS))
    return {"url": url, "runs": ids, "root": root}


@pytest.fixture(scope="session")
def heads(logged, tmp_path_factory):
    """Heads trained on the logged runs: deferral qp / q (logistic), deferral qp (hgb), acceptance q."""
    from cascade.store import Store
    from cascade.store.queries.training import training_rows
    from cascade_learned.train import TrainConfig, train

    out = tmp_path_factory.mktemp("heads")
    with Store.open(logged["url"], create=False) as store:
        rows = training_rows(store, run_ids=logged["runs"])
    made = {}
    for name, cfg in {
        "qp-lr": TrainConfig("deferral", "qp", "logistic", "bad", min_rows=100),
        "q-lr": TrainConfig("deferral", "q", "logistic", "bad", min_rows=100),
        "qp-hgb": TrainConfig("deferral", "qp", "hgb", "bad", min_rows=100),
        "acc-lr": TrainConfig("acceptance", "q", "logistic", "accepted", min_rows=100),
    }.items():
        train(rows, cfg, out / name, say=lambda m: None)
        made[name] = out / name
    return made
