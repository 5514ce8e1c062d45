"""Exactness with proven power: each law check passes on the real code and rejects the planted bugs.

The checks (tests/laws.py) drive verify_block / verify_tree on a toy language whose p and q differ by at
least 0.2 in total variation at every prefix, and test the joint law of two emitted tokens; one check runs
the engine itself, for what the drafting loop owns (a draft's length must be a stopping time). Every
mutant of cascade.testing.mutation must be rejected at p < 1e-6 by the check named for it, while every check
passes on the real code at p > 1e-3. docs/testing.md lists them.
"""

from __future__ import annotations

import pytest
import torch
from laws import FEATURE_RULE, WIDE_LEAVES, chain_check, joint_tv, lossy_check, tree_check

from cascade.testing.mutation import BY_NAME, MUTANTS, applied
from cascade.verify import sampling as S

T1 = S.SamplingParams(1.0)
WARPED = S.SamplingParams(0.7, 0, 0.9)  # temperature 0.7 and top-p 0.9

PASS, REJECT = 1e-3, 1e-6

CHECKS = {  # name -> the check (a p-value)
    "chain-none": lambda: chain_check("none", 0.0, T1),
    "chain-token_v3": lambda: chain_check("token_v3", 0.5, T1),
    "chain-token_v3-k1": lambda: chain_check("token_v3", 0.5, T1, k=1),
    "chain-chow-warped": lambda: chain_check("chow", 0.5, WARPED),
    "chain-token_v1": lambda: chain_check("token_v1", 0.0, T1),
    "chain-token_v2": lambda: chain_check("token_v2", 0.2, T1),
    "chain-diff": lambda: chain_check("diff", 0.0, T1),
    "chain-opt-warped": lambda: chain_check("opt", 0.3, WARPED),
    "chain-draft-confidence": lambda: chain_check(FEATURE_RULE, 0.2, T1),
    "chain-draft-confidence-warped": lambda: chain_check(FEATURE_RULE, 0.2, WARPED),
    "chain-draft-confidence-k1": lambda: chain_check(FEATURE_RULE, 0.2, T1, k=1),
    "lossy": lambda: lossy_check(0.5, T1),
    "tree-none": lambda: tree_check("none", 0.0, T1),
    "tree-token_v3": lambda: tree_check("token_v3", 0.5, T1),
    "tree-token_v3-warped": lambda: tree_check("token_v3", 0.5, WARPED),
    "tree-none-deterministic": lambda: tree_check("none", 0.0, T1, deterministic=True),
    "tree-none-after-leaves": lambda: tree_check("none", 0.0, T1, WIDE_LEAVES),
    "engine-confidence-schedule": lambda: engine_check(),
    "engine-adaptive-predictor": lambda: adaptive_check(),
    "engine-batch-rows-differ": lambda: batch_check(),
    "engine-batch-shared-schedule": lambda: shared_check(),
    "engine-sequential-cascade": lambda: sequential_check(),
}

CATCHES = {  # mutant -> the check that must reject it
    "chain-residual-is-pi": "chain-none",
    "chain-accept-against-p": "chain-token_v3",
    "chain-bonus-from-p": "chain-token_v3-k1",
    "chain-q-unscaled": "chain-chow-warped",
    "lossy-lenience-ignored": "lossy",
    "mixture-eta-one": "chain-token_v1",
    "first-rejection-one-late": "chain-none",
    "residual-reversed": "chain-none",
    "tree-sibling-residual-from-pi": "tree-none",
    "tree-rejected-sibling-stays": "tree-none",
    "tree-deep-node-vs-root": "tree-none",
    "tree-rejected-child-kept": "tree-none-deterministic",
    "tree-rejected-all-draws-p": "tree-token_v3",
    "tree-leaf-bonus-from-root": "tree-none-after-leaves",
    "token-v3-reads-q-max": "chain-token_v3",
    "feature-rule-reads-the-argmax": "chain-draft-confidence",
    "feature-rule-bonus-at-the-argmax": "chain-draft-confidence-k1",
    "predictor-reads-the-draw": "engine-adaptive-predictor",
    "stop-rule-peeks-at-the-draw": "engine-confidence-schedule",
    "batch-logits-right-aligned": "engine-batch-rows-differ",
    "sequential-deferral-keeps-the-draft": "engine-sequential-cascade",
}


def _engine(decoding: dict, registry=None, **policy):
    from cascade.decode.engine import Engine
    from cascade.policy import parse_policy
    from cascade.testing import build_family, policy_dict

    root = _family_root()
    f = build_family(root, "gpt2", root / "tok")
    d = policy_dict(f["target"], f["near"], **policy)
    d["decoding"].update(temperature=1.0, top_k=2, ignore_eos=True, **decoding)
    return Engine.from_policy(parse_policy(d), registry), f


def _max_q(f, ids: torch.Tensor, rank: int = 1) -> list[float]:
    """The drafter's `rank` largest probabilities after `ids`."""
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        q = AutoModelForCausalLM.from_pretrained(f["near"])(input_ids=ids[None]).logits[0, -1].softmax(-1)
    return q.topk(rank).values.tolist()


def _rows_p_value(e, prompts: list[str], n: int) -> float:
    from cascade.testing.laws import engine_law_p_value

    return engine_law_p_value(e, prompts, n)


PROMPT = "def add(a, b):\n"
ROWS = [PROMPT, "class Point:\n    def __init__(self, x, y):\n", "for i in range(10):\n"]


def engine_check(n: int = 2000) -> float:
    """The engine with a confidence schedule (a draft stops where the drafter's top probability falls below a
    floor), lossless, sampled at T = 1 with top-k 2: the first two tokens must follow the target's own law.
    The floor sits between the drafter's two most likely first tokens: max q passes it (the real rule drafts
    on), the probability of the second does not."""
    e, f = _engine({"max_new_tokens": 2}, schedule="confidence", block_size=4)
    first, second = _max_q(f, e.encode(PROMPT), 2)
    e, _ = _engine({"max_new_tokens": 2}, schedule="confidence", block_size=4, confidence=(first + second) / 2)
    return _rows_p_value(e, [PROMPT], n)


def adaptive_check(n: int = 2000) -> float:
    """The adaptive schedule, lossless at T = 1 with top-k 2, its confidences from a registered acceptance predictor
    (scale · q at q's top token, known before the draw) and a cost table on which SurvivalStop drafts a first token
    exactly when its confidence reaches 1/2 (a draft is free, a target call over n tokens costs 1.5^(n − 1)). The
    scale puts 1/2 between the drafter's two most likely first tokens: the real predictor always drafts there, one
    that scored the token about to be drawn would draft only the first. The first two tokens follow the target."""
    from unittest import mock

    from test_engine import _in_process_plugin

    from cascade.features import FEATURES
    from cascade.options import NoOptions
    from cascade.schedules import profile
    from cascade.schedules.costs import CostTable

    class ScaleOptions(NoOptions):
        scale: float = 1.0

    class ScaledQ:  # P(accepted) = scale · q(x) at the token it is shown
        Options = ScaleOptions

        def __init__(self, options: ScaleOptions):
            self.scale = options.scale

        def predict_acceptance(self, features, positions, context):
            return (self.scale * features[:, FEATURES.index("q_x")]).clamp(0, 1)

    registry = _in_process_plugin("scaled-q", register_predictors=lambda register: register("scaled-q", ScaledQ))
    table = CostTable(0.0, tuple(1.5**i for i in range(5)))
    e, f = _engine({"max_new_tokens": 2}, schedule="confidence", block_size=4)
    first, second = _max_q(f, e.encode(PROMPT), 2)
    options = {"predictor": "scaled-q", "predictor_options": {"scale": 1 / (first + second)}}
    with mock.patch.object(profile, "cost_table", lambda engine, max_k, remeasure=False: (table, None, False)):
        e, _ = _engine({"max_new_tokens": 2}, registry, schedule="adaptive", schedule_options=options)
    return _rows_p_value(e, [PROMPT], n)


def batch_check(n: int = 1500) -> float:
    """Two rows that draft different lengths in one batch (a confidence floor between their drafters' top
    probabilities: one row drafts, the other does not), lossless at T = 1, top-k 2: each row's two tokens
    must follow the target's law for its own prompt."""
    e, f = _engine({"max_new_tokens": 3}, schedule="confidence", block_size=4)
    tops = sorted((_max_q(f, e.encode(p))[0], p) for p in ROWS)
    (low, a), (high, b) = tops[0], tops[-1]
    e, _ = _engine({"max_new_tokens": 3}, schedule="confidence", block_size=4, confidence=(low + high) / 2)
    return _rows_p_value(e, [a, b], n)


def shared_check(n: int = 1000) -> float:
    """Three rows of different lengths under BASS's shared draft length: each row's law is the target's."""
    e, _ = _engine({"max_new_tokens": 3}, schedule="bass", block_size=2, max_block_size=4)
    return _rows_p_value(e, ROWS, n)


def sequential_check(n: int = 1500) -> float:
    """The sequential cascade with chow at T = 1, top-k 2: where the drafter's max q reaches 1 − α its token
    stands (drawn from q), elsewhere the target's (drawn from p). α sits at the median max q over the
    prefixes the first two tokens read, so both happen; the two tokens' joint law is that mixture."""
    from transformers import AutoModelForCausalLM

    from cascade.testing.laws import law_p_value

    e, f = _engine({"max_new_tokens": 2}, mode="sequential", rule="chow")
    drafter = AutoModelForCausalLM.from_pretrained(f["near"])
    ids = e.encode(PROMPT)

    def next_logits(model, prefix: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=prefix[None]).logits[0, -1]

    first_q = S.warp(next_logits(drafter, ids), e.params)
    prefixes = [ids] + [torch.cat([ids, torch.tensor([a])]) for a in range(first_q.shape[0])]
    tops = [float(next_logits(drafter, x).softmax(-1).max()) for x in prefixes]
    alpha = 1 - sorted(tops)[len(tops) // 2]
    e, _ = _engine({"max_new_tokens": 2}, mode="sequential", rule="chow", alpha=alpha)

    def law_at(prefix: torch.Tensor) -> torch.Tensor:
        q = next_logits(drafter, prefix)
        kept = float(q.softmax(-1).max()) >= 1 - alpha
        return S.warp(q if kept else next_logits(e.target_model, prefix), e.params)

    one = law_at(ids)
    law = {}
    for a in torch.nonzero(one).flatten().tolist():
        two = law_at(torch.cat([ids, torch.tensor([a])]))
        for b in torch.nonzero(two).flatten().tolist():
            law[(a, b)] = float(one[a] * two[b])
    counts: dict[tuple[int, ...], int] = {}
    for seed in range(n):
        y = tuple(e.generate(ids.tolist(), seed=seed, record_decisions=False).token_ids[:2])
        counts[y] = counts.get(y, 0) + 1
    return law_p_value(counts, law)


_ROOT: list = []


def _family_root():
    import tempfile
    from pathlib import Path

    from cascade.testing import make_tokenizer

    if not _ROOT:
        root = Path(tempfile.mkdtemp(prefix="cascade-laws-"))
        make_tokenizer(root / "tok")
        _ROOT.append(root)
    return _ROOT[0]


SHARP = [  # (rule, α, sampling) of every cascade check above
    ("token_v3", 0.5, T1),
    ("token_v3", 0.5, WARPED),
    ("chow", 0.5, WARPED),
    ("token_v1", 0.0, T1),
    ("token_v2", 0.2, T1),
    ("diff", 0.0, T1),
    ("opt", 0.3, WARPED),
    (FEATURE_RULE, 0.2, T1),
    (FEATURE_RULE, 0.2, WARPED),
]


def test_the_toy_laws_are_sharp():
    """The joint law of two tokens each cascade check tests is at least 0.1 (total variation) from the
    target's and from the drafter's: a check cannot pass by emitting either model's tokens."""
    for rule, alpha, params in SHARP:
        assert joint_tv(params, rule, alpha) >= 0.1, (rule, alpha, params)


def test_every_mutant_has_a_check_and_every_check_is_used():
    assert set(CATCHES) == set(BY_NAME) and len(MUTANTS) >= 12
    assert set(CATCHES.values()) <= set(CHECKS)


@pytest.mark.parametrize(
    "name", [n if not n.startswith("engine") else pytest.param(n, marks=pytest.mark.slow) for n in CHECKS]
)
def test_the_real_code_passes(name):
    p = CHECKS[name]()
    assert p > PASS, (name, p)


@pytest.mark.slow  # the planted bugs run in the full run (CI): the real code's checks stay in the fast one
@pytest.mark.parametrize("mutant", [m.name for m in MUTANTS])
def test_each_planted_bug_is_rejected(mutant):
    with applied(BY_NAME[mutant]):
        p = CHECKS[CATCHES[mutant]]()
    assert p < REJECT, (mutant, CATCHES[mutant], p)
