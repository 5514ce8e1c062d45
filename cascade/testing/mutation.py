"""A small mutation harness: deliberately wrong variants of cascade's code, applied one at a time.

A `Mutant` names one line of a module and what to put there instead. `applied(mutant)` recompiles that
module's source with the change and swaps every function or method whose code changed for its mutated
twin (in the module, in its classes, and wherever another module imported it by name), then restores the
originals. A law test shows it can fail by rejecting mutants: cascade's own (tests/test_laws.py,
docs/testing.md) run every check under the `MUTANTS` below, and a plugin's end-to-end law test can run
under the ones its decoding goes through (the EAGLE and sparse-KV plugins do), or under its own. A mutant
whose line no longer exists fails loudly, so the list follows the code it mutates.

    with applied(BY_NAME["tree-deep-node-vs-root"]):
        p = my_law_check()          # must now reject
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str  # the module whose source is changed
    old: str  # a snippet that occurs exactly once in it
    new: str  # what replaces it
    why: str  # the bug it plants, in words


def _functions(namespace: dict) -> Iterator[tuple[object, str, types.FunctionType]]:
    """(owner, attribute, function) for every module-level function and every plain method of a module-level
    class defined there."""
    for name, value in list(namespace.items()):
        if isinstance(value, types.FunctionType):
            yield namespace, name, value
        elif isinstance(value, type):
            for attr, member in vars(value).items():
                if isinstance(member, types.FunctionType):
                    yield value, attr, member


@contextlib.contextmanager
def applied(mutant: Mutant) -> Iterator[None]:
    module = importlib.import_module(mutant.module)
    source = inspect.getsource(module)
    count = source.count(mutant.old)
    if count != 1:
        raise AssertionError(f"mutant {mutant.name!r}: its line occurs {count} times in {mutant.module}")
    mutated: dict = {"__name__": module.__name__, "__file__": module.__file__}
    exec(compile(source.replace(mutant.old, mutant.new), module.__file__ or mutant.module, "exec"), mutated)
    twins = {
        (getattr(owner, "__name__", None) if isinstance(owner, type) else None, attr): fn
        for owner, attr, fn in _functions(mutated)
    }
    swaps: list[tuple[object, str, object]] = []  # (owner, attribute, original)
    replaced: dict[int, types.FunctionType] = {}
    for owner, attr, original in _functions(vars(module)):
        key = (owner.__name__ if isinstance(owner, type) else None, attr)
        twin = twins.get(key)
        if twin is None or _fingerprint(twin.__code__) == _fingerprint(original.__code__):
            continue
        # the mutated code, run against the real module's globals (its classes, its other functions)
        fn = types.FunctionType(twin.__code__, vars(module), original.__name__, original.__defaults__, None)
        fn.__kwdefaults__ = original.__kwdefaults__
        replaced[id(original)] = fn
        swaps.append((owner, attr, original))
    if not swaps:
        raise AssertionError(f"mutant {mutant.name!r} changed no function of {mutant.module}")
    # whoever imported a swapped function by name gets the twin too
    for other in list(sys.modules.values()):
        space = getattr(other, "__dict__", None)
        if not isinstance(space, dict) or other is module:
            continue
        for attr, value in list(space.items()):
            if id(value) in replaced and isinstance(value, types.FunctionType):
                swaps.append((space, attr, value))
    try:
        for owner, attr, original in swaps:
            _set(owner, attr, replaced[id(original)])
        yield
    finally:
        for owner, attr, original in swaps:
            _set(owner, attr, original)


def _fingerprint(code: types.CodeType) -> tuple:
    """A code object's bytecode and constants, nested code (comprehensions, lambdas) included."""
    return (code.co_code, tuple(_fingerprint(c) if isinstance(c, types.CodeType) else c for c in code.co_consts))


def _set(owner: object, attr: str, value: object) -> None:
    if isinstance(owner, dict):
        owner[attr] = value
    else:
        setattr(owner, attr, value)


C, S, T, D, B, R = (
    "cascade.verify.chain",
    "cascade.verify.sampling",
    "cascade.verify.tree",
    "cascade.decode.drafting",
    "cascade.decode.steps",
    "cascade.rules",
)

MUTANTS = [
    # chains (verify_block)
    Mutant(
        "chain-residual-is-pi",
        C,
        "candidates = torch.cat([S.residual(pi, q), bonus], dim=0)",
        "candidates = torch.cat([pi, bonus], dim=0)",
        "after a rejection, draw from π instead of the residual norm(max(0, π − q))",
    ),
    Mutant(
        "chain-accept-against-p",
        C,
        "accept = S.acceptance_probs(pi, q, tokens)",
        "accept = S.acceptance_probs(p[:k], q, tokens)",
        "judge a cascade's drafts against p, not against the rule's π",
    ),
    Mutant(
        "chain-bonus-from-p",
        C,
        "bonus = S.mixture(r_next, q_bonus, bonus)  # π_{k+1}",
        "bonus = bonus",
        "a cascade's bonus token drawn from p_{k+1} instead of π_{k+1}",
    ),
    Mutant(
        "chain-q-unscaled",
        C,
        "q = q_scaled(q_raw, deterministic, params)  # (k, V)",
        "q = q_raw",
        "accept against q at T = 1 while the drafter sampled from the warped q",
    ),
    Mutant(
        "lossy-lenience-ignored",
        C,
        "accept = S.lenient_acceptance_probs(pi, q, tokens, lenience)",
        "accept = S.acceptance_probs(pi, q, tokens)",
        "lossy mode accepts as lossless (the lenience dropped)",
    ),
    # the sampling primitives
    Mutant(
        "mixture-eta-one",
        S,
        "eta = (r * q).sum(-1, keepdim=True)  # (k, 1)",
        "eta = torch.ones_like(r[..., :1])",
        "π = q(1 − r) + p: the deferred mass η taken as 1 (π no longer sums to 1)",
    ),
    Mutant(
        "first-rejection-one-late",
        S,
        "return (~rejected).long().cumprod(0).sum()",
        "return ((~rejected).long().cumprod(0).sum() + 1).clamp(max=accept_p.shape[0])",
        "keep one draft past the first rejection",
    ),
    Mutant(
        "residual-reversed",
        S,
        "diff = (target - q).clamp_min(0)",
        "diff = (q - target).clamp_min(0)",
        "the residual norm(max(0, q − π)): where the drafter over-proposes, not where it falls short",
    ),
    # trees (verify_tree)
    Mutant(
        "tree-sibling-residual-from-pi",
        T,
        "w = S.residual(w[None], q[c : c + 1])[0]",
        "w = S.residual(S.mixture(r[first : first + 1], q[first : first + 1], p_warped[node : node + 1]), "
        "q[c : c + 1])[0]",
        "a sibling judged against the residual of π, not of what its rejected elder siblings left",
    ),
    Mutant(
        "tree-rejected-sibling-stays",
        T,
        "w = S.residual(w[None], q[c : c + 1])[0]",
        "w = w",
        "a sampled tree's rejected sibling leaves the target as it was (no residual taken)",
    ),
    Mutant(
        "tree-deep-node-vs-root",
        T,
        "w = S.mixture(r[first : first + 1], q[first : first + 1], p_warped[node : node + 1])[0]  # π at the node",
        "w = S.mixture(r[first : first + 1], q[first : first + 1], p_warped[0:1])[0]",
        "every node judged against the root's p",
    ),
    Mutant(
        "tree-rejected-child-kept",
        T,
        "w[x] = 0",
        "w[x] = w[x]",
        "a deterministic tree's rejected child stays in the residual",
    ),
    Mutant(
        "tree-rejected-all-draws-p",
        T,
        "return TreeVerdict(tuple(path), int(S.sample(w, generator)), tuple(kept))",
        "return TreeVerdict(tuple(path), int(S.sample(p_warped[node], generator)), tuple(kept))",
        "when every child is rejected, draw from p instead of the residual",
    ),
    Mutant(
        "tree-leaf-bonus-from-root",
        T,
        "return TreeVerdict(tuple(path), int(S.sample(p_warped[node], generator)), tuple(kept))",
        "return TreeVerdict(tuple(path), int(S.sample(p_warped[0], generator)), tuple(kept))",
        "after a leaf, the bonus drawn from the root's p",
    ),
    # rules
    Mutant(
        "token-v3-reads-q-max",
        R,
        "return (p < (1 - self.alpha) * p.max(-1, keepdim=True).values).float()",
        "return (p < (1 - self.alpha) * q.max(-1, keepdim=True).values).float()",
        "token_v3 compares p(v) with max q instead of max p",
    ),
    Mutant(
        "feature-rule-reads-the-argmax",
        C,
        "features=decision_features(tokens, q_raw if real_q else None, p_raw),  # (k, F)",
        "features=decision_features(q_raw.argmax(-1), q_raw if real_q else None, p_raw),  # (k, F)",
        "a rule that reads features (a learned head) is given q's top token's, not the drafted token's",
    ),
    Mutant(
        "feature-rule-bonus-at-the-argmax",
        C,
        "if rule.reads_features:  # r is read at a drafted token: the bonus is one more draft, judged as the k were",
        "if False:",
        "a rule read at the drafted token draws its bonus from π_{k+1} with r taken at q's top token",
    ),
    # drafting: the stop rule must not see the token it decides about
    Mutant(
        "stop-rule-peeks-at-the-draw",
        D,
        "confidences = self._confidences(step, q, asked, drawing, plans, blocks, drafted)",
        "confidences = self._confidences(step, q, asked, drawing, plans, blocks, drafted)\n"
        "        if confidences is not None and q is not None and step.logits is not None:\n"
        "            peek = [torch.Generator().set_state(g.get_state()) if g is not None else None "
        "for g in generators]\n"
        "            confidences = [float(q[i, int(sampling.pick(step.logits[i], self.params, peek[asked[i]]))]) "
        "for i in range(len(asked))]",
        "the stop rule reads the probability of the token about to be drawn (not a stopping time)",
    ),
]

MUTANTS.append(
    Mutant(
        "batch-logits-right-aligned",
        B,
        "self._verify(r, x, d, p_logits[b, : x.shape[0] + 1], c, t)",
        "self._verify(r, x, d, p_logits[b, p_logits.shape[1] - x.shape[0] - 1 :], c, t)",
        "a row whose block is shorter than the batch's widest reads the logits of the block's last positions",
    )
)

MUTANTS.append(
    Mutant(
        "sequential-deferral-keeps-the-draft",
        B,
        "token = int(sampling.pick(p_logits, seq.params, seq.generator).item())",
        "token = x",
        "the sequential cascade calls the target where it defers but keeps the drafter's token",
    )
)

MUTANTS.append(
    Mutant(
        "predictor-reads-the-draw",
        D,
        "confidences = self._confidences(step, q, asked, drawing, plans, blocks, drafted)",
        "confidences = self._confidences(step, q, asked, drawing, plans, blocks, drafted)\n"
        "        if confidences is not None and self.predictor is not None and step.logits is not None:\n"
        "            peek = [torch.Generator().set_state(g.get_state()) if g is not None else None "
        "for g in generators]\n"
        "            xs = torch.tensor([int(sampling.pick(step.logits[i], params[b], peek[b])) "
        "for i, b in enumerate(asked)])\n"
        "            feats = decision_features(xs, q, None)\n"
        "            confidences = [float(self.predictor.predict_acceptance(feats[i : i + 1], torch.tensor([drafted]), "
        "blocks[b])[0]) for i, b in enumerate(asked)]",
        "the acceptance predictor scores the token about to be drawn, not q's top token (no longer a stopping time)",
    )
)

BY_NAME = {m.name: m for m in MUTANTS}
