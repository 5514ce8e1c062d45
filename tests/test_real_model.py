"""The real pretrained target (SmolLM2-135M, `cascade models fetch smollm2`), where it has been fetched.

CI does not download it (the same shape is tested on a small random model: `smollm2` in
`cascade.testing.ARCHS`); on a machine that ran `./scripts/setup.sh --real` these run too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cascade.decode.engine import Engine
from cascade.policy import load_policy
from cascade.runtime.models import load_model
from cascade.runtime.ragged import RaggedLM

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "models" / "real" / "smollm2-135m"
DRAFTER = REPO / "models" / "smollm2-drafter"
LOGIT_ATOL = 2e-3  # float32 logits (|logits| up to ~40) over 30 layers: lean and transformers agree to this

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REAL / "config.json").exists(), reason="run `cascade models fetch smollm2` first"),
]
PROMPTS = ["def fibonacci(n):\n", "import os\n\n\ndef main():\n    path = os.path.join(", "class Stack:\n"]


def replay(lm: RaggedLM) -> list[torch.Tensor]:
    """Prompts of different lengths, a verification that drops 2, 0 and 1 of 3 tokens, ragged blocks."""
    lm.reset(3, 64)
    out = [lm.forward([torch.tensor(p) for p in ([5, 9, 11, 40, 7], [3], [8, 8, 2, 90])], last_only=True)]
    out.append(lm.forward([torch.tensor(b) for b in ([1, 2, 3], [4, 5, 6], [7, 8, 9])]))
    lm.rollback([n - k for n, k in zip(lm.lengths, [2, 0, 1])])
    out.append(lm.forward([torch.tensor(b) for b in ([10], [11, 12], [13, 14, 15, 16])]))
    return out


def test_the_lean_forward_matches_transformers_on_the_real_checkpoint():
    model = load_model(str(REAL))
    for a, b in zip(replay(RaggedLM(model, "lean")), replay(RaggedLM(model, "transformers"))):
        assert torch.allclose(a, b, atol=LOGIT_ATOL), (a - b).abs().max()
        assert torch.equal(a.argmax(-1), b.argmax(-1))


@pytest.mark.skipif(not (DRAFTER / "config.json").exists(), reason="no distilled drafter")
def test_lossless_decoding_of_the_real_target_is_its_own_greedy_output():
    def tokens(name: str, **decoding) -> list[list[int]]:
        policy = load_policy(REPO / "policies" / "real" / name)
        policy = policy.derive(policy.name, {"decoding": {"max_new_tokens": 24, **decoding}}, drop=())
        return [
            g.token_ids for g in Engine.from_policy(policy).generate(PROMPTS, batch_size=decoding.get("batch_size", 1))
        ]

    reference = tokens("target-only.yaml")
    assert tokens("speculative-distilled.yaml") == reference
    assert tokens("speculative-distilled.yaml", batch_size=3) == reference
    assert tokens("speculative-ngram.yaml", batch_size=3) == reference
