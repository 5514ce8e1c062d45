"""Tiny model families (GPT-2, Llama, Qwen2) for the plugin's tests, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cascade.testing import build_family, make_tokenizer

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path_factory.mktemp("cascade-home")))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def family(tmp_path_factory):
    """arch -> {"target", "near", "small"} model folders (cascade.testing.build_family)."""
    root = tmp_path_factory.mktemp("tiny-sparse-kv")
    make_tokenizer(root / "tok")
    cache: dict[str, dict[str, Path]] = {}

    def get(arch: str) -> dict[str, Path]:
        if arch not in cache:
            cache[arch] = build_family(root, arch, root / "tok")
        return cache[arch]

    return get
