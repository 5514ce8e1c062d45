"""The shipped model family and the evaluation prompts."""

import json
from pathlib import Path

import numpy as np
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
    assert out.shape[1] == ids.shape[1] + 8 or tok.eos_token_id in out[0, ids.shape[1] :].tolist()
    assert model.config.vocab_size == len(tok) == 8192
    card = json.loads((folder / "card.json").read_text())
    for key in (
        "parameters",
        "tokens_seen",
        "training_minutes",
        "machine",
        "heldout_loss",
        "heldout_perplexity",
        "command",
    ):
        assert key in card
    assert (folder / "README.md").exists()


def test_family_losses_are_ordered_and_small_enough():
    cards = {n: json.loads((MODELS / n / "card.json").read_text()) for n in SHIPPED}
    assert cards["target"]["heldout_loss"] < cards["mid"]["heldout_loss"] < cards["tiny"]["heldout_loss"]
    shipped = [f for f in MODELS.rglob("*") if f.is_file() and "real" not in f.relative_to(MODELS).parts[:1]]
    size = sum(f.stat().st_size for f in shipped)  # models/real/ (git-ignored) holds fetched models
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
        whole = case["prompt"] + case["reference"]
        assert whole in text and (case["prompt"].endswith("\n") or case["reference"].startswith("\n"))  # a line end
        ids = tok(whole, add_special_tokens=False)["input_ids"]
        prompt_ids = tok(case["prompt"], add_special_tokens=False)["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids  # the prompt ends on a token boundary of the whole text
        assert case["source"].startswith("m") and case["python_version"] == data.python_version()


def test_shipped_prompts_files():
    from cascade.bench.completion import parses

    held = [json.loads(line) for line in (REPO / "prompts" / "stdlib-heldout.jsonl").read_text().splitlines()]
    train = [json.loads(line) for line in (REPO / "prompts" / "stdlib-train.jsonl").read_text().splitlines()]
    assert len(held) >= 200 and len(train) >= 200
    assert all(r["prompt"] and r["reference"] and data.is_heldout(r["source"]) for r in held)
    assert all(r["prompt"] and r["reference"] and not data.is_heldout(r["source"]) for r in train)
    # each prompt opens at a statement: prompt + reference is Python (what `parses` measures)
    assert all(parses(r["prompt"], r["reference"]) for r in held + train)


def test_prompts_open_at_a_statement_and_cut_before_one(tokenizer_dir):
    from transformers import AutoTokenizer

    from cascade.zoo.prompts import cases

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    body = "".join(
        f"    def m{i}(self, x):\n        if x:\n            return x + {i}\n        return ({i},\n                x)\n"
        for i in range(30)
    )
    text = "class C:\n" + body
    for case in cases(tok, n=6, seed=3, files=[data.SourceFile("c.py", text)], max_prompt_tokens=60):
        first = case["prompt"].splitlines()[0].strip()
        assert first.startswith(("def ", "if ", "return ")), first  # never a continuation line
        assert case["reference"].lstrip().startswith(("def ", "if ", "return ")), case["reference"][:30]


@pytest.mark.slow
def test_training_checkpoints_resumes_and_exports(tmp_path, tokenizer_dir):
    """Two short runs: the second resumes the first's checkpoint; the export loads with from_pretrained."""
    import shutil

    import numpy as np
    from transformers import AutoModelForCausalLM

    from cascade.zoo import train as zoo_train

    work = tmp_path / "work"
    shutil.copytree(tokenizer_dir, work / "tokenizer")
    rng = np.random.default_rng(0)
    np.save(work / "train.npy", rng.integers(0, 320, 20_000).astype(np.uint16))
    np.save(work / "heldout.npy", rng.integers(0, 320, 2 * zoo_train.SEQ_LEN + 1).astype(np.uint16))
    per_step = zoo_train.FAMILY["tiny"].batch * zoo_train.SEQ_LEN
    logs: list[str] = []
    zoo_train.train("tiny", tmp_path / "models", work, tokens=2 * per_step, log=logs.append)
    first = json.loads((tmp_path / "models" / "tiny" / "card.json").read_text())
    assert first["steps"] == 2 and first["tokens_seen"] == 2 * per_step
    zoo_train.train("tiny", tmp_path / "models", work, tokens=3 * per_step, log=logs.append)
    second = json.loads((tmp_path / "models" / "tiny" / "card.json").read_text())
    assert second["steps"] == 3 and any("resumed at step 2" in m for m in logs)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "models" / "tiny")
    assert model.config.vocab_size == zoo_train.VOCAB_SIZE and "cascade zoo train tiny" in second["command"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_members_read_long_contexts(name):
    """`cascade zoo extend`: 2560 positions, trained rows past 512 only, held-out loss reported by context."""
    config = json.loads((MODELS / name / "config.json").read_text())
    long = json.loads((MODELS / name / "card.json").read_text())["long_context"]
    assert config["n_positions"] == long["positions"] >= 2048 and long["from_positions"] == 512
    assert set(long["heldout_loss_by_context"]) == {"512", "1024", "2048"}
    assert long["heldout_loss_by_context"]["512"] == long["heldout_loss_by_context_before"]["512"]  # short: as before


def test_shipped_long_prompts():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODELS / "tiny")
    rows = [json.loads(line) for line in (REPO / "prompts" / "stdlib-heldout-long.jsonl").read_text().splitlines()]
    assert len(rows) >= 16 and len({r["source"] for r in rows}) >= 16  # one cut per file
    assert all(data.is_heldout(r["source"]) and r["reference"] for r in rows)
    assert all(2048 <= len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) <= 2300 for r in rows)


def test_files_end_with_the_tokenizers_own_eos_in_a_wide_enough_dtype(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    from cascade.testing import make_wide_tokenizer

    files = [data.SourceFile("a.py", "x = 1\n"), data.SourceFile("b.py", "y = 2\n")]
    family = data.encode_files(AutoTokenizer.from_pretrained(tokenizer_dir), files)
    assert family.dtype == np.uint16 and list(family).count(0) == 2  # the family's EOS is id 0
    wide = make_wide_tokenizer(tmp_path / "wide")  # EOS "</s>" at id 69999, no <|endoftext|>
    ids = data.encode_files(wide, files)
    assert ids.dtype == np.uint32 and list(ids).count(69_999) == 2 and ids[-1] == 69_999
    assert wide.decode(ids[: list(ids).index(69_999)]) == "x = 1\n"


def test_spread_prompts_are_the_shipped_ones_with_the_first_n_from_n_files():
    from cascade.zoo.prompts import spread_by_source

    held = [json.loads(line) for line in (REPO / "prompts" / "stdlib-heldout.jsonl").read_text().splitlines()]
    spread = [json.loads(line) for line in (REPO / "prompts" / "stdlib-heldout-spread.jsonl").read_text().splitlines()]
    assert spread == spread_by_source(held)  # `cascade zoo prompts --spread`: the same rows, reordered
    files = {r["source"] for r in held}
    assert [len({r["source"] for r in spread[:n]}) for n in (10, 30, len(files))] == [10, 30, len(files)]
    assert spread_by_source([{"source": "a", "i": 0}, {"source": "a", "i": 1}, {"source": "b", "i": 2}]) == [
        {"source": "a", "i": 0},
        {"source": "b", "i": 2},
        {"source": "a", "i": 1},
    ]
