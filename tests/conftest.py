"""Shared fixtures over cascade.testing: a tokenizer and tiny model families, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cascade.testing import ARCHS, build_family, family_builder, make_tokenizer, policy_dict, write_policy  # noqa: F401

torch.set_num_threads(1)  # tiny models: one thread is faster and leaves a core for the rest


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tokenizer_dir(tiny_root) -> Path:
    out = tiny_root / "tokenizer"
    make_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def family(tiny_root, tokenizer_dir):
    """arch -> {"target": dir, "near": dir (noisy copy), "small": dir (a smaller model)}."""
    return family_builder(tiny_root, tokenizer_dir)


@pytest.fixture(autouse=True)
def _own_store_home(monkeypatch, tmp_path_factory):
    """No test writes to the user's default store: the default lives in a temporary folder."""
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path_factory.mktemp("cascade-home")))


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
