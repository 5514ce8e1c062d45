"""Law checks on fixed logits: cascade's verification driven directly (no model), against laws computed here.

A toy language of V tokens gives p(·|prefix) and q(·|prefix) for every prefix, seeded by the prefix, with
D_TV(p, q) >= 0.2 everywhere, so π differs clearly from p and from q. The decoders below draft from q,
verify with `verify_block` / `verify_tree` and emit exactly as the engine's step does; each check counts the
first two emitted tokens over many draws and returns the chi-square p-value against their joint law
π(y1)·π(y2 | y1), with π computed here from SPEC.md's formulas (not from cascade's rules or mixture).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import torch

from cascade.features import FEATURES
from cascade.rules import BUILTIN_RULES, DeferralInputs, RuleBase
from cascade.testing.laws import law_p_value, token_law
from cascade.verify import sampling as S
from cascade.verify.chain import verify_block
from cascade.verify.tree import verify_tree

V = 6
MIN_TV = 0.2


@cache
def logits(kind: str, prefix: tuple[int, ...]) -> torch.Tensor:
    """p's or q's logits after `prefix` (V,): p's seeded by the prefix, q's p's plus noise far enough away."""
    seed = 1 + sum((t + 1) * 7**i for i, t in enumerate(prefix))
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(V, generator=g, dtype=torch.float64) * 1.5
    if kind == "p":
        return p.float()
    while True:
        q = p + torch.randn(V, generator=g, dtype=torch.float64) * 1.5
        if 0.5 * (q.softmax(-1) - p.softmax(-1)).abs().sum() >= MIN_TV:
            return q.float()


def deferral(rule: str, alpha: float, q1: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """SPEC.md's r(v) (V,) from q and p at T = 1, written out here independently of cascade.rules."""
    if rule == "none":
        return np.ones(V)
    if rule == "chow":
        return np.full(V, float(q1.max() < 1 - alpha))
    if rule == "diff":
        return np.full(V, float(q1.max() < p1.max() - alpha))
    if rule == "opt":
        return np.full(V, float(q1.max() < p1.max() - alpha * np.clip(p1 - q1, 0, None).sum()))
    if rule == "token_v1":
        return (q1 < p1.max() - alpha).astype(float)
    if rule == "token_v2":
        return (p1 < p1.max() - alpha).astype(float)
    if rule == "token_v3":
        return (p1 < (1 - alpha) * p1.max()).astype(float)
    raise ValueError(rule)


class DraftConfidence(RuleBase):
    """A rule that reads the drafted token's own features, as a learned deferral head does (SPEC.md, "Learned
    deferral, in more detail"): defer the draft x when q(x) < α. Its r is read at the drawn x, so a position's
    law is not one π (see `token_law`)."""

    name = "draft-confidence"
    reads_p = False
    reads_features = True

    def defer(self, q: torch.Tensor, p: torch.Tensor | None, inputs: DeferralInputs | None = None) -> torch.Tensor:
        assert inputs is not None
        q_x = inputs.features[:, FEATURES.index("q_x")]  # (k,) q(x_i) at T = 1
        return (q_x < self.alpha).to(q_x.dtype).unsqueeze(-1)  # (k, 1)


FEATURE_RULE = DraftConfidence.name


def make_rule(rule: str, alpha: float) -> RuleBase:
    return DraftConfidence(alpha) if rule == FEATURE_RULE else BUILTIN_RULES[rule](alpha)


def warped(kind: str, prefix: tuple[int, ...], params: S.SamplingParams) -> np.ndarray:
    return S.warp(logits(kind, prefix), params).double().numpy()


def pi(rule: str, alpha: float, params: S.SamplingParams, prefix: tuple[int, ...]) -> np.ndarray:
    """π(·|prefix) = q(1 − r) + η·p, η = Σ r·q, with q and p warped (SPEC.md "Speculative cascades")."""
    r = deferral(
        rule, alpha, logits("q", prefix).double().softmax(-1).numpy(), logits("p", prefix).double().softmax(-1).numpy()
    )
    q, p = warped("q", prefix, params), warped("p", prefix, params)
    return q * (1 - r) + (r * q).sum() * p


def law_at(rule: str, alpha: float, params: S.SamplingParams, prefix: tuple[int, ...]) -> np.ndarray:
    """The law of the next emitted token after `prefix`: π for a rule of SPEC.md's; for the rule that reads the
    drafted token's features (r_y = 1[q(y) < α], q at T = 1), SPEC.md's law of a rule read at the drafted token
    (`cascade.testing.laws.token_law`)."""
    if rule != FEATURE_RULE:
        return pi(rule, alpha, params, prefix)
    r = (logits("q", prefix).double().softmax(-1).numpy() < alpha).astype(float)
    return sum(token_law(r, warped("q", prefix, params), warped("p", prefix, params)))


def lossy_first(lenience: float, params: S.SamplingParams) -> np.ndarray:
    """The first token's law in lossy mode: x ~ q kept with min(1, p(x) / (l·q(x))), else norm(max(0, p − q))."""
    q, p = warped("q", (), params), warped("p", (), params)
    keep = q * np.minimum(1.0, np.divide(p, lenience * q, out=np.zeros(V), where=q > 0))
    diff = np.clip(p - q, 0, None)
    return keep + (1 - keep.sum()) * diff / diff.sum()


p_value = law_p_value  # the chi-square of counts against a law (cascade.testing.laws)


def joint_law(first: Callable[[tuple[int, ...]], np.ndarray]) -> dict[tuple[int, ...], float]:
    """P(y1, y2) = law(y1 | ∅) · law(y2 | y1) for a per-prefix law `first`."""
    one = first(())
    return {(a, b): one[a] * pb for a in range(V) if one[a] > 0 for b, pb in enumerate(first((a,))) if pb > 0}


# ---------------------------------------------------------------- chains


def chain_emit(
    rule: str,
    alpha: float,
    params: S.SamplingParams,
    k: int,
    n_tokens: int,
    g: torch.Generator,
    lenience: float | None = None,
) -> tuple[int, ...]:
    """Decode `n_tokens` with drafts of k tokens from q, verified by verify_block (as the engine's step)."""
    rule_obj = make_rule(rule, alpha)
    out: list[int] = []
    lookahead = rule != "none" and lenience is None  # a cascade draws its bonus from π_{k+1}
    while len(out) < n_tokens:
        prefix = tuple(out)
        xs: list[int] = []
        for _ in range(k):
            xs.append(int(S.pick(logits("q", prefix + tuple(xs)), params, g)))
        q_raw = torch.stack([logits("q", prefix + tuple(xs[:j])).softmax(-1) for j in range(k)])
        p_logits = torch.stack([logits("p", prefix + tuple(xs[:j])) for j in range(k + 1)])
        q_next = logits("q", prefix + tuple(xs)).softmax(-1) if lookahead else None
        v = verify_block(torch.tensor(xs), q_raw, p_logits, rule_obj, params, g, lenience, q_next)
        n = int(v.n_accepted)
        out += xs[:n] + [int(v.next_token)]
    return tuple(out[:n_tokens])


def chain_check(rule: str, alpha: float, params: S.SamplingParams, k: int = 3, n: int = 3000, seed: int = 0) -> float:
    """p-value of the first two emitted tokens against π(y1)·π(y2|y1)."""
    g = torch.Generator().manual_seed(seed)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(n):
        y = chain_emit(rule, alpha, params, k, 2, g)
        counts[y] = counts.get(y, 0) + 1
    return p_value(counts, joint_law(lambda prefix: law_at(rule, alpha, params, prefix)))


def lossy_check(lenience: float, params: S.SamplingParams, n: int = 4000, seed: int = 0) -> float:
    """p-value of lossy mode's first token against its law (k = 2)."""
    g = torch.Generator().manual_seed(seed)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(n):
        y = chain_emit("none", 0.0, params, 2, 1, g, lenience)
        counts[y] = counts.get(y, 0) + 1
    law = lossy_first(lenience, params)
    return p_value(counts, {(a,): float(law[a]) for a in range(V) if law[a] > 0})


# ---------------------------------------------------------------- trees

FULL_TREE = [-1, -1, 0, 0, 1, 1]  # two children at the root, two under each: depth 2, every inner node full
WIDE_LEAVES = [-1, -1, -1]  # three children at the root, all leaves: the bonus comes after a leaf


def tree_emit(
    rule: str,
    alpha: float,
    params: S.SamplingParams,
    parents: list[int],
    n_tokens: int,
    g: torch.Generator,
    deterministic: bool = False,
) -> tuple[int, ...]:
    """Decode `n_tokens` through trees of shape `parents`: siblings drawn i.i.d. from q at their parent's
    path (or, deterministic, q's top tokens in order, one-hot), verified by verify_tree."""
    rule_obj = BUILTIN_RULES[rule](alpha)
    out: list[int] = []
    while len(out) < n_tokens:
        prefix = tuple(out)
        paths: list[tuple[int, ...]] = []  # each node's path of tokens, root excluded
        tokens: list[int] = []
        rank: dict[int, int] = {}
        for parent in parents:
            at = prefix + (paths[parent] if parent >= 0 else ())
            if deterministic:
                rank[parent] = rank.get(parent, -1) + 1
                x = int(logits("q", at).argsort(descending=True)[rank[parent]])
            else:
                x = int(S.pick(logits("q", at), params, g))
            tokens.append(x)
            paths.append((paths[parent] if parent >= 0 else ()) + (x,))
        q_raw = None
        if not deterministic:
            q_raw = torch.stack(
                [logits("q", prefix + (paths[parent] if parent >= 0 else ())).softmax(-1) for parent in parents]
            )
        p_logits = torch.stack([logits("p", prefix)] + [logits("p", prefix + path) for path in paths])
        v = verify_tree(torch.tensor(tokens), parents, q_raw, p_logits, rule_obj, params, g)
        out += [tokens[i] for i in v.path] + [v.next_token]
    return tuple(out[:n_tokens])


def tree_check(
    rule: str,
    alpha: float,
    params: S.SamplingParams,
    parents: list[int] = FULL_TREE,
    n: int = 3000,
    seed: int = 0,
    deterministic: bool = False,
) -> float:
    """p-value of the first two emitted tokens against π(y1)·π(y2|y1) (p's law for rule none and for a
    deterministic tree). With FULL_TREE both tokens come from nodes that have children (or from the next
    tree), so π holds for a cascade too; after a leaf the token is p's, so WIDE_LEAVES is for rule none."""
    g = torch.Generator().manual_seed(seed)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(n):
        y = tree_emit(rule, alpha, params, parents, 2, g, deterministic)
        counts[y] = counts.get(y, 0) + 1
    return p_value(counts, joint_law(lambda prefix: pi(rule, alpha, params, prefix)))


def joint_tv(params: S.SamplingParams, rule: str, alpha: float) -> float:
    """The smaller total variation between the joint law of two tokens under π and under p, and under π and
    under q: how far the law a check tests is from the target's and from the drafter's."""
    law = joint_law(lambda prefix: law_at(rule, alpha, params, prefix))
    target = joint_law(lambda prefix: warped("p", prefix, params))
    drafter = joint_law(lambda prefix: warped("q", prefix, params))
    keys = set(law) | set(target) | set(drafter)

    def dist(a: dict, b: dict) -> float:
        return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)

    return min(dist(law, target), dist(law, drafter))
