"""The decoding engine: one loop, five modes (SPEC.md).

    prefill -> repeat { draft -> verify -> defer/accept -> roll back -> log } -> stop

Each mode is one small step function that returns the tokens it emits and a
`StepRecord`:

- target:      one target call, one token.
- drafter:     the drafter proposes a block, every token is emitted.
- sequential:  the drafter proposes one token; a q-only rule decides whether the
               target is called (over all pending tokens at once) to replace it.
- speculative: draft k, verify k + 1 positions in one target call, accept against
               the rule's π (rule `none` = lossless), emit a correction or bonus.
- lossy:       speculative with lenient acceptance min(1, p / (l·q)).

Cache convention: the target's KV cache holds every token but the last emitted
one, which is fed first in the next verification together with the drafts.

State: the engine holds what is loaded (models, tokenizer, drafter, rule, decoding
parameters) and the models' KV caches, which every prefill resets (the drafter's
own cache likewise, in `reset`). Everything about one generation (its token
buffer, random stream, record flag, block schedule, recent acceptance) lives in
a `_Sequence`, so one engine serves any number of generations in turn.

Shapes: P = prompt tokens, n = tokens in the sequence so far, k = drafted tokens
in the block, V = the target's vocabulary.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cascade import models, profile, sampling
from cascade.drafter import Draft, Drafter, DrafterContext, DraftRequest, Feedback
from cascade.errors import CascadeError, PluginError, plugin_errors
from cascade.features import (
    LOGQ_QUANTILES,
    LOGQ_WINDOW,
    RECENT_STEPS,
    BlockContext,
    decision_features,
    quantile,
)
from cascade.metrics import Decision, Generation, Metrics, StepRecord, draft_row, emitted_by_target, truncate_step
from cascade.policy import (
    VERIFYING_MODES,
    Policy,
    check_policy,
    drafter_options,
    load_policy,
    predictor_options,
    rule_options,
    schedule_options,
)
from cascade.rules import Rule
from cascade.schedule import BUILTIN_SCHEDULES, Schedule, ScheduleSettings, cut_draft, predicted_draft
from cascade.verify import Verdict, deferral, q_unscaled, verify_block

EMPTY_DRAFT = Draft(torch.empty(0, dtype=torch.long), calls=0)
STOP_WINDOW = 64  # generated tokens decoded when looking for a stop string


class _Sequence:
    """Mutable state of one generation: the token buffer, its random stream and what was emitted."""

    def __init__(self, prompt: torch.Tensor, capacity: int, generator: torch.Generator,
                 schedule: Schedule, record: bool):
        self.buf = torch.empty(capacity, dtype=torch.long, device=prompt.device)  # (capacity,)
        self.buf[: prompt.shape[0]] = prompt
        self.n = prompt.shape[0]  # tokens in the sequence (prompt + emitted)
        self.generated: list[int] = []
        self.generator = generator  # every random draw of this generation
        self.schedule = schedule  # this generation's block sizes
        self.record = record  # build per-position Decision rows
        self.recent: deque[tuple[int, int]] = deque(maxlen=RECENT_STEPS)  # (drafted, accepted) per step
        self.logq: deque[float] = deque(maxlen=LOGQ_WINDOW)  # log q(x) of the latest drafted positions

    @property
    def block(self) -> BlockContext:
        """Where the next block starts: for rules that read features, and for the log."""
        drafted = sum(d for d, _ in self.recent)
        rate = sum(a for _, a in self.recent) / drafted if drafted else math.nan
        q10, q50 = (quantile(list(self.logq), q) for q in LOGQ_QUANTILES)
        return BlockContext(sequence_position=self.n, recent_acceptance=rate, logq_q10=q10, logq_q50=q50)

    def track(self, drafted: int, accepted: int, tokens: torch.Tensor, q: torch.Tensor | None) -> None:
        """After a block: its acceptance and its drafts' log q(x) (tokens (k,), q (k, V) or None)."""
        self.recent.append((drafted, accepted))
        if q is not None and drafted:
            self.logq.extend(q.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30).log().tolist())

    @property
    def context(self) -> torch.Tensor:
        return self.buf[: self.n]  # (n,) a view, no copy

    def append(self, tokens: list[int]) -> None:
        m = len(tokens)
        self.buf[self.n : self.n + m] = torch.tensor(tokens, dtype=torch.long)
        self.n += m
        self.generated.extend(tokens)


class Engine:
    def __init__(self, policy: Policy, target: Any, tokenizer: Any, drafter: Drafter | None, rule: Rule, *,
                 schedule: type[Schedule] | None = None, predictor: Any = None):
        self.policy = policy
        self.mode = policy.mode
        self.target_model = target  # the HF model
        self.target = models.CachedLM(target)  # the model with its KV cache (reset by every prefill)
        self.tokenizer = tokenizer
        self.drafter = drafter
        self.drafter_name = policy.drafter.plugin if policy.drafter is not None else None  # for messages
        self.rule = rule
        self.device = self.target.device
        d = policy.decoding
        self.params = sampling.SamplingParams(d.temperature, d.top_k, d.top_p)
        self.lenience = d.lenience if self.mode == "lossy" else None
        # a cascade draws the bonus token from π_{k+1}, which needs the drafter's q there
        self.lookahead = self.mode == "speculative" and rule.name != "none"
        self.reads_features = bool(getattr(rule, "reads_features", False))  # a BlockContext per block
        self.eos_id = None if d.ignore_eos else tokenizer.eos_token_id
        self.step_fn: Callable[[_Sequence, int, int], tuple[list[int], StepRecord]] = {
            "target": self._target_step,
            "drafter": self._drafter_step,
            "sequential": self._sequential_step,
            "speculative": self._speculative_step,
            "lossy": self._speculative_step,
        }[self.mode]
        self.predictor = predictor  # an acceptance predictor for the adaptive schedule (else the drafter's confidence)
        self.schedule_cls, self.schedule_settings = self._schedule(schedule)

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

    # ------------------------------------------------------------------ building

    @classmethod
    def from_policy(cls, policy: Policy | str | Path, registry: Any = None, *, loader: Any = models) -> Engine:
        """Validate the policy against the installed plugins, load the models, build the drafter.

        `loader` provides `load_model` and `load_tokenizer` (signatures of `cascade.models`);
        a benchmark passes a cache so policies sharing a model load it once.
        """
        from cascade.plugins import registry as default_registry

        if not isinstance(policy, Policy):
            policy = load_policy(policy)
        registry = registry or default_registry()
        check_policy(policy, registry)
        spec = policy.target
        device = models.resolve_device(spec.device)
        dtype = models.resolve_dtype(spec.dtype, device)
        path = models.resolve_model_path(spec.model, policy.base_dir)
        tokenizer = loader.load_tokenizer(path, spec.trust_remote_code, spec.revision)
        target = loader.load_model(path, dtype, device, spec.trust_remote_code, spec.revision)
        rule_cls = registry.rule(policy.rule.name)
        with plugin_errors(f"rule {policy.rule.name!r} failed to build"):
            rule = rule_cls(policy.rule.alpha, rule_options(policy, rule_cls))
        drafter = None
        if policy.mode != "target":
            assert policy.drafter is not None  # the schema requires one outside target mode
            drafter_cls = registry.drafter(policy.drafter.plugin)
            ctx = DrafterContext(
                vocab_size=target.get_output_embeddings().weight.shape[0],
                tokenizer=tokenizer,
                target_name=spec.model,
                device=device,
                dtype=dtype,
                max_positions=models.max_positions(target.config),
                base_dir=policy.base_dir,
                load_model=loader.load_model,
                target_model=target,
            )
            with plugin_errors(f"drafter {policy.drafter.plugin!r} failed to build"):
                drafter = drafter_cls(drafter_options(policy, drafter_cls), ctx)
        predictor = None
        name = policy.decoding.schedule_options.get("predictor")
        if name:
            pred_cls = registry.predictor(name)
            with plugin_errors(f"acceptance predictor {name!r} failed to build"):
                predictor = pred_cls(predictor_options(policy, pred_cls))
        return cls(policy, target, tokenizer, drafter, rule, schedule=registry.schedule(policy.decoding.block_schedule),
                   predictor=predictor)

    def new_schedule(self) -> Schedule:
        """A fresh schedule for one generation."""
        return self.schedule_cls(self.schedule_settings)

    # ------------------------------------------------------------------ the loop

    def encode(self, prompt: str | list[int]) -> torch.Tensor:
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

    @torch.inference_mode()
    def generate(
        self,
        prompt: str | list[int],
        max_new_tokens: int | None = None,
        seed: int | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
        record_decisions: bool = True,
    ) -> Generation:
        prompt_ids = self.encode(prompt)  # (P,)
        asked = self.policy.decoding.max_new_tokens if max_new_tokens is None else max_new_tokens
        if asked < 1:
            raise CascadeError(f"max_new_tokens must be at least 1, got {asked}")
        budget = asked
        if self.target.max_positions is not None:
            budget = min(budget, self.target.max_positions - prompt_ids.shape[0])
        generator = self._generator(self.policy.decoding.seed if seed is None else seed)
        schedule = self.new_schedule()
        d = self.policy.decoding
        capacity = prompt_ids.shape[0] + budget + max(d.block_size, d.max_block_size) + 2
        seq = _Sequence(prompt_ids, capacity, generator, schedule, record_decisions)
        metrics = Metrics(num_prompt_tokens=prompt_ids.shape[0])
        steps: list[StepRecord] = []
        t0 = time.perf_counter()
        self._prefill(seq, prompt_ids)
        finish = "length"
        while len(seq.generated) < budget:
            remaining = budget - len(seq.generated)
            emitted, step = self.step_fn(seq, remaining, len(steps))
            kept, finish = self._stop(seq, emitted)
            if len(kept) < len(emitted):
                emitted, step = kept, truncate_step(step, len(kept))
            seq.append(emitted)
            steps.append(step)
            metrics.add_step(step, verification=self.mode in VERIFYING_MODES)
            if len(steps) == 1:
                metrics.ttft_seconds = time.perf_counter() - t0
            if on_step is not None:
                on_step(step)
            if finish != "length":
                break
        if finish == "length" and budget < asked:
            finish = "context"  # stopped by the target's context length, not by max_new_tokens
        metrics.decode_seconds = time.perf_counter() - t0  # prefill included, as in transformers' generate()
        metrics.num_generated_tokens = len(seq.generated)
        text = self.tokenizer.decode(seq.generated, skip_special_tokens=True)
        text = self._cut_at_stop(text)
        return Generation(text=text, token_ids=seq.generated, prompt_tokens=int(prompt_ids.shape[0]),
                          finish_reason=finish, metrics=metrics, steps=steps)

    def _generator(self, seed: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        return g

    def _prefill(self, seq: _Sequence, prompt_ids: torch.Tensor) -> None:
        """Caches hold the prompt but its last token; the drafter prefills itself on reset."""
        self.target.reset()
        if prompt_ids.shape[0] > 1 and self.mode != "drafter":
            self.target.forward(prompt_ids[:-1], last_only=True)
        if self.drafter is not None:
            with self._drafter_errors("reset"):
                self.drafter.reset(prompt_ids, self.params, seq.generator)

    def _drafter_errors(self, method: str) -> contextlib.AbstractContextManager[None]:
        return plugin_errors(f"drafter {self.drafter_name!r} raised in {method}()")

    def _stop(self, seq: _Sequence, emitted: list[int]) -> tuple[list[int], str]:
        """Truncate a step's tokens at EOS (kept) or at the token completing a stop string, whichever comes first."""
        cut, reason = len(emitted), "length"
        if self.eos_id is not None and self.eos_id in emitted:
            cut, reason = emitted.index(self.eos_id) + 1, "eos"
        stops = self.policy.decoding.stop
        if stops:
            window = seq.generated[-STOP_WINDOW:]
            for i in range(1, cut + 1):
                text = self.tokenizer.decode(window + emitted[:i], skip_special_tokens=True)
                if any(s in text for s in stops):
                    cut, reason = i, "stop"
                    break
        return emitted[:cut], reason

    def _cut_at_stop(self, text: str) -> str:
        cuts = [text.find(s) for s in self.policy.decoding.stop if s in text]
        return text[: min(cuts)] if cuts else text

    # ------------------------------------------------------------------ steps

    def _target_step(self, seq: _Sequence, remaining: int, index: int) -> tuple[list[int], StepRecord]:
        t0 = time.perf_counter()
        p_logits = self.target.forward(seq.buf[seq.n - 1 : seq.n])  # (1, V)
        token = int(sampling.pick(p_logits, self.params, seq.generator).item())
        dt = time.perf_counter() - t0
        decisions = (emitted_by_target(0, "target", token),) if seq.record else ()
        return [token], StepRecord(index=index, block_size=0, drafted=0, accepted=0, emitted=(token,), deferred=0,
                                   target_calls=1, drafter_calls=0, draft_seconds=0.0, verify_seconds=dt,
                                   decisions=decisions)

    def _drafter_step(self, seq: _Sequence, remaining: int, index: int) -> tuple[list[int], StepRecord]:
        k = max(1, min(seq.schedule.plan(remaining).k, remaining))
        ctx = self._block(seq)
        t0 = time.perf_counter()
        draft = self._propose(seq, DraftRequest(k=k))
        tokens = draft.tokens.tolist()
        if not tokens:
            raise PluginError(f"drafter {self.drafter_name!r} proposed no token in drafter-only mode")
        self._observe(Feedback(n_accepted=len(tokens)))
        dt = time.perf_counter() - t0
        if ctx is not None:
            seq.track(len(tokens), len(tokens), draft.tokens, draft.probs)
        decisions: tuple[Decision, ...] = ()
        if seq.record:  # nothing verifies: the target-side features stay absent
            feats = decision_features(draft.tokens, draft.probs, None).tolist()  # (k, F)
            decisions = tuple(draft_row(i, t, t, deferred=False, features=f) for i, (t, f) in enumerate(zip(tokens, feats)))
        return tokens, StepRecord(index=index, block_size=k, drafted=len(tokens), accepted=len(tokens),
                                  emitted=tuple(tokens), deferred=0, target_calls=0, drafter_calls=draft.calls,
                                  draft_seconds=dt, verify_seconds=0.0, decisions=decisions, context=ctx)

    def _sequential_step(self, seq: _Sequence, remaining: int, index: int) -> tuple[list[int], StepRecord]:
        """Token-level cascade: the drafter decodes; deferred positions go to the target."""
        ctx = self._block(seq)
        t0 = time.perf_counter()
        draft = self._propose(seq, DraftRequest(k=1))  # x: (1,), q: (1, V)
        q_raw = q_unscaled(draft.tokens, draft.probs, self.target.vocab_size)  # (1, V)
        _, r_x = deferral(self.rule, draft.tokens, q_raw, None, ctx, real_q=draft.probs is not None)  # r(x) (1,)
        x, deferred = torch.stack([draft.tokens[0].float(), r_x[0]]).tolist()  # one readback (ids < 2^24)
        x, deferred = int(x), bool(deferred)
        t1 = time.perf_counter()
        target_calls, p_raw = 0, None
        if deferred:
            # the target catches up over every pending token in this one call
            p_logits = self.target.forward(seq.buf[self.target.length : seq.n])[-1:]  # (1, V)
            token = int(sampling.pick(p_logits, self.params, seq.generator).item())
            p_raw = sampling.softmax(p_logits)  # (1, V)
            target_calls = 1
        else:
            token = x
        self._observe(Feedback(n_accepted=0 if deferred else 1, next_token=token if deferred else None))
        if ctx is not None:
            seq.track(1, 0 if deferred else 1, draft.tokens, draft.probs)
        t2 = time.perf_counter()
        decisions: tuple[Decision, ...] = ()
        if seq.record:
            f = decision_features(draft.tokens, draft.probs, p_raw)[0].tolist()  # (F,) no q: absent
            decisions = (draft_row(0, x, None if deferred else token, deferred=deferred, features=f),)
            if deferred:
                decisions += (emitted_by_target(0, "target", token),)
        return [token], StepRecord(index=index, block_size=1, drafted=1, accepted=0 if deferred else 1,
                                   emitted=(token,), deferred=int(deferred), target_calls=target_calls,
                                   drafter_calls=draft.calls, draft_seconds=t1 - t0, verify_seconds=t2 - t1,
                                   decisions=decisions, context=ctx)

    def _speculative_step(self, seq: _Sequence, remaining: int, index: int) -> tuple[list[int], StepRecord]:
        """Draft k, verify k + 1 positions in one target call, accept, roll back."""
        plan = seq.schedule.plan(remaining - 1)  # k accepted + 1 bonus fit the budget
        asked = min(plan.k, remaining - 1)
        proposed = asked > 0 or self.lookahead  # a cascade needs q_{k+1} even when k = 0
        ctx = self._block(seq)  # where the block sits (rules that read features, the log)
        t0 = time.perf_counter()
        # draft: up to `asked` tokens x_1..x_k with q_1..q_k (and q_{k+1} for a cascade's bonus)
        own = self.predictor is None  # confidences from the drafter itself, else from the predictor below
        request = DraftRequest(k=asked, min_confidence=plan.min_confidence, lookahead=self.lookahead,
                               confidence=self.schedule_cls.needs_confidence and own, stop=plan.stop if own else None)
        draft = self._propose(seq, request) if proposed else EMPTY_DRAFT
        if plan.stop is not None and proposed:  # where the schedule's stopping rule says, from confidences only
            if not own:
                draft = predicted_draft(draft, self.predictor, ctx, self.drafter_name)
            draft = cut_draft(draft, plan.stop, self.policy.decoding.block_schedule, self.drafter_name)
        x = draft.tokens.to(self.device)  # (k,) k <= asked (a drafter may stop early or find nothing)
        q = None if draft.probs is None else draft.probs.to(self.device)  # (k, V)
        q_next = None if (draft.next_probs is None or not self.lookahead) else draft.next_probs.to(self.device)  # (V,)
        k = x.shape[0]
        t1 = time.perf_counter()
        # verify: one target pass over [last emitted, x_1..x_k] gives p_1..p_{k+1}
        p_logits = self.target.forward(torch.cat([seq.buf[seq.n - 1 : seq.n], x]))  # (k + 1, V)
        # defer + accept: π = q(1 − r) + η p, keep x_i with prob min(1, π(x_i)/q(x_i)), then a residual or bonus
        verdict = verify_block(x, q, p_logits, self.rule, self.params, seq.generator, self.lenience, q_next,
                               block=ctx)
        n, nxt, *xs = torch.cat([verdict.n_accepted.view(1), verdict.next_token.view(1), x]).tolist()  # one readback
        # roll back: keep the context, the last token and the n accepted drafts
        self.target.rollback(seq.n + n)
        if proposed:
            self._observe(Feedback(n_accepted=n, next_token=nxt))
        if k > 0:  # nothing drafted (no n-gram match) says nothing about the block size
            seq.schedule.update(k, n)
            if ctx is not None:
                seq.track(k, n, x, q)
        t2 = time.perf_counter()
        # log: emitted = x_1..x_n + the correction or bonus token
        emitted = xs[:n] + [nxt]
        deferred = int(verdict.deferred.sum().item()) if k > 0 else 0
        decisions = self._block_decisions(x, xs, draft, p_logits, verdict, n, nxt) if seq.record else ()
        return emitted, StepRecord(index=index, block_size=asked, drafted=k, accepted=n, emitted=tuple(emitted),
                                   deferred=deferred, target_calls=1, drafter_calls=draft.calls,
                                   draft_seconds=t1 - t0, verify_seconds=t2 - t1, decisions=decisions,
                                   context=ctx)

    def _block(self, seq: _Sequence) -> BlockContext | None:
        """Where the next block sits, when a rule or a predictor reads it or the decisions are logged (else None)."""
        return seq.block if (self.reads_features or seq.record or self.predictor is not None) else None

    def _propose(self, seq: _Sequence, request: DraftRequest) -> Draft:
        assert self.drafter is not None
        with self._drafter_errors("propose"):
            return self.drafter.propose(seq.context, request)

    def _observe(self, feedback: Feedback) -> None:
        assert self.drafter is not None
        with self._drafter_errors("observe"):
            self.drafter.observe(feedback)

    def _block_decisions(self, x: torch.Tensor, xs: list[int], draft: Draft, p_logits: torch.Tensor,
                         verdict: Verdict, n: int, nxt: int) -> tuple[Decision, ...]:
        k = len(xs)
        p_raw = sampling.softmax(p_logits[:k])  # (k, V)
        feats = decision_features(x, draft.probs, p_raw).tolist() if k else []  # (k, F)
        r_x = verdict.deferred.tolist() if k else []  # (k,)
        rows = [draft_row(i, xs[i], xs[i] if i < n else None, deferred=bool(r_x[i]), features=feats[i])
                for i in range(k)]
        rows.append(emitted_by_target(n, "correction" if n < k else "bonus", nxt))
        return tuple(rows)
