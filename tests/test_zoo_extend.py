"""`cascade zoo extend`: longer contexts by training new position rows only, all else bit for bit."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cascade.zoo import extend as ext

POSITIONS = 2560


def member(tmp_path, tokenizer_dir):
    """A GPT-2 family member with 64 positions, saved in fp16 as the shipped ones are."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    folder = tmp_path / "models" / "tiny"
    GPT2LMHeadModel(cfg).to(torch.float16).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "card.json").write_text(json.dumps({"name": "cascade-tiny", "heldout_loss": 5.0}))
    work = tmp_path / "work"
    corpus = ext.corpus_folder(tok, work)
    corpus.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, files in (("train", 40), ("heldout", 3)):  # files of 3000 tokens: each holds a long window
        ids = rng.integers(1, len(tok), files * 3001).astype(np.uint16)
        spans = np.array([(i * 3001, i * 3001 + 3000) for i in range(files)], dtype=np.int64)
        np.savez(corpus / f"{split}.npz", ids=ids, spans=spans)
    return folder, work


@pytest.mark.slow
def test_extending_trains_only_the_new_rows_and_keeps_the_model_on_short_contexts(tmp_path, tokenizer_dir):
    from transformers import GPT2LMHeadModel

    folder, work = member(tmp_path, tokenizer_dir)
    before = load_file(folder / "model.safetensors")
    short = torch.randint(1, 300, (1, 64))
    with torch.no_grad():
        old_logits = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32)(input_ids=short).logits
    logs: list[str] = []
    s = ext.ExtendSettings(positions=POSITIONS, tokens=3 * 2 * POSITIONS)
    ext.extend("tiny", folder.parent, work, s, log=logs.append)
    after = load_file(folder / "model.safetensors")
    for name, t in before.items():
        if name == "transformer.wpe.weight":
            assert after[name].shape == (POSITIONS, 32) and torch.equal(after[name][:64], t)
        else:
            assert torch.equal(after[name], t), name  # every other weight, bit for bit
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32)
    assert model.config.n_positions == POSITIONS
    with torch.no_grad():
        assert torch.equal(model(input_ids=short).logits, old_logits)  # the same model on 64 tokens
        model(input_ids=torch.randint(1, 300, (1, POSITIONS)))  # and it reads 2560
    trained = load_file(work / f"tiny-extend-{POSITIONS}" / "state.safetensors")["table"]
    start = torch.cat(
        [before["transformer.wpe.weight"].float(), before["transformer.wpe.weight"].float()[-64:].repeat(39, 1)]
    )
    assert torch.equal(trained[:64], start[:64]) and not torch.equal(trained[64:], start[64:])  # new rows moved
    card = json.loads((folder / "card.json").read_text())
    assert card["heldout_loss"] == 5.0  # the member's own card, with the extension added
    long = card["long_context"]
    assert (
        long["positions"] == POSITIONS
        and long["steps"] == 3
        and set(long["heldout_loss_by_context"]) == {"512", "1024", "2048"}
    )
    assert "cascade zoo extend tiny --positions 2560" in long["command"]
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == POSITIONS
    assert any("validation loss" in m for m in logs)


@pytest.mark.slow
def test_a_rerun_resumes_only_with_the_same_settings(tmp_path, tokenizer_dir):
    folder, work = member(tmp_path, tokenizer_dir)
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    ext.extend("tiny", folder.parent, work, ext.ExtendSettings(positions=POSITIONS, tokens=2 * POSITIONS), log=print)
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)
    logs: list[str] = []
    ext.extend(
        "tiny", folder.parent, work, ext.ExtendSettings(positions=POSITIONS, tokens=4 * POSITIONS), log=logs.append
    )
    assert any("resumed at step 1" in m for m in logs)
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)
    with pytest.raises(ValueError, match="other settings"):
        ext.extend("tiny", folder.parent, work, ext.ExtendSettings(positions=POSITIONS, lr=1e-2, tokens=4 * POSITIONS))


def test_bad_requests_are_refused(tmp_path, tokenizer_dir):
    folder, work = member(tmp_path, tokenizer_dir)
    with pytest.raises(ValueError, match="budget"):
        ext.extend("tiny", folder.parent, work, ext.ExtendSettings(positions=POSITIONS))
    with pytest.raises(ValueError, match="already has 64 positions"):
        ext.extend("tiny", folder.parent, work, ext.ExtendSettings(positions=32, tokens=10))
    with pytest.raises(ValueError, match="no training file has"):
        ext.extend("tiny", folder.parent, work, ext.ExtendSettings(positions=4096, tokens=10))
