"""The lean forward against transformers' own, on the same weights, caches, masks and positions."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from cascade.decode.engine import Engine
from cascade.errors import CascadeError
from cascade.policy import parse_policy
from cascade.runtime.lean import lean_forward
from cascade.runtime.ragged import RaggedLM
from cascade.testing import ARCHS, make_config, policy_dict, sharpen

ATOL = 1e-4  # float32 logits of the tiny test models (|logits| up to ~30): lean and transformers agree to this


def model(arch: str, **cfg):
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(make_config(arch, **cfg)).eval()
    sharpen(m)
    return m


def run(lm: RaggedLM, script) -> list[torch.Tensor]:
    """Replay a script of (blocks, keep lengths or None) on a fresh batch of 3; the logits of every forward."""
    lm.reset(3, 128)
    out = [lm.forward([torch.tensor(x, device=lm.device) for x in script[0]], last_only=True)]
    for blocks, keep in script[1:]:
        out.append(lm.forward([torch.tensor(b, device=lm.device) for b in blocks]))
        if keep is not None:
            lm.rollback([n - k for n, k in zip(lm.lengths, keep)])
    return out


SCRIPT = [
    [[5, 9, 11, 40, 7], [3], [8, 8, 2, 90]],  # prompts of different lengths
    ([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [2, 0, 1]),  # a verification: rows drop 2, 0, 1 of 3
    ([[10], [11, 12], [13, 14, 15, 16]], [0, 1, 3]),  # ragged blocks
    ([[17], [18], [19]], None),
]


@pytest.mark.parametrize("arch", ARCHS)
def test_lean_equals_transformers_with_batches_holes_and_rollback(arch):
    m = model(arch)
    assert lean_forward(m) is not None
    lean, ref = run(RaggedLM(m, "lean"), SCRIPT), run(RaggedLM(m, "transformers"), SCRIPT)
    for a, b in zip(lean, ref):
        assert a.shape == b.shape and torch.allclose(a, b, atol=ATOL), (a - b).abs().max()


@pytest.mark.parametrize("arch", ARCHS)
def test_lean_one_row_caches_what_transformers_caches(arch):
    m = model(arch)
    lean, ref = RaggedLM(m, "lean"), RaggedLM(m, "transformers")
    ids = torch.tensor([4, 8, 15, 16, 23, 42])
    for lm in (lean, ref):
        lm.reset(1, 32)
        lm.forward([ids[:3]], last_only=True)
        lm.forward([ids[3:]])
    for a, b in zip(lean.cache.layers, ref.cache.layers):
        assert torch.allclose(a.keys, b.keys, atol=1e-5) and torch.allclose(a.values, b.values, atol=1e-5)


def test_what_the_lean_path_does_not_implement_runs_through_transformers():
    unusual = model("gpt2")
    unusual.config.scale_attn_by_inverse_layer_idx = True
    assert lean_forward(unusual) is None
    assert RaggedLM(unusual).lean is None  # auto: falls back
    with pytest.raises(CascadeError, match="runtime 'lean' does not cover gpt2"):
        RaggedLM(unusual, "lean")
    assert RaggedLM(model("llama"), "transformers").lean is None


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_on_either_runtime_gives_the_same_tokens(family, arch):
    f = family(arch)

    def tokens(runtime, **kw):
        d = policy_dict(
            target=f["target"], drafter=f["near"], drafter_options={"model": str(f["near"]), "runtime": runtime}, **kw
        )
        d["target"]["runtime"] = runtime
        return Engine.from_policy(parse_policy(d)).generate(["def f(x):\n", "import os\n"], batch_size=2)

    for kw in ({"block_size": 3}, {"rule": "token_v3", "alpha": 0.3, "temperature": 1.0, "ignore_eos": True}):
        a, b = tokens("lean", **kw), tokens("transformers", **kw)
        assert [g.token_ids for g in a] == [g.token_ids for g in b]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path runs where a GPU is present")
@pytest.mark.parametrize("arch", ARCHS)
def test_lean_on_cuda_in_bfloat16_agrees_with_transformers(arch):
    m = model(arch).to("cuda", torch.bfloat16)
    lean, ref = run(RaggedLM(m, "lean"), SCRIPT), run(RaggedLM(m, "transformers"), SCRIPT)
    for a, b in zip(lean, ref):  # bf16: agreement of the distributions, not of the last bits
        assert torch.allclose(a.softmax(-1), b.softmax(-1), atol=2e-2)
        assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9
