"""The decoding engine: one loop, five modes, B ≥ 1 rows (SPEC.md).

    prefill -> repeat { draft -> verify -> defer/accept -> roll back -> log } -> stop

Each mode is one small step function over the live rows of a batch: it returns,
per row, the tokens it emits and a `StepRecord`:

- target:      one target call, one token per row.
- drafter:     the drafter proposes a block per row, every token is emitted.
- sequential:  the drafter proposes one token; a q-only rule decides whether the
               target is called (over all pending tokens at once) to replace it.
               One row at a time (rows would share no target call).
- speculative: draft k per row, verify k + 1 positions of every row in one target
               call, accept against the rule's π (rule `none` = lossless), emit a
               correction or bonus.
- lossy:       speculative with lenient acceptance min(1, p / (l·q)).

A draft is a chain, or a tree when the drafter gives `Draft.parents` (SPEC.md "Tree drafts",
`cascade.tree`): the same step verifies it in the same target call with a tree mask and true
positions, walks the accepted path, and the cache keeps only that path.

Batches (SPEC.md "Batched decoding", BASS): one drafter call and one target call
per step serve every live row; each row accepts its own n_b tokens, keeps its own
length and true positions in the target's `RaggedLM` cache (rejected slots become
holes, masked out), draws from its own random stream, and leaves the batch when it
finishes. A single prompt is the batch of one: the same code.

Cache convention: the target's KV cache holds every token of a row but its last
emitted one, which is fed first in the next verification together with the drafts.

State: the engine holds what is loaded (models, tokenizer, drafter, rule, decoding
parameters) and the models' KV caches, which every batch's prefill resets.
Everything about one generation lives in its `Row` (cascade.row).

Shapes: B = live rows, P = prompt tokens, n = tokens in a row so far, k = drafted
tokens in a row's block, K = the widest block of the batch, V = the vocabulary.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from cascade import models, profile, sampling
from cascade.build import build_parts
from cascade.drafter import Drafter, Feedback
from cascade.drafter_rows import RowDrafters
from cascade.drafting import Draft, Drafting
from cascade.errors import CascadeError, PluginError, plugin_errors
from cascade.features import BlockContext, decision_features
from cascade.metrics import Decision, Generation, StepRecord, block_decisions, draft_row, emitted_by_target
from cascade.policy import SEQUENTIAL_BATCH, VERIFYING_MODES, Policy, schedule_options
from cascade.ragged import RaggedLM
from cascade.row import Row, Stopper, plan_rows, stream_seed
from cascade.rules import Rule
from cascade.schedule import BUILTIN_SCHEDULES, DraftPlan, Schedule, ScheduleSettings
from cascade.tree import TreeVerdict, check_parents, read_verdicts, verdict_deferrals, verify_tree
from cascade.verify import Verdict, deferral, q_unscaled, verify_block

Prompt = str | list[int]
Results = list[tuple[list[int], StepRecord]]  # per live row: the tokens a step emits and its record


class Engine:
    def __init__(self, policy: Policy, target: Any, tokenizer: Any, drafter: Drafter | None, rule: Rule, *,
                 schedule: type[Schedule] | None = None, predictor: Any = None,
                 drafter_factory: Callable[[], Drafter] | None = None):
        self.policy = policy
        self.mode = policy.mode
        self.target_model = target  # the HF model
        # the model with its KV cache over a batch's rows (reset by every prefill), run lean where it applies
        self.target = RaggedLM(target, policy.target.runtime)
        self.tokenizer = tokenizer
        self.drafter = drafter
        self.drafter_name = policy.drafter.plugin if policy.drafter is not None else None  # for messages
        # the drafter over a batch: its own batch methods, or one instance per row from the factory
        self.drafters = RowDrafters(drafter, drafter_factory, self.drafter_name) if drafter is not None else None
        self.rule = rule
        # a drafter that reads the target's features (EAGLE) gets its last hidden states in the feedback
        self.wants_hidden = drafter is not None and drafter.reads_target_features
        self.device = self.target.device
        d = policy.decoding
        self.params = sampling.SamplingParams(d.temperature, d.top_k, d.top_p)
        self.lenience = d.lenience if self.mode == "lossy" else None
        # a cascade draws the bonus token from π_{k+1}, which needs the drafter's q there
        self.lookahead = self.mode == "speculative" and rule.name != "none"
        self.reads_features = rule.reads_features  # a BlockContext per block
        self.stopper = Stopper(tokenizer, None if d.ignore_eos else tokenizer.eos_token_id, d.stop)
        self.step_fn: Callable[[list[Row]], Results] = {
            "target": self._target_step,
            "drafter": self._drafter_step,
            "sequential": self._sequential_step,
            "speculative": self._speculative_step,
            "lossy": self._speculative_step,
        }[self.mode]
        self.predictor = predictor  # an acceptance predictor for the adaptive schedule (else the drafter's confidence)
        self.schedule_cls, self.schedule_settings = self._schedule(schedule)
        # the one owner of every draft's length and draws (cascade.drafting)
        self.drafting = None if self.drafters is None or drafter is None else Drafting(
            self.drafters, self.params, self.lookahead and not drafter.deterministic, drafter.deterministic,
            drafter.reads_target_features, drafter.max_positions, predictor, self.drafter_name, d.block_schedule)

    def _schedule(self, cls: type[Schedule] | None) -> tuple[type[Schedule], ScheduleSettings]:
        """The block schedule's class and what each generation's instance is built from (costs measured
        or read from the profile cache when it asks for them)."""
        d = self.policy.decoding
        if cls is None:
            if d.block_schedule not in BUILTIN_SCHEDULES:
                raise CascadeError(f"unknown schedule {d.block_schedule!r}: build the engine with Engine.from_policy")
            cls = BUILTIN_SCHEDULES[d.block_schedule]
        costs = None
        if cls.needs_costs:
            costs, _, _ = profile.cost_table(self, d.max_block_size)
        settings = ScheduleSettings(d.block_size, d.min_block_size, d.max_block_size, d.confidence, self.lookahead,
                                    schedule_options(self.policy, cls), costs, self.predictor)
        return cls, settings

    @classmethod
    def from_policy(cls, policy: Policy | str | Path, registry: Any = None, *, loader: Any = models) -> Engine:
        """Validate the policy against the installed plugins, load the models, build the drafter
        (`cascade.build`; `loader` lets a benchmark share model loads between policies)."""
        p = build_parts(policy, registry, loader)
        return cls(p.policy, p.target, p.tokenizer, p.drafter, p.rule, schedule=p.schedule, predictor=p.predictor,
                   drafter_factory=p.drafter_factory)

    def new_schedule(self) -> Schedule:
        """A fresh schedule for one generation."""
        return self.schedule_cls(self.schedule_settings)

    # ------------------------------------------------------------------ the loop

    def encode(self, prompt: Prompt) -> torch.Tensor:
        if isinstance(prompt, str):
            if not prompt:
                raise CascadeError("empty prompt: give at least one token of text")
            ids = self.tokenizer(prompt)["input_ids"]  # with the model's BOS where its tokenizer adds one
        else:
            ids = list(prompt)
        if not ids:
            raise CascadeError("empty prompt: it encodes to no tokens")
        limit = self.target.max_positions
        if limit is not None and len(ids) >= limit:
            raise CascadeError(
                f"prompt is {len(ids)} tokens, but the target's context is {limit}: shorten it to at most {limit - 1}"
            )
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def generate(self, prompt: Prompt | Sequence[Prompt], max_new_tokens: int | None = None, seed: int | None = None,
                 on_step: Callable[[StepRecord], None] | None = None, record_decisions: bool = True,
                 batch_size: int | None = None) -> Generation | list[Generation]:
        """Decode one prompt (text or token ids) -> its Generation; a list of prompts -> one Generation each,
        in order, decoded `batch_size` rows at a time (default: the policy's decoding.batch_size)."""
        single = isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(t, int) for t in prompt))
        prompts = cast(list[Prompt], [prompt] if single else list(prompt))
        out = dict(self.stream(prompts, max_new_tokens, seed, on_step, record_decisions, batch_size))
        return out[0] if single else [out[i] for i in range(len(prompts))]

    @torch.inference_mode()
    def stream(self, prompts: Sequence[Prompt], max_new_tokens: int | None = None, seed: int | None = None,
               on_step: Callable[[StepRecord], None] | None = None, record_decisions: bool = True,
               batch_size: int | None = None) -> Iterator[tuple[int, Generation]]:
        """(index of the prompt, its Generation), each as soon as its row finishes. Every row is seeded from
        `seed` (default decoding.seed) and its prompt (`cascade.row.stream_seed`), so a row's output does not depend
        on its batch or its batch-mates (under a schedule the batch shares, a sampled row's tokens depend on how far
        the batch drafts, and their law does not; in lossy mode, whose law depends on where blocks end, both do);
        batches group prompts of similar lengths (less padding), so rows may finish out of order."""
        d = self.policy.decoding
        size = d.batch_size if batch_size is None else batch_size
        if size < 1:
            raise CascadeError(f"batch size must be at least 1, got {size}")
        if self.mode == "sequential" and size > 1 and len(prompts) > 1:
            raise CascadeError(SEQUENTIAL_BATCH)
        asked = d.max_new_tokens if max_new_tokens is None else max_new_tokens
        if asked < 1:
            raise CascadeError(f"max_new_tokens must be at least 1, got {asked}")
        ids = [self.encode(p) for p in prompts]  # every prompt checked before any decoding
        # batches of prompts of similar lengths: less padding (a row's output does not depend on its batch)
        order = sorted(range(len(ids)), key=lambda i: ids[i].shape[0]) if size > 1 else list(range(len(ids)))
        for start in range(0, len(ids), size):
            chunk = order[start : start + size]
            rows = [self._row(i, ids[i], asked, d.seed if seed is None else seed, record_decisions) for i in chunk]
            yield from self._decode(rows, on_step)

    def _row(self, index: int, prompt: torch.Tensor, asked: int, seed: int, record: bool) -> Row:
        budget = asked if self.target.max_positions is None else min(asked, self.target.max_positions - prompt.shape[0])
        d = self.policy.decoding
        capacity = prompt.shape[0] + budget + max(d.block_size, d.max_block_size) + 2
        generator = torch.Generator(device=self.device)
        generator.manual_seed(stream_seed(seed, prompt))
        return Row(index, prompt, asked, budget, capacity, generator, self.new_schedule(), record)

    def _decode(self, rows: list[Row], on_step: Callable[[StepRecord], None] | None) -> Iterator[tuple[int, Generation]]:
        """Decode one batch: every live row steps together; finished rows leave and are yielded."""
        if self.schedule_cls.shared:  # one schedule for the batch (BASS, adaptive)
            for row in rows[1:]:
                row.schedule = rows[0].schedule
        t0 = time.perf_counter()
        self._prefill(rows)
        live = rows
        while live:
            for row, (emitted, step) in zip(live, self.step_fn(live)):
                step = row.take(emitted, step, self.stopper, self.mode in VERIFYING_MODES, t0)
                if on_step is not None:
                    on_step(step)
            keep = [b for b, row in enumerate(live) if not row.done]
            if len(keep) < len(live):
                self._leave(keep)
                for row in live:
                    if row.done:
                        yield row.index, row.result(self.tokenizer, self.stopper, t0)
                live = [live[b] for b in keep]

    def _prefill(self, rows: list[Row]) -> None:
        """Caches hold each prompt but its last token; the drafter prefills itself on reset."""
        capacity = max(row.buf.shape[0] for row in rows)
        self.target.reset(len(rows), capacity)
        features = None
        prefilled = self.mode != "drafter" and any(row.n > 1 for row in rows)
        if prefilled:
            self.target.forward([row.prompt[:-1] for row in rows], last_only=True, hidden=self.wants_hidden)
            states = self.target.hidden  # (B, P - 1, d) left-padded, for a drafter that reads the target's features
            features = None if states is None else [states[b, states.shape[1] - r.n + 1 :] for b, r in enumerate(rows)]
        if self.drafters is not None:
            with self._drafter_errors("reset"):
                self.drafters.start([row.prompt for row in rows])
                if features is not None:
                    self.drafters.target_features(features)
                if prefilled:
                    self.drafters.adopt_target_cache(self.target)

    def _leave(self, keep: list[int]) -> None:
        """Finished rows leave the batch: the caches keep only the rows in `keep`."""
        if self.mode != "drafter" and keep:
            self.target.select(keep)
        if self.drafters is not None and keep:
            with self._drafter_errors("keep_rows"):
                self.drafters.keep(keep)

    def _drafter_errors(self, method: str) -> contextlib.AbstractContextManager[None]:
        return plugin_errors(f"drafter {self.drafter_name!r} raised in {method}()")

    # ------------------------------------------------------------------ steps

    def _target_step(self, rows: list[Row]) -> Results:
        t0 = time.perf_counter()
        p_logits = self.target.forward([row.last for row in rows])[:, -1]  # (B, V)
        if self.params.greedy:
            tokens = p_logits.argmax(-1).tolist()  # one readback for the batch
        else:  # each row draws from its own stream
            tokens = torch.stack([sampling.pick(p_logits[b], self.params, r.generator) for b, r in enumerate(rows)]).tolist()
        dt = (time.perf_counter() - t0) / len(rows)  # each row's share of the step
        return [([t], StepRecord(index=len(r.steps), block_size=0, drafted=0, accepted=0, emitted=(t,), deferred=0,
                                 target_calls=1, drafter_calls=0, draft_seconds=0.0, verify_seconds=dt,
                                 decisions=(emitted_by_target(0, "target", t),) if r.record else (), row=r.index))
                for r, t in zip(rows, tokens)]

    def _drafter_step(self, rows: list[Row]) -> Results:
        ks = [max(1, min(r.schedule.plan(r.remaining).k, r.remaining)) for r in rows]
        ctxs = [self._block(r) for r in rows]
        t0 = time.perf_counter()
        drafts = self._draw(rows, [DraftPlan(k) for k in ks], ks, ctxs)
        if any(d.tokens.shape[0] == 0 or d.parents is not None for d in drafts):
            raise PluginError(f"drafter {self.drafter_name!r} proposed no token or a tree in drafter-only mode "
                              "(trees are verified, in mode speculative)")
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
                decisions = tuple(draft_row(i, t, t, deferred=False, features=f) for i, (t, f) in enumerate(zip(tokens, feats)))
            out.append((tokens, StepRecord(index=len(r.steps), block_size=k, drafted=len(tokens), accepted=len(tokens),
                                           emitted=tuple(tokens), deferred=0, target_calls=0, drafter_calls=draft.calls,
                                           draft_seconds=dt, verify_seconds=0.0, decisions=decisions, context=ctx,
                                           row=r.index)))
        return out

    def _sequential_step(self, rows: list[Row]) -> Results:
        """Token-level cascade (one row): the drafter decodes; deferred positions go to the target."""
        (seq,) = rows
        ctx = self._block(seq)
        t0 = time.perf_counter()
        (draft,) = self._draw(rows, [DraftPlan(1)], [1], [ctx])  # x: (1,), q: (1, V)
        q_raw = q_unscaled(draft.tokens, draft.probs, self.target.vocab_size)  # (1, V)
        _, r_x = deferral(self.rule, draft.tokens, q_raw, None, ctx, real_q=draft.probs is not None)  # r(x) (1,)
        x, deferred = torch.stack([draft.tokens[0].float(), r_x[0]]).tolist()  # one readback (ids < 2^24)
        x, deferred = int(x), bool(deferred)
        t1 = time.perf_counter()
        target_calls, p_raw = 0, None
        if deferred:
            # the target catches up over every pending token in this one call
            p_logits = self.target.forward([seq.buf[self.target.length : seq.n]])[0, -1:]  # (1, V)
            token = int(sampling.pick(p_logits, self.params, seq.generator).item())
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
        return [([token], StepRecord(index=len(seq.steps), block_size=1, drafted=1, accepted=0 if deferred else 1,
                                     emitted=(token,), deferred=int(deferred), target_calls=target_calls,
                                     drafter_calls=draft.calls, draft_seconds=t1 - t0, verify_seconds=t2 - t1,
                                     decisions=decisions, context=ctx, row=seq.index))]

    def _speculative_step(self, rows: list[Row]) -> Results:
        """Draft k per row, verify k + 1 positions of every row in one target call, accept per row, roll back."""
        plans = plan_rows(rows)
        asked = [min(p.k, r.remaining - 1) for p, r in zip(plans, rows)]
        ctxs = [self._block(r) for r in rows]  # where each block sits (rules that read features, the log)
        t0 = time.perf_counter()
        # draft: up to asked_b tokens x_1..x_k with q_1..q_k (and q_{k+1} for a cascade's bonus) for every row;
        # a chain, or a tree when the drafter gives parents (cascade.tree)
        drafts = self._draw(rows, plans, asked, ctxs)
        xs = [d.tokens for d in drafts]  # (k_b,) k_b <= asked_b (where the schedule's stop rule stopped it)
        trees = [self._tree(d) for d in drafts]
        t1 = time.perf_counter()
        # verify: one target pass over each row's [last emitted, x_1..x_k] gives its p_1..p_{k+1}
        p_logits = self.target.forward([torch.cat([r.last, x]) for r, x in zip(rows, xs)], hidden=self.wants_hidden,
                                       trees=trees if any(t is not None for t in trees) else None)  # (B, K + 1, V)
        # defer + accept, per row: π = q(1 − r) + η p, keep x_i with prob min(1, π(x_i)/q(x_i)), then a residual or
        # bonus; a tree walks from the root through the children it accepts
        verdicts = [self._verify(r, x, d, p_logits[b, : x.shape[0] + 1], c, t)
                    for b, (r, x, d, c, t) in enumerate(zip(rows, xs, drafts, ctxs, trees))]
        accepted = read_verdicts(verdicts, xs)  # per row: (n, next token, drafted tokens, accepted path); one readback
        # roll back: each row keeps its context, its last token and its n accepted drafts (a tree: its path)
        kept = [list(range(n + 1)) if path is None else [0, *(i + 1 for i in path)] for n, _, _, path in accepted]
        self.target.rollback([r.n + n for r, (n, _, _, _) in zip(rows, accepted)],
                             keep=[None if path is None else k for k, (_, _, _, path) in zip(kept, accepted)])
        states = self.target.hidden  # (B, K + 1, d) when the drafter reads the target's features
        self._observe([Feedback(n_accepted=n, drafted=len(toks), next_token=nxt, path=path,
                                hidden_states=None if states is None else states[b, kept[b]])
                       if drafts[b].asked or self.wants_hidden else None  # features: every step's
                       for b, (n, nxt, toks, path) in enumerate(accepted)])
        self.target.maybe_compact(incoming=max(self.policy.decoding.block_size, self.policy.decoding.max_block_size) + 1)
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
            decisions = block_decisions(xs[b], toks, drafts[b].probs, drafts[b].parents, p_logits[b, : k + 1],
                                        verdict_deferrals(verdicts[b]), n, nxt, path) if r.record else ()
            out.append((emitted, StepRecord(index=len(r.steps), block_size=asked[b], drafted=k, accepted=n,
                                            emitted=tuple(emitted), deferred=deferred, target_calls=1,
                                            drafter_calls=drafts[b].calls, draft_seconds=(t1 - t0) * share,
                                            verify_seconds=(t2 - t1) * share, decisions=decisions, context=ctxs[b],
                                            row=r.index)))
        return out

    def _tree(self, draft: Draft) -> list[int] | None:
        """A tree draft's parents (checked), or None for a chain."""
        if draft.parents is None:
            return None
        if self.lenience is not None or (draft.probs is None and self.rule.name != "none"):
            raise CascadeError(f"drafter {self.drafter_name!r} proposed a tree: trees are verified in mode "
                               "speculative, and a deterministic drafter's tree only losslessly (rule none)")
        parents = draft.parents.tolist()
        check_parents(parents, self.drafter_name)
        return parents

    def _verify(self, row: Row, x: torch.Tensor, draft: Draft, p_logits: torch.Tensor,
                ctx: BlockContext | None, tree: list[int] | None) -> Verdict | TreeVerdict:
        q = None if draft.probs is None else draft.probs.to(self.device)  # (k, V)
        if tree is not None:
            return verify_tree(x, tree, q, p_logits, self.rule, self.params, row.generator, block=ctx)
        q_next = None if (draft.next_probs is None or not self.lookahead) else draft.next_probs.to(self.device)  # (V,)
        return verify_block(x, q, p_logits, self.rule, self.params, row.generator, self.lenience, q_next, block=ctx)

    def _block(self, row: Row) -> BlockContext | None:
        """Where the next block sits, when a rule or a predictor reads it or the decisions are logged (else None)."""
        return row.block if (self.reads_features or row.record or self.predictor is not None) else None

    def _draw(self, rows: list[Row], plans: Sequence[DraftPlan], ks: Sequence[int],
              ctxs: Sequence[BlockContext | None]) -> list[Draft]:
        """Every row's draft: up to ks[b] tokens, drawn from its own stream where its plan's stop rule lets it."""
        assert self.drafting is not None
        return self.drafting.draw([r.context for r in rows], [r.buf for r in rows], [r.generator for r in rows],
                                  plans, ks, ctxs)

    def _observe(self, feedbacks: Sequence[Feedback | None]) -> None:
        assert self.drafters is not None
        with self._drafter_errors("observe"):
            self.drafters.observe(feedbacks)

