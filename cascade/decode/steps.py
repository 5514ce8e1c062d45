"""The engine's steps, one per mode (SPEC.md "One speculative step"): each takes the live rows of a batch and
returns, per row, the tokens it emits and its `StepRecord`.

    target       one target call, one token per row
    drafter      the drafter's block per row, every token emitted
    sequential   one drafted token; a q-only rule decides whether the target replaces it (one row)
    speculative  draft -> verify k + 1 positions of every row in one target call -> defer + accept -> roll back -> log
                 (also lossy mode, with lenient acceptance)

`Steps` is the half of `cascade.decode.engine.Engine` that runs them; the engine's loop (prefill, step, leave) calls
`step_fn`. Shapes: B = live rows, k = drafted tokens in a row's block, K = the widest block, V = the vocabulary.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import torch

from cascade.decode.drafter_rows import RowDrafters
from cascade.decode.drafting import Draft, Drafting
from cascade.decode.row import Row, plan_rows
from cascade.drafter import Drafter, Feedback
from cascade.errors import CascadeError, PluginError, plugin_errors
from cascade.features import BlockContext, decision_features
from cascade.metrics import Decision, StepRecord, block_decisions, draft_row, emitted_by_target
from cascade.policy import Policy
from cascade.rules import Rule
from cascade.runtime.ragged import RaggedLM
from cascade.schedules.base import DraftPlan
from cascade.verify import sampling
from cascade.verify.chain import Verdict, deferral, q_unscaled, verify_block
from cascade.verify.masks import check_parents
from cascade.verify.tree import TreeVerdict, read_verdicts, verdict_deferrals, verify_tree

Results = list[tuple[list[int], StepRecord]]  # per live row: the tokens a step emits and its record


class Steps:
    """The step functions over what an engine holds (set by `Engine.__init__`)."""

    policy: Policy
    target: RaggedLM
    drafter: Drafter | None
    drafter_name: str | None
    drafters: RowDrafters | None
    drafting: Drafting | None
    rule: Rule
    params: sampling.SamplingParams
    lenience: float | None
    lookahead: bool
    reads_features: bool
    wants_hidden: bool
    predictor: Any
    device: torch.device
    max_draft: int

    def _target_step(self, rows: list[Row]) -> Results:
        t0 = time.perf_counter()
        p_logits = self.target.forward([row.last for row in rows])[:, -1]  # (B, V)
        if all(r.params.greedy for r in rows):
            tokens = p_logits.argmax(-1).tolist()  # one readback for the batch
        else:  # each row draws from its own stream
            tokens = torch.stack(
                [sampling.pick(p_logits[b], r.params, r.generator) for b, r in enumerate(rows)]
            ).tolist()
        dt = (time.perf_counter() - t0) / len(rows)  # each row's share of the step
        return [
            (
                [t],
                StepRecord(
                    index=len(r.steps),
                    block_size=0,
                    drafted=0,
                    accepted=0,
                    emitted=(t,),
                    deferred=0,
                    target_calls=1,
                    drafter_calls=0,
                    draft_seconds=0.0,
                    verify_seconds=dt,
                    decisions=(emitted_by_target(0, "target", t),) if r.record else (),
                    row=r.index,
                ),
            )
            for r, t in zip(rows, tokens)
        ]

    def _drafter_step(self, rows: list[Row]) -> Results:
        ks = [max(1, min(r.schedule.plan(r.remaining).k, r.remaining)) for r in rows]
        ctxs = [self._block(r) for r in rows]
        t0 = time.perf_counter()
        drafts = self._draw(rows, [DraftPlan(k) for k in ks], ks, ctxs)
        if any(d.tokens.shape[0] == 0 or d.parents is not None for d in drafts):
            raise PluginError(
                f"drafter {self.drafter_name!r} proposed no token or a tree in drafter-only mode "
                "(trees are verified, in mode speculative)"
            )
        self._observe([Feedback(n_accepted=d.tokens.shape[0], drafted=d.tokens.shape[0]) for d in drafts])
        dt = (time.perf_counter() - t0) / len(rows)
        out: Results = []
        for r, k, ctx, draft in zip(rows, ks, ctxs, drafts):
            tokens = draft.tokens.tolist()
            if ctx is not None:
                r.track(len(tokens), len(tokens), draft.tokens, draft.probs)
            decisions: tuple[Decision, ...] = ()
            if r.record:  # nothing verifies: the target-side features stay absent
                feats = decision_features(draft.tokens, draft.probs, None).tolist()  # (k, F)
                decisions = tuple(
                    draft_row(i, t, t, deferred=False, features=f) for i, (t, f) in enumerate(zip(tokens, feats))
                )
            out.append(
                (
                    tokens,
                    StepRecord(
                        index=len(r.steps),
                        block_size=k,
                        drafted=len(tokens),
                        accepted=len(tokens),
                        emitted=tuple(tokens),
                        deferred=0,
                        target_calls=0,
                        drafter_calls=draft.calls,
                        draft_seconds=dt,
                        verify_seconds=0.0,
                        decisions=decisions,
                        context=ctx,
                        row=r.index,
                    ),
                )
            )
        return out

    def _sequential_step(self, rows: list[Row]) -> Results:
        """Token-level cascade (one row): the drafter decodes; deferred positions go to the target."""
        (seq,) = rows
        ctx = self._block(seq)
        t0 = time.perf_counter()
        (draft,) = self._draw(rows, [DraftPlan(1)], [1], [ctx])  # x: (1,), q: (1, V)
        q_raw = q_unscaled(draft.tokens, draft.probs, self.target.vocab_size)  # (1, V)
        _, r_x = deferral(seq.rule, draft.tokens, q_raw, None, ctx, real_q=draft.probs is not None)  # r(x) (1,)
        x, deferred = torch.stack([draft.tokens[0].float(), r_x[0]]).tolist()  # one readback (ids < 2^24)
        x, deferred = int(x), bool(deferred)
        t1 = time.perf_counter()
        target_calls, p_raw = 0, None
        if deferred:
            # the target catches up over every pending token in this one call
            p_logits = self.target.forward([seq.buf[self.target.length : seq.n]])[0, -1:]  # (1, V)
            token = int(sampling.pick(p_logits, seq.params, seq.generator).item())
            p_raw = sampling.softmax(p_logits)  # (1, V)
            target_calls = 1
        else:
            token = x
        self._observe([Feedback(n_accepted=0 if deferred else 1, drafted=1, next_token=token if deferred else None)])
        if ctx is not None:
            seq.track(1, 0 if deferred else 1, draft.tokens, draft.probs)
        t2 = time.perf_counter()
        decisions: tuple[Decision, ...] = ()
        if seq.record:
            f = decision_features(draft.tokens, draft.probs, p_raw)[0].tolist()  # (F,) no q: absent
            decisions = (draft_row(0, x, None if deferred else token, deferred=deferred, features=f),)
            if deferred:
                decisions += (emitted_by_target(0, "target", token),)
        return [
            (
                [token],
                StepRecord(
                    index=len(seq.steps),
                    block_size=1,
                    drafted=1,
                    accepted=0 if deferred else 1,
                    emitted=(token,),
                    deferred=int(deferred),
                    target_calls=target_calls,
                    drafter_calls=draft.calls,
                    draft_seconds=t1 - t0,
                    verify_seconds=t2 - t1,
                    decisions=decisions,
                    context=ctx,
                    row=seq.index,
                ),
            )
        ]

    def _speculative_step(self, rows: list[Row]) -> Results:
        """Draft k per row, verify k + 1 positions of every row in one target call, accept per row, roll back."""
        plans = plan_rows(rows)
        asked = [min(p.k, r.remaining - 1) for p, r in zip(plans, rows)]
        ctxs = [self._block(r) for r in rows]  # where each block sits (rules that read features, the log)
        t0 = time.perf_counter()
        # draft: up to asked_b tokens x_1..x_k with q_1..q_k (and q_{k+1} for a cascade's bonus) for every row;
        # a chain, or a tree when the drafter gives parents (cascade.verify.tree)
        drafts = self._draw(rows, plans, asked, ctxs)
        xs = [d.tokens for d in drafts]  # (k_b,) k_b <= asked_b (where the schedule's stop rule stopped it)
        trees = [self._tree(d) for d in drafts]
        t1 = time.perf_counter()
        # verify: one target pass over each row's [last emitted, x_1..x_k] gives its p_1..p_{k+1}
        p_logits = self.target.forward(
            [torch.cat([r.last, x]) for r, x in zip(rows, xs)],
            hidden=self.wants_hidden,
            trees=trees if any(t is not None for t in trees) else None,
        )  # (B, K + 1, V)
        # defer + accept, per row: π = q(1 − r) + η p, keep x_i with prob min(1, π(x_i)/q(x_i)), then a residual or
        # bonus; a tree walks from the root through the children it accepts
        verdicts = [
            self._verify(r, x, d, p_logits[b, : x.shape[0] + 1], c, t)
            for b, (r, x, d, c, t) in enumerate(zip(rows, xs, drafts, ctxs, trees))
        ]
        accepted = read_verdicts(verdicts, xs)  # per row: (n, next token, drafted tokens, accepted path); one readback
        # roll back: each row keeps its context, its last token and its n accepted drafts (a tree: its path)
        kept = [list(range(n + 1)) if path is None else [0, *(i + 1 for i in path)] for n, _, _, path in accepted]
        self.target.rollback(
            [r.n + n for r, (n, _, _, _) in zip(rows, accepted)],
            keep=[None if path is None else k for k, (_, _, _, path) in zip(kept, accepted)],
        )
        states = self.target.hidden  # (B, K + 1, d) when the drafter reads the target's features
        self._observe(
            [
                Feedback(
                    n_accepted=n,
                    drafted=len(toks),
                    next_token=nxt,
                    path=path,
                    hidden_states=None if states is None else states[b, kept[b]],
                )
                if drafts[b].asked or self.wants_hidden
                else None  # features: every step's
                for b, (n, nxt, toks, path) in enumerate(accepted)
            ]
        )
        self.target.maybe_compact(incoming=self.max_draft + 1)
        t2 = time.perf_counter()
        share = 1 / len(rows)  # each row's share of the batch's drafting and verifying time
        out: Results = []
        for b, r in enumerate(rows):
            n, nxt, toks, path = accepted[b]
            k = len(toks)
            if k > 0:  # nothing drafted (no n-gram match) says nothing about the block size
                r.schedule.update(k, n)
                if ctxs[b] is not None:
                    r.track(k, n, xs[b], drafts[b].probs)
            # log: emitted = the accepted drafts + the correction or bonus token
            emitted = (toks[:n] if path is None else [toks[i] for i in path]) + [nxt]
            deferred = int(sum(verdict_deferrals(verdicts[b]))) if k > 0 else 0
            decisions = (
                block_decisions(
                    xs[b],
                    toks,
                    drafts[b].probs,
                    drafts[b].parents,
                    p_logits[b, : k + 1],
                    verdict_deferrals(verdicts[b]),
                    n,
                    nxt,
                    path,
                )
                if r.record
                else ()
            )
            out.append(
                (
                    emitted,
                    StepRecord(
                        index=len(r.steps),
                        block_size=asked[b],
                        drafted=k,
                        accepted=n,
                        emitted=tuple(emitted),
                        deferred=deferred,
                        target_calls=1,
                        drafter_calls=drafts[b].calls,
                        draft_seconds=(t1 - t0) * share,
                        verify_seconds=(t2 - t1) * share,
                        decisions=decisions,
                        context=ctxs[b],
                        row=r.index,
                    ),
                )
            )
        return out

    def _tree(self, draft: Draft) -> list[int] | None:
        """A tree draft's parents (checked), or None for a chain."""
        if draft.parents is None:
            return None
        if self.lenience is not None or (draft.probs is None and self.rule.name != "none"):
            raise CascadeError(
                f"drafter {self.drafter_name!r} proposed a tree: trees are verified in mode "
                "speculative, and a deterministic drafter's tree only losslessly (rule none)"
            )
        parents = draft.parents.tolist()
        check_parents(parents, self.drafter_name)
        return parents

    def _verify(
        self,
        row: Row,
        x: torch.Tensor,
        draft: Draft,
        p_logits: torch.Tensor,
        ctx: BlockContext | None,
        tree: list[int] | None,
    ) -> Verdict | TreeVerdict:
        q = None if draft.probs is None else draft.probs.to(self.device)  # (k, V)
        if tree is not None:
            return verify_tree(x, tree, q, p_logits, row.rule, row.params, row.generator, block=ctx)
        q_next = None if (draft.next_probs is None or not self.lookahead) else draft.next_probs.to(self.device)  # (V,)
        return verify_block(x, q, p_logits, row.rule, row.params, row.generator, self.lenience, q_next, block=ctx)

    def _block(self, row: Row) -> BlockContext | None:
        """Where the next block sits, when a rule or a predictor reads it or the decisions are logged (else None)."""
        return row.block if (self.reads_features or row.record or self.predictor is not None) else None

    def _draw(
        self, rows: list[Row], plans: Sequence[DraftPlan], ks: Sequence[int], ctxs: Sequence[BlockContext | None]
    ) -> list[Draft]:
        """Every row's draft: up to ks[b] tokens, drawn from its own stream where its plan's stop rule lets it."""
        assert self.drafting is not None
        return self.drafting.draw(
            [r.context for r in rows],
            [r.buf for r in rows],
            [r.generator for r in rows],
            [r.params for r in rows],
            plans,
            ks,
            ctxs,
        )

    def _observe(self, feedbacks: Sequence[Feedback | None]) -> None:
        assert self.drafters is not None
        with self._drafter_errors("observe"):
            self.drafters.observe(feedbacks)

    def _drafter_errors(self, method: str) -> contextlib.AbstractContextManager[None]:
        return plugin_errors(f"drafter {self.drafter_name!r} raised in {method}()")
