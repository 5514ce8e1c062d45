"""Drafting: the one owner of how far each row drafts (SPEC.md "One speculative step", "Adaptive verification length").

The engine drives the drafter round by round, as gpt-fast's `decode_n_tokens` drives its draft model:

    round j = 0, 1, ..:  ask the rows still drafting for their next position (one drafter call)
                         -> each row's confidence c_j, known before x_j is drawn
                         -> the schedule's stop rule on c_1..c_j: rows that stop keep q_j as q_{k+1}
                         -> the others draw x_j from q_j with their own random stream

A row stops at its plan's k (one more round when a cascade needs q_{k+1} for its bonus), where its
stop rule says, or where a deterministic drafter has nothing more to propose. Deciding to draw x_j
from c_1..c_j alone is a stopping time of the draft, so verification stays exactly lossless (or
exactly π). Nothing drawn here is cut away later: what the drafter is told about is what it drew.

A tree drafter (`proposes_trees`) proposes its tree in one call within the row's k instead.

Shapes: R = rows asked in a round, V = the vocabulary, k = a row's drafted tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cascade.decode.drafter_rows import RowDrafters
from cascade.drafter import Drafter, DraftRound, DraftStep, TreeRound
from cascade.errors import CascadeError, PluginError, plugin_errors
from cascade.features import BlockContext, decision_features
from cascade.schedules.base import AcceptancePredictor, DraftPlan, StopRule
from cascade.verify import sampling


@dataclass(frozen=True)
class Draft:
    """One row's draft as the engine drew it."""

    tokens: torch.Tensor  # (k,) long
    probs: torch.Tensor | None = None  # (k, V) q at T = 1 at each drafted position; None: deterministic
    next_probs: torch.Tensor | None = None  # (V,) q_{k+1}, when a cascade asked for it
    parents: torch.Tensor | None = None  # (k,) tree drafts (cascade.verify.tree); None: a chain
    calls: int = 0  # drafter calls (forward passes or lookups) this row took part in
    asked: bool = False  # the drafter was asked for this row (it is owed a verdict)


def empty_draft(device: torch.device) -> Draft:
    return Draft(torch.empty(0, dtype=torch.long, device=device))


@dataclass
class _Growing:
    """A row's draft while it is drawn."""

    k: int  # the most tokens it may draw
    lookahead: bool  # wants q_{k+1}
    tokens: list[int]
    probs: list[torch.Tensor]
    confidences: list[float]
    next_probs: torch.Tensor | None = None
    calls: int = 0
    done: bool = False

    def draft(self, device: torch.device) -> Draft:
        tokens = torch.tensor(self.tokens, dtype=torch.long, device=device)
        probs = torch.stack(self.probs) if self.probs else None
        return Draft(tokens, probs, self.next_probs, None, self.calls, asked=self.k > 0 or self.lookahead)


@dataclass(frozen=True)
class Drafting:
    """What a step's drafting needs besides the rows: fixed per engine."""

    drafters: RowDrafters
    params: sampling.SamplingParams
    lookahead: bool  # a cascade: q_{k+1} for the bonus (never from a deterministic drafter)
    deterministic: bool
    reads_features: bool  # reads the target's features: not asked where the context has none yet (n < 2)
    max_positions: int | None  # the drafter's own context limit
    predictor: AcceptancePredictor | None  # confidences from an acceptance predictor, else the drafter's
    name: str | None  # the drafter's name, for messages
    schedule: str  # the schedule's name, for messages

    @classmethod
    def of(
        cls,
        drafters: RowDrafters,
        drafter: Drafter,
        params: sampling.SamplingParams,
        lookahead: bool,
        predictor: AcceptancePredictor | None,
        name: str | None,
        schedule: str,
    ) -> Drafting:
        """Drafting for `drafter`, from what it declares (a deterministic drafter gives no q_{k+1})."""
        return cls(
            drafters,
            params,
            lookahead and not drafter.deterministic,
            drafter.deterministic,
            drafter.reads_target_features,
            drafter.max_positions,
            predictor,
            name,
            schedule,
        )

    def draw(
        self,
        contexts: Sequence[torch.Tensor],
        buffers: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator | None],
        params: Sequence[sampling.SamplingParams],
        plans: Sequence[DraftPlan],
        ks: Sequence[int],
        blocks: Sequence[BlockContext | None],
    ) -> list[Draft]:
        """Every row's draft: up to ks[b] tokens after contexts[b] (n_b,), drawn with generators[b] at params[b].

        buffers[b] (>= n_b + ks[b],) holds contexts[b] in its first n_b slots: drafted tokens are written after it
        (the engine's row buffer, overwritten by what the row emits)."""
        device = contexts[0].device if contexts else torch.device("cpu")
        rows = [self._growing(c.shape[0], k) for c, k in zip(contexts, ks)]
        if self.drafters.proposes_trees:  # one call proposes each row's tree (no q_{k+1}: trees verify without it)
            if not any(r.k > 0 for r in rows):
                return [empty_draft(device) for _ in rows]
            return self._trees(contexts, generators, params, plans, rows, device)
        drafted = 0
        while True:
            asked = [b for b, r in enumerate(rows) if not r.done]
            if not asked:
                break
            views = [buffers[b][: contexts[b].shape[0] + drafted] for b in asked]
            step, calls = self._step(views, asked, drafted, [rows[b].k for b in asked])
            for b, c in zip(asked, calls):
                rows[b].calls += c
            self._take(step, asked, rows, plans, blocks, generators, params, buffers, contexts, drafted)
            drafted += 1
        return [r.draft(device) for r in rows]

    # ------------------------------------------------------------------ a round

    def _growing(self, n: int, k: int) -> _Growing:
        look = self.lookahead
        if self.reads_features and n < 2:  # a one-token prompt's first step: the target emits it alone
            k, look = 0, False
        if self.max_positions is not None and n + k + int(look) > self.max_positions:  # the drafter's own context
            k, look = max(0, self.max_positions - n - 1), False
        k = max(k, 0)
        return _Growing(k, look, [], [], [], done=k == 0 and not look)

    def _step(
        self, contexts: list[torch.Tensor], rows: list[int], drafted: int, limits: list[int]
    ) -> tuple[DraftStep, list[int]]:
        with plugin_errors(f"drafter {self.name!r} raised in step()"):
            step, calls = self.drafters.step(DraftRound(contexts, rows, drafted, limits))
        width = len(rows)
        if (step.logits is None) == (step.tokens is None):
            raise PluginError(
                f"drafter {self.name!r} returned a DraftStep with "
                f"{'both' if step.logits is not None else 'neither'} logits and tokens"
            )
        got = (step.logits if step.logits is not None else step.tokens).shape[0]  # type: ignore[union-attr]
        if got != width or (step.confidence is not None and step.confidence.shape[0] != width):
            raise PluginError(f"drafter {self.name!r} answered {got} rows of a round asking {width}")
        return step, calls

    def _take(
        self,
        step: DraftStep,
        asked: list[int],
        rows: list[_Growing],
        plans: Sequence[DraftPlan],
        blocks: Sequence[BlockContext | None],
        generators: Sequence[torch.Generator | None],
        params: Sequence[sampling.SamplingParams],
        buffers: Sequence[torch.Tensor],
        contexts: Sequence[torch.Tensor],
        drafted: int,
    ) -> None:
        """One round's answers: q_{k+1} for rows at their k, then the stop rules, then the draws."""
        q = None if step.logits is None else sampling.softmax(step.logits)  # (R, V) T = 1, what the rules read
        tokens = None if step.tokens is None else step.tokens.tolist()
        drawing: list[int] = []  # positions in `asked` of the rows that may draw x_{drafted+1}
        for i, b in enumerate(asked):
            row = rows[b]
            if len(row.tokens) == row.k or (tokens is not None and tokens[i] < 0):
                row.next_probs = None if q is None or len(row.tokens) < row.k else q[i]
                row.done = True  # a lookahead round, or a deterministic drafter with nothing more
            else:
                drawing.append(i)
        confidences = self._confidences(step, q, asked, drawing, plans, blocks, drafted)
        for i in self._stops(drawing, asked, rows, plans, confidences):
            b = asked[i]
            rows[b].next_probs = None if q is None else q[i]
            rows[b].done = True
        kept = [i for i in drawing if not rows[asked[i]].done]
        if not kept:
            return
        if tokens is not None:
            xs = [tokens[i] for i in kept]
        elif all(params[asked[i]].greedy for i in kept):
            assert step.logits is not None
            xs = step.logits[kept].argmax(-1).tolist()  # one readback for the round
        else:  # each row draws from its own stream
            assert step.logits is not None
            xs = [int(sampling.pick(step.logits[i], params[asked[i]], generators[asked[i]])) for i in kept]
        for i, x in zip(kept, xs):
            b, row = asked[i], rows[asked[i]]
            row.tokens.append(x)
            if q is not None:
                row.probs.append(q[i])
            if confidences is not None:
                row.confidences.append(confidences[i])
            buffers[b][contexts[b].shape[0] + drafted] = x
            row.done = len(row.tokens) == row.k and not (row.lookahead and q is not None)

    def _confidences(
        self,
        step: DraftStep,
        q: torch.Tensor | None,
        asked: list[int],
        drawing: list[int],
        plans: Sequence[DraftPlan],
        blocks: Sequence[BlockContext | None],
        drafted: int,
    ) -> list[float] | None:
        """Each asked row's confidence in its next token, when a stop rule will read it (else None)."""
        if not any(plans[asked[i]].stop is not None for i in drawing):
            return None
        if self.predictor is not None:
            if q is None:
                raise PluginError(
                    f"the acceptance predictor needs the drafter's q; drafter {self.name!r} is deterministic"
                )
            return self._predicted(q, asked, blocks, drafted)
        if step.confidence is not None:
            return step.confidence.tolist()
        if q is None:
            raise PluginError(
                f"schedule {self.schedule!r} needs the drafter's per-token confidence "
                f"(DraftStep.confidence), and drafter {self.name!r} reports none; use another "
                "schedule or a drafter that reports it"
            )
        return q.max(-1).values.tolist()  # the drafter's top probability

    def _predicted(
        self, q: torch.Tensor, asked: list[int], blocks: Sequence[BlockContext | None], drafted: int
    ) -> list[float]:
        """A predictor's confidences: the drafter-side features of q at q's top token, known before x is drawn."""
        feats = decision_features(q.argmax(-1), q, None)  # (R, F) at x = argmax q
        position = torch.tensor([drafted], device=q.device)  # (1,)
        out = []
        with plugin_errors("the acceptance predictor failed"):
            for i, b in enumerate(asked):
                a = self.predictor.predict_acceptance(feats[i : i + 1], position, blocks[b])  # type: ignore[union-attr]
                out.append(float(a.clamp(0, 1)[0]))
        return out

    @staticmethod
    def _stops(
        drawing: list[int],
        asked: list[int],
        rows: list[_Growing],
        plans: Sequence[DraftPlan],
        confidences: list[float] | None,
    ) -> list[int]:
        """Positions in `asked` of the drawing rows whose stop rule says: do not draw x_j. Rows sharing one rule
        (a batch's shared budget) are judged together, with every row's confidences (ended rows: all of theirs)."""
        if confidences is None:
            return []
        groups: dict[int, tuple[StopRule, list[int]]] = {}
        for b, plan in enumerate(plans):
            if plan.stop is not None:
                groups.setdefault(id(plan.stop), (plan.stop, []))[1].append(b)
        at = {b: i for i, b in enumerate(asked)}
        candidates = {asked[i] for i in drawing}
        stopped: list[int] = []
        for rule, members in groups.values():
            if not candidates.intersection(members):
                continue
            seen = [
                rows[b].confidences + [confidences[at[b]]] if b in candidates else rows[b].confidences for b in members
            ]
            verdicts = list(rule(seen))
            stopped += [at[b] for b, stop in zip(members, verdicts) if stop and b in candidates]
        return stopped

    # ------------------------------------------------------------------ trees

    def _trees(
        self,
        contexts: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator | None],
        params: Sequence[sampling.SamplingParams],
        plans: Sequence[DraftPlan],
        rows: list[_Growing],
        device: torch.device,
    ) -> list[Draft]:
        if any(p != params[0] for p in params):
            raise CascadeError(
                f"drafter {self.name!r} proposes trees with one sampling setting per batch: its rows must share "
                "temperature, top-k and top-p"
            )
        if any(p.stop is not None for p in plans):
            raise CascadeError(
                f"drafter {self.name!r} proposed a tree, and schedule {self.schedule!r} "
                "cuts chains by confidence: use constant"
            )
        with plugin_errors(f"drafter {self.name!r} raised in propose_trees()"):
            trees = self.drafters.propose_trees(
                TreeRound(list(contexts), [r.k for r in rows], params[0] if params else self.params, list(generators))
            )
        out = []
        for tree, row in zip(trees, rows):
            k = tree.tokens.shape[0]
            if k > row.k or tree.parents.shape[0] != k:
                raise PluginError(
                    f"drafter {self.name!r} proposed a tree of {k} nodes ({tree.parents.shape[0]} "
                    f"parents) for a budget of {row.k}"
                )
            asked = row.k > 0
            out.append(
                Draft(tree.tokens.to(device), tree.probs, None, tree.parents, tree.calls, asked)
                if k
                else Draft(tree.tokens.to(device), calls=tree.calls, asked=asked)
            )
        return out
