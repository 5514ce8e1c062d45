"""`cascade zoo distill`: a small same-tokenizer student trained on the target's distributions."""

from __future__ import annotations

import json

import pytest
import torch

from cascade.runtime.models import load_model
from cascade.testing import CORPUS
from cascade.zoo.data import SourceFile
from cascade.zoo.distill import DistillSettings, distill, evaluate, init_student

pytestmark = pytest.mark.slow  # trains for a few seconds

SPLIT = ([SourceFile("train.py", CORPUS * 2)], [SourceFile("held.py", CORPUS[: len(CORPUS) // 2])])
SETTINGS = DistillSettings(
    tokens=40 * 4 * 64,
    hidden=32,
    layers=2,
    heads=2,
    kv_heads=1,
    intermediate=64,
    seq_len=64,
    batch=4,
    lr=1e-2,
    warmup=2,
    eval_windows=4,
)


def test_distillation_moves_the_student_toward_the_target_and_resumes(family, tmp_path):
    import numpy as np

    target_dir = family("smollm2")["target"]
    target = load_model(str(target_dir))
    logs: list[str] = []
    out = distill(target_dir, tmp_path / "d", tmp_path / "work", SETTINGS, log=logs.append, split=SPLIT)
    card = json.loads((out / "card.json").read_text())
    student = load_model(str(out))
    cfg = student.config
    assert cfg.vocab_size == target.config.vocab_size and cfg.tie_word_embeddings
    assert cfg.rope_parameters["rope_theta"] == 100000.0  # the target's θ
    assert card["steps"] == 40 and card["command"].startswith("cascade zoo distill --target")
    held = np.load(tmp_path / "work" / "heldout.npy")
    torch.manual_seed(0)
    untrained = evaluate(init_student(target, SETTINGS), target, held, SETTINGS)
    assert card["heldout_kl"] < 0.7 * untrained["heldout_kl"]  # it learnt the target's distributions
    more = DistillSettings(**{**SETTINGS.__dict__, "tokens": 45 * 4 * 64})
    distill(target_dir, tmp_path / "d", tmp_path / "work", more, log=logs.append, split=SPLIT)
    assert any("resumed at step 40" in m for m in logs)
    assert json.loads((out / "card.json").read_text())["steps"] == 45


def test_the_student_starts_from_the_targets_embedding_geometry(family):
    target = load_model(str(family("llama")["target"]))
    student = init_student(target, SETTINGS)
    e, s = target.get_input_embeddings().weight, student.get_input_embeddings().weight
    assert s.shape == (e.shape[0], SETTINGS.hidden)
    near_t = torch.cdist(e[:50], e[:50]).argsort(-1)[:, 1]
    near_s = torch.cdist(s[:50], s[:50]).argsort(-1)[:, 1]
    assert (near_t == near_s).float().mean() > 0.3  # neighbours survive the projection (chance: 1/49)
