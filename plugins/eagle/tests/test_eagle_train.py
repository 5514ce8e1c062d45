"""Training a head: the unrolled forward equals drafting; cards, checkpoints, resume."""

from __future__ import annotations

import json

import pytest
import torch
from cascade_eagle import features as T
from cascade_eagle.head import load_head
from cascade_eagle.train import TrainSettings, train, unrolled
from eagle_helpers import PROMPT, eagle

from cascade.errors import CascadeError


def test_training_unrolls_exactly_what_drafting_computes(family):
    """Step k of the unrolled training forward at index i equals drafting depth k after the context x_0..x_{i+1}."""
    f = family("llama")
    e = eagle(f, options={"dtype": "float32"})
    head, model = e.drafter.head, e.target_model
    ids = e.encode(PROMPT)[None, :20]
    with torch.no_grad():
        feats, embeds = T.target_features(model, ids), T.embed(model, ids)
        outs = unrolled(head, feats, embeds, 3)
        i = 9
        g, k, v = head.step(feats[:, : i + 1], embeds[:, 1 : i + 2], torch.arange(i + 1)[None], None, None)
        past, g = (k, v), g[:, -1:]
        assert torch.allclose(g[:, 0], outs[0][:, i], atol=1e-5)
        for depth in (1, 2):  # the drafted path is the window's own tokens here
            g, k, v = head.step(g, embeds[:, i + depth + 1 : i + depth + 2], torch.tensor([[i + depth]]), past, None)
            past = (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
            assert torch.allclose(g[:, 0], outs[depth][:, i], atol=1e-5)


def test_training_writes_a_card_and_resumes(family, tmp_path):
    from eagle_helpers import tiny_split

    f = family("qwen2")
    s = TrainSettings(tokens=2 * 64 * 3, batch=2, seq_len=64, steps_ahead=2, warmup=1, eval_windows=2, bf16=False)
    logs: list[str] = []
    out = train(f["target"], tmp_path / "h", tmp_path / "work", s, log=logs.append, split=tiny_split())
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == 3 and len(card["heldout_top1_acceptance_by_depth"]) == 2
    assert (out / "README.md").read_text().startswith("# cascade-eagle-target")
    more = TrainSettings(**{**s.__dict__, "tokens": 2 * 64 * 5})
    train(f["target"], tmp_path / "h", tmp_path / "work", more, log=logs.append, split=tiny_split())
    assert any("resumed at step 3" in m for m in logs)
    assert json.loads((out / "card.json").read_text())["steps"] == 5
    assert load_head(out).cfg.hidden == 64
    other = TrainSettings(**{**more.__dict__, "steps_ahead": 3})
    with pytest.raises(CascadeError, match="other settings .*steps_ahead: 2 -> 3"):
        train(f["target"], tmp_path / "h", tmp_path / "work", other, log=logs.append, split=tiny_split())


def test_a_head_trains_for_a_target_with_another_eos_and_a_vocabulary_past_uint16(tmp_path):
    """The corpus ends files with the target tokenizer's own EOS and keeps ids past 65535 (issue: the zoo's
    EOS by name, and uint16)."""
    import numpy as np
    from eagle_helpers import tiny_split

    from cascade.testing import build_model, make_wide_tokenizer

    make_wide_tokenizer(tmp_path / "tok")
    target = tmp_path / "target"
    build_model("llama", target, 0, tmp_path / "tok", vocab=70_000, hidden=32)
    s = TrainSettings(tokens=2 * 64 * 2, batch=2, seq_len=64, steps_ahead=2, warmup=1, eval_windows=2, bf16=False)
    out = train(target, tmp_path / "h", tmp_path / "work", s, log=lambda m: None, split=tiny_split())
    ids = np.load(tmp_path / "work" / "train.npy")
    assert ids.dtype == np.uint32 and ids[-1] == 69_999  # "</s>", the last id of a 70000-token vocabulary
    assert json.loads((out / "card.json").read_text())["steps"] == 2
