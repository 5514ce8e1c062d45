"""The shipped model family and the evaluation prompts."""

import json
from pathlib import Path

import pytest
import torch

from cascade.zoo import data

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
SHIPPED = ("tiny", "mid", "target")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_and_decodes(name):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = MODELS / name
    if not (folder / "config.json").exists():
        pytest.fail(f"{folder} is missing: train it with `cascade zoo train {name}`")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tok("def fibonacci(n):\n    ", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 8 or tok.eos_token_id in out[0, ids.shape[1]:].tolist()
    assert model.config.vocab_size == len(tok) == 8192
    card = json.loads((folder / "card.json").read_text())
    for key in ("parameters", "tokens_seen", "training_minutes", "machine", "heldout_loss", "heldout_perplexity", "command"):
        assert key in card
    assert (folder / "README.md").exists()


def test_family_losses_are_ordered_and_small_enough():
    cards = {n: json.loads((MODELS / n / "card.json").read_text()) for n in SHIPPED}
    assert cards["target"]["heldout_loss"] < cards["mid"]["heldout_loss"] < cards["tiny"]["heldout_loss"]
    size = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert size < 150 * 2**20


def test_split_is_by_file_and_deterministic():
    files = [data.SourceFile(f"pkg/mod{i}.py", "x = 1\n") for i in range(400)]
    train, held = data.split_files(files)
    assert {f.relpath for f in train}.isdisjoint({f.relpath for f in held})
    assert 0 < len(held) < 60
    assert data.split_files(files) == (train, held)


def test_prompt_builder_is_deterministic_and_cuts_at_lines(tokenizer_dir):
    from transformers import AutoTokenizer

    from cascade.zoo.prompts import cases

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(60))
    files = [data.SourceFile(f"m{j}.py", text) for j in range(5)]
    a = cases(tok, n=5, seed=1, files=files)
    assert a == cases(tok, n=5, seed=1, files=files) and len(a) == 5
    for case in a:
        assert case["prompt"].endswith("\n") and (case["prompt"] + case["reference"]) in text
        assert case["source"].startswith("m") and case["python_version"] == data.python_version()


def test_shipped_prompts_file():
    rows = [json.loads(line) for line in (REPO / "prompts" / "stdlib-heldout.jsonl").read_text().splitlines()]
    assert len(rows) == 50
    assert all(r["prompt"] and r["reference"] and data.is_heldout(r["source"]) for r in rows)
