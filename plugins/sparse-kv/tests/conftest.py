"""Tiny model families (GPT-2, Llama, Qwen2) for the plugin's tests, built once per session."""

from __future__ import annotations

import pytest
import torch

from cascade.testing import family_builder, isolate, make_tokenizer

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.mktemp("cascade-home"))


@pytest.fixture(scope="session")
def family(tmp_path_factory):
    """arch -> {"target", "near", "small"} model folders (cascade.testing.build_family)."""
    root = tmp_path_factory.mktemp("tiny-sparse-kv")
    make_tokenizer(root / "tok")
    return family_builder(root, root / "tok")
