"""cascade.verify.sampling and cascade.verify.chain at the function level, against SPEC.md's formulas."""

import pytest
import torch
from scipy.stats import chisquare

from cascade.rules import BUILTIN_RULES
from cascade.verify import sampling as S
from cascade.verify.chain import verify_block


def test_warp_greedy_is_one_hot():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert torch.equal(S.warp(logits, S.SamplingParams(0.0)), torch.tensor([[0.0, 1, 0], [1, 0, 0]]))


def test_warp_temperature_top_k_top_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    p = S.warp(logits, S.SamplingParams(1.0))
    assert torch.allclose(p, torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.allclose(S.warp(logits, S.SamplingParams(1.0, top_k=2)), torch.tensor([0.625, 0.375, 0, 0]))
    # top_p = 0.8: 0.5 + 0.3 reaches it, the rest is dropped
    assert torch.allclose(S.warp(logits, S.SamplingParams(1.0, top_p=0.8)), torch.tensor([0.625, 0.375, 0, 0]))
    hot = S.warp(logits, S.SamplingParams(2.0))
    assert hot[0] < 0.5 and hot[3] > 0.05


def test_mixture_whole_and_token_forms():
    q = torch.tensor([[0.7, 0.2, 0.1]])
    p = torch.tensor([[0.1, 0.3, 0.6]])
    assert torch.allclose(S.mixture(torch.ones(1, 1), q, p), p)
    assert torch.allclose(S.mixture(torch.zeros(1, 1), q, p), q)
    r = torch.tensor([[0.0, 1.0, 1.0]])  # keep token 0, defer the others
    eta = 0.3
    expected = torch.tensor([[0.7 + eta * 0.1, eta * 0.3, eta * 0.6]])
    assert torch.allclose(S.mixture(r, q, p), expected)
    assert torch.allclose(S.mixture(r, q, p).sum(), torch.tensor(1.0))


def test_acceptance_and_residual():
    q = torch.tensor([[0.5, 0.5, 0.0]])
    pi = torch.tensor([[0.25, 0.25, 0.5]])
    assert torch.allclose(S.acceptance_probs(pi, q, torch.tensor([0])), torch.tensor([0.5]))
    assert torch.allclose(S.residual(pi, q), torch.tensor([[0.0, 0.0, 1.0]]))
    assert torch.allclose(S.lenient_acceptance_probs(pi, q, torch.tensor([0]), 0.5), torch.tensor([1.0]))


def test_first_rejection_counts_leading_accepts():
    g = torch.Generator().manual_seed(0)
    assert S.first_rejection(torch.tensor([1.0, 1.0, 0.0, 1.0]), g).item() == 2
    assert S.first_rejection(torch.tensor([1.0, 1.0]), g).item() == 2
    assert S.first_rejection(torch.tensor([0.0]), g).item() == 0
    assert S.first_rejection(torch.empty(0), g).item() == 0


def test_total_variation_and_entropy():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])
    assert S.total_variation(p, q).item() == pytest.approx(0.5)
    assert S.entropy(p).item() == pytest.approx(0.6931, abs=1e-4)


V = 6
Q_LOGITS = torch.log(torch.tensor([0.40, 0.25, 0.15, 0.10, 0.06, 0.04]))
P_LOGITS = torch.log(torch.tensor([0.10, 0.30, 0.05, 0.35, 0.12, 0.08]))
ALPHAS = {"none": 0.0, "chow": 0.5, "diff": 0.1, "opt": 0.5, "token_v1": 0.05, "token_v2": 0.1, "token_v3": 0.5}


def expected_pi(rule_name: str, params: S.SamplingParams) -> torch.Tensor:
    rule = BUILTIN_RULES[rule_name](ALPHAS[rule_name])
    q_raw, p_raw = S.softmax(Q_LOGITS)[None], S.softmax(P_LOGITS)[None]
    r = rule.defer(q_raw, p_raw)
    return S.mixture(r, S.warp(Q_LOGITS, params)[None], S.warp(P_LOGITS, params)[None])[0]


@pytest.mark.parametrize("rule_name", sorted(ALPHAS))
@pytest.mark.parametrize("temperature", [1.0, pytest.param(0.7, marks=pytest.mark.slow)])
def test_one_step_emits_pi(rule_name, temperature):
    """Draft x ~ q, verify: the first emitted token is distributed as π (chi-square)."""
    params = S.SamplingParams(temperature)
    rule = BUILTIN_RULES[rule_name](ALPHAS[rule_name])
    g = torch.Generator().manual_seed(1234)
    q = S.warp(Q_LOGITS, params)
    p_logits = torch.stack([P_LOGITS, P_LOGITS])  # (k + 1, V), k = 1
    n_draws = 6000
    counts = torch.zeros(V)
    xs = torch.multinomial(q.expand(n_draws, V), 1, replacement=True, generator=g)[:, 0]
    for x in xs:
        v = verify_block(x.view(1), S.softmax(Q_LOGITS)[None], p_logits, rule, params, g)
        first = int(x) if v.n_accepted.item() == 1 else int(v.next_token)
        counts[first] += 1
    pi = expected_pi(rule_name, params)
    assert torch.allclose(pi.sum(), torch.tensor(1.0), atol=1e-5)
    mask = pi > 0
    stat = chisquare(counts[mask].numpy(), (pi[mask] * n_draws).numpy())
    assert stat.pvalue > 1e-3, (rule_name, counts / n_draws, pi)
    assert counts[~mask].sum() == 0


def test_lossy_leniency_one_is_lossless_and_accepts_more_when_lenient():
    params = S.SamplingParams(1.0)
    rule = BUILTIN_RULES["none"]()
    g = torch.Generator().manual_seed(0)
    q = S.warp(Q_LOGITS, params)
    p_logits = torch.stack([P_LOGITS, P_LOGITS])
    xs = torch.multinomial(q.expand(4000, V), 1, replacement=True, generator=g)[:, 0]
    counts, accepted = torch.zeros(V), {1.0: 0, 0.5: 0}
    for lenience in (1.0, 0.5):
        for x in xs:
            v = verify_block(x.view(1), S.softmax(Q_LOGITS)[None], p_logits, rule, params, g, lenience=lenience)
            accepted[lenience] += v.n_accepted.item()
            if lenience == 1.0:
                counts[int(x) if v.n_accepted.item() else int(v.next_token)] += 1
    p = S.softmax(P_LOGITS)
    assert chisquare(counts.numpy(), (p * 4000).numpy()).pvalue > 1e-3
    assert accepted[0.5] > accepted[1.0]


def test_greedy_verify_keeps_target_argmax_or_undeferred():
    p_logits = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])  # argmax 1, 0, 2
    x = torch.tensor([1, 2])
    rule = BUILTIN_RULES["none"]()
    v = verify_block(x, None, p_logits, rule, S.SamplingParams(0.0), None)
    assert (v.n_accepted.item(), v.next_token.item()) == (1, 0)
    x = torch.tensor([1, 0])
    v = verify_block(x, None, p_logits, rule, S.SamplingParams(0.0), None)
    assert (v.n_accepted.item(), v.next_token.item()) == (2, 2)  # bonus from p_3


@pytest.mark.parametrize("rule_name,alpha", [("token_v3", 0.5), ("chow", 0.7), ("opt", 0.5)])
def test_cascade_bonus_token_is_drawn_from_pi_at_k_plus_1(rule_name, alpha):
    """All drafts accepted: the token after them follows π_{k+1} built from q_{k+1} and p_{k+1}."""
    params = S.SamplingParams(1.0)
    rule = BUILTIN_RULES[rule_name](alpha)
    p1 = torch.log(torch.tensor([0.05, 0.05, 0.05, 0.05, 0.05, 0.75]))  # the draft (token 5) is p_1's favourite
    p_logits = torch.stack([p1, P_LOGITS])  # (k + 1, V), distinct rows: an off-by-one would show
    x = torch.tensor([5])
    q1 = torch.softmax(p1, -1)[None]  # q_1 = p_1: always accepted whatever the rule
    g = torch.Generator().manual_seed(7)
    n_draws, counts = 6000, torch.zeros(V)
    for _ in range(n_draws):
        v = verify_block(x, q1, p_logits, rule, params, g, q_next=S.softmax(Q_LOGITS))
        assert v.n_accepted.item() == 1
        counts[int(v.next_token)] += 1
    r = rule.defer(S.softmax(Q_LOGITS)[None], S.softmax(P_LOGITS)[None])
    pi = S.mixture(r, S.warp(Q_LOGITS, params)[None], S.warp(P_LOGITS, params)[None])[0]
    assert not torch.allclose(pi, S.softmax(P_LOGITS))  # the test would prove nothing otherwise
    assert chisquare(counts.numpy(), (pi * n_draws).numpy()).pvalue > 1e-3


def test_greedy_cascade_bonus_is_the_drafters_argmax_unless_deferred():
    p_logits = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])  # argmax 1, then 0
    q1 = torch.tensor([[0.0, 1.0, 0.0]])
    q_next = torch.tensor([0.1, 0.1, 0.8])  # the drafter's guess at k+1: token 2
    keep = BUILTIN_RULES["chow"](1.0)  # never defers
    v = verify_block(torch.tensor([1]), q1, p_logits, keep, S.SamplingParams(0.0), None, q_next=q_next)
    assert (v.n_accepted.item(), v.next_token.item()) == (1, 2)
    defer = BUILTIN_RULES["chow"](0.0)  # always defers: the target's argmax
    v = verify_block(torch.tensor([1]), q1, p_logits, defer, S.SamplingParams(0.0), None, q_next=q_next)
    assert (v.n_accepted.item(), v.next_token.item()) == (1, 0)
