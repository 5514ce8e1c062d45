"""Tree drafts (SPEC.md "Tree drafts", EAGLE-2): the tree's mask and positions, and the accepted path.

A tree draft is `Draft.tokens` (k,) with `Draft.parents` (k,): parents[i] is the index of node
i's parent, -1 the root (the last emitted token); parents come before their children. The target
verifies the block [root, node 0, .., node k-1] in one pass: node i sits at block index i + 1,
attends to the context and to its ancestors only, at its true position (length + depth).
`Draft.probs[i]`, when given, is the drafter's q at node i's parent: the distribution node i and
its siblings were drawn from (siblings i.i.d.); a deterministic drafter (probs None) chooses
its children, and q is one-hot on each.

Acceptance walks from the root. Greedy: move to the first child equal to argmax p at the node
(or kept by the rule, r(x) = 0); emit the path and argmax p after it. Sampling, exact
multi-round speculative sampling against the rule's π at the node: keep w = π; for each child c
in turn accept with probability min(1, w(c) / q(c)) and on rejection set w = norm(max(0, w − q));
for a deterministic child accept with probability w(c), else zero w(c) and renormalise. When
every child is rejected, emit a draw of w; after a leaf, a draw of p there (no q beyond a leaf).
With rule `none`, π = p and the output is distributed exactly as the target's. Afterwards the
caches keep exactly the accepted path (`RaggedLM.rollback(..., keep=...)` turns the other
nodes' slots into holes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cascade.features import BlockContext
from cascade.rules import Rule
from cascade.verify import sampling as S
from cascade.verify.chain import Verdict, deferral, q_scaled, q_unscaled
from cascade.verify.masks import depths


@dataclass(frozen=True)
class TreeVerdict:
    path: tuple[int, ...]  # the accepted nodes (indices into Draft.tokens), root to last
    next_token: int  # the correction or bonus token after the path
    deferred: tuple[float, ...]  # r(x_i) for every node (1 = the rule deferred it)


def verify_tree(
    tokens: torch.Tensor,  # (k,) the nodes' tokens
    parents: list[int],  # (k,) parent index per node, -1 = root
    q_raw: torch.Tensor | None,  # (k, V) q at T = 1 each node was drawn from, None for a deterministic drafter
    p_logits: torch.Tensor,  # (k + 1, V) target logits at the root and at every node
    rule: Rule,
    params: S.SamplingParams,
    generator: torch.Generator | None,
    block: BlockContext | None = None,
) -> TreeVerdict:
    vocab = p_logits.shape[-1]
    at = torch.tensor([p + 1 for p in parents], dtype=torch.long, device=tokens.device)  # (k,) parent's block index
    deterministic = q_raw is None
    q1 = q_unscaled(tokens, q_raw, vocab)  # (k, V)
    reads_p = rule.reads_p or rule.reads_features
    p_raw = S.softmax(p_logits) if reads_p else None  # (k + 1, V)
    positions = torch.tensor(depths(parents), device=tokens.device) - 1  # (k,) position in the path
    r, r_x = deferral(
        rule, tokens, q1, None if p_raw is None else p_raw[at], block, real_q=not deterministic, positions=positions
    )
    ids, kept = tokens.tolist(), r_x.tolist()
    children: dict[int, list[int]] = {}
    for i, p in enumerate(parents):
        children.setdefault(p + 1, []).append(i)
    path: list[int] = []
    node = 0  # block index: the root
    if params.greedy:
        best = p_logits.argmax(-1).tolist()  # (k + 1,)
        while True:
            pick = next((c for c in children.get(node, []) if ids[c] == best[node] or kept[c] == 0), None)
            if pick is None:
                return TreeVerdict(tuple(path), best[node], tuple(kept))
            path.append(pick)
            node = pick + 1
    p_warped = S.warp(p_logits, params)  # (k + 1, V)
    q = q_scaled(q1, deterministic, params)  # (k, V)
    while True:
        cs = children.get(node, [])
        if not cs:  # after a leaf: the target's own next token
            return TreeVerdict(tuple(path), int(S.sample(p_warped[node], generator)), tuple(kept))
        first = cs[0]  # siblings share their parent's q and r
        w = S.mixture(r[first : first + 1], q[first : first + 1], p_warped[node : node + 1])[0]  # π at the node
        accepted = None
        for c in cs:
            x = ids[c]
            chance = w[x] if deterministic else (w[x] / q[c, x].clamp_min(1e-30)).clamp(max=1.0)
            if bool(torch.rand((), generator=generator, device=w.device) < chance):
                accepted = c
                break
            if deterministic:
                w = w.clone()
                w[x] = 0
                w = w / w.sum().clamp_min(1e-30)
            else:
                w = S.residual(w[None], q[c : c + 1])[0]
        if accepted is None:
            return TreeVerdict(tuple(path), int(S.sample(w, generator)), tuple(kept))
        path.append(accepted)
        node = accepted + 1


def read_verdicts(
    verdicts: list[Verdict | TreeVerdict], xs: list[torch.Tensor]
) -> list[tuple[int, int, list[int], tuple[int, ...] | None]]:
    """(n accepted, next token, drafted tokens, accepted path or None) per row: chains read back at once."""
    chains = [
        torch.cat([v.n_accepted.view(1), v.next_token.view(1), x])
        for v, x in zip(verdicts, xs)
        if isinstance(v, Verdict)
    ]
    flat = torch.cat(chains).tolist() if chains else []
    out: list[tuple[int, int, list[int], tuple[int, ...] | None]] = []
    at = 0
    for v, x in zip(verdicts, xs):
        if isinstance(v, TreeVerdict):
            out.append((len(v.path), v.next_token, x.tolist(), v.path))
            continue
        k = x.shape[0]
        out.append((flat[at], flat[at + 1], flat[at + 2 : at + 2 + k], None))
        at += 2 + k
    return out


def verdict_deferrals(verdict: Verdict | TreeVerdict) -> list[float]:
    """r(x_i) of every draft of a block, chain or tree (1 = deferred to the target)."""
    d = verdict.deferred
    return d.tolist() if isinstance(d, torch.Tensor) else list(d)
