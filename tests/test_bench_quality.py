"""Quality measures: chrF (sacrebleu) and the target's log-prob of emitted tokens against a manual forward."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from cascade.bench import quality


def test_chrf_of_identical_strings_is_100_and_lower_otherwise():
    text = "def add(a, b):\n    return a + b\n"
    assert quality.chrf(text, text) == pytest.approx(100.0)
    assert 0 < quality.chrf("def add(a, c):\n    return a\n", text) < 100
    assert quality.chrf("", text) == 0.0


def test_corpus_chrf_skips_missing_references():
    assert quality.corpus_chrf(["abc", "xyz"], ["abc", None]) == pytest.approx(100.0)
    assert math.isnan(quality.corpus_chrf(["abc"], [None]))
    assert quality.corpus_chrf(["abc def", "ghi"], ["abc def", "jkl"]) < 100


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_token_logprobs_match_a_manual_forward(family, arch):
    model = AutoModelForCausalLM.from_pretrained(family(arch)["target"]).eval()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(1, 300, (9,), generator=g).tolist()
    generated = torch.randint(1, 300, (6,), generator=g).tolist()
    got = quality.token_logprobs(model, prompt, generated)
    manual = []
    with torch.no_grad():
        for i, tok in enumerate(generated):
            ids = torch.tensor([prompt + generated[:i]])
            logits = model(input_ids=ids).logits[0, -1]
            manual.append(torch.log_softmax(logits.float(), -1)[tok].item())
    assert got.shape == (6,)
    assert got.tolist() == pytest.approx(manual, abs=1e-4)
    assert quality.mean_logprob(model, prompt, generated) == pytest.approx(sum(manual) / 6, abs=1e-4)
    assert all(v <= 0 for v in got.tolist())


def test_logprob_edge_cases(family):
    model = AutoModelForCausalLM.from_pretrained(family("gpt2")["target"]).eval()
    assert quality.token_logprobs(model, [5, 6], []).numel() == 0
    assert math.isnan(quality.mean_logprob(model, [5, 6], []))
    with pytest.raises(ValueError):
        quality.token_logprobs(model, [], [5])


def test_relative_and_delta():
    assert quality.relative(49.5, 50.0) == pytest.approx(0.99)
    assert math.isnan(quality.relative(1.0, 0.0)) and math.isnan(quality.relative(math.nan, 2.0))
    assert quality.delta(-1.5, -1.2) == pytest.approx(-0.3)
