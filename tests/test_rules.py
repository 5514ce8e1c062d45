"""The deferral rules against SPEC.md's table, including the ends of their α ranges."""

import math

import pytest
import torch

from cascade.rules import BUILTIN_RULES
from cascade.verify import sampling as S

Q = torch.tensor([[0.6, 0.3, 0.1], [0.34, 0.33, 0.33]])
P = torch.tensor([[0.2, 0.7, 0.1], [0.9, 0.05, 0.05]])


def r(name, alpha, q=Q, p=P):
    return BUILTIN_RULES[name](alpha).defer(q, p)


def test_registry_has_every_spec_rule():
    assert set(BUILTIN_RULES) == {"none", "chow", "diff", "opt", "token_v1", "token_v2", "token_v3"}


def test_none_always_defers():
    assert torch.equal(r("none", 0.0), torch.ones(2, 1))


def test_chow():
    # max q = 0.6, 0.34: defer iff max q < 1 - α
    assert r("chow", 0.5).flatten().tolist() == [0.0, 1.0]
    assert r("chow", 0.0).flatten().tolist() == [1.0, 1.0]
    assert r("chow", 1.0).flatten().tolist() == [0.0, 0.0]


def test_diff():
    # max p - α: 0.7 - α, 0.9 - α
    assert r("diff", 0.0).flatten().tolist() == [1.0, 1.0]
    assert r("diff", 0.2).flatten().tolist() == [0.0, 1.0]
    assert r("diff", -1.0).flatten().tolist() == [1.0, 1.0]
    assert r("diff", 1.0).flatten().tolist() == [0.0, 0.0]


def test_opt_weighs_dtv():
    dtv = S.total_variation(P, Q)  # 0.4, 0.56
    alpha = 0.3
    expected = (Q.max(-1).values < P.max(-1).values - alpha * dtv).float()
    assert torch.equal(r("opt", alpha).flatten(), expected)
    assert r("opt", -1e9).flatten().tolist() == [1.0, 1.0]
    assert r("opt", 1e9).flatten().tolist() == [0.0, 0.0]


def test_token_v1_v2_v3_per_token():
    assert torch.equal(r("token_v1", 0.2), (Q < P.max(-1, keepdim=True).values - 0.2).float())
    assert torch.equal(r("token_v2", 0.2), (P < P.max(-1, keepdim=True).values - 0.2).float())
    assert torch.equal(r("token_v3", 0.5), (P < 0.5 * P.max(-1, keepdim=True).values).float())
    for name in ("token_v1", "token_v2"):
        assert torch.all(r(name, -1.0) == 1) and torch.all(r(name, 1.0) == 0)
    assert torch.all(r("token_v3", 1.0) == 0)


def test_token_v3_drafts_in_T_alpha_are_always_accepted():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        q = torch.softmax(torch.randn(4, 10, generator=gen) * 2, -1)
        p = torch.softmax(torch.randn(4, 10, generator=gen) * 2, -1)
        alpha = 0.4
        rr = BUILTIN_RULES["token_v3"](alpha).defer(q, p)
        pi = S.mixture(rr, q, p)
        in_set = p >= (1 - alpha) * p.max(-1, keepdim=True).values
        assert torch.all(pi[in_set] >= q[in_set] - 1e-6)  # acceptance min(1, π/q) = 1


def test_token_v3_negative_alpha_is_lossless():
    q = torch.softmax(torch.randn(3, 7), -1)
    p = torch.softmax(torch.randn(3, 7), -1)
    assert torch.allclose(S.mixture(BUILTIN_RULES["token_v3"](-0.5).defer(q, p), q, p), p)


@pytest.mark.parametrize("name", sorted(BUILTIN_RULES))
def test_alpha_range_ends(name):
    """At the speculative end π = p; at the drafter-only end π = q (strict inequalities)."""
    cls = BUILTIN_RULES[name]
    if name == "none":
        return
    lo, hi = cls.alpha_range
    lo = -1e9 if math.isinf(lo) else lo
    if name == "token_v3":
        lo = -0.01  # at α = 0 the argmax stays undeferred; SPEC: T_α is empty only for α < 0
    hi = 1e9 if math.isinf(hi) else hi
    q = torch.softmax(torch.randn(5, 9), -1)
    p = torch.softmax(torch.randn(5, 9), -1)
    assert torch.allclose(S.mixture(cls(lo).defer(q, p), q, p), p, atol=1e-6)
    assert torch.allclose(S.mixture(cls(hi).defer(q, p), q, p), q, atol=1e-6)


def test_read_flags_match_spec():
    reads_q = {n for n, c in BUILTIN_RULES.items() if c.reads_q}
    reads_p = {n for n, c in BUILTIN_RULES.items() if c.reads_p}
    assert reads_q == {"chow", "diff", "opt", "token_v1"}
    assert reads_p == {"diff", "opt", "token_v1", "token_v2", "token_v3"}
