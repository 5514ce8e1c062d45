"""Tiny model families (GPT-2, Llama, Qwen2) for the plugin's tests, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cascade.testing import build_family, isolate, make_tokenizer

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.mktemp("cascade-home"))


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
