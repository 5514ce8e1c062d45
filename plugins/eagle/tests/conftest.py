"""Tiny model families (GPT-2, Llama, Qwen2) and an EAGLE head trained a few steps on each target."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from eagle_helpers import tiny_split

from cascade.testing import family_builder, isolate, make_tokenizer

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.mktemp("cascade-home"))


@pytest.fixture(scope="session")
def family(tmp_path_factory):
    """arch -> {"target", "near", "small", "head"}: the tiny family and a head trained on its target."""
    from cascade_eagle.train import TrainSettings, train

    root = tmp_path_factory.mktemp("tiny-eagle")
    make_tokenizer(root / "tok")

    def head(arch: str, folders: dict[str, Path]) -> dict[str, Path]:
        s = TrainSettings(
            tokens=4 * 64 * 200, batch=4, seq_len=64, steps_ahead=3, lr=3e-3, warmup=2, eval_windows=8, bf16=False
        )
        return {
            "head": train(
                folders["target"],
                root / arch / "head",
                root / arch / "head.work",
                s,
                log=lambda m: None,
                split=tiny_split(),
            )
        }

    return family_builder(root, root / "tok", head)
