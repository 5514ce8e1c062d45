"""The decoding engine: one loop, five modes, B ≥ 1 rows (SPEC.md).

    prefill -> repeat { draft -> verify -> defer/accept -> roll back -> log } -> stop

Each mode is one small step function (`cascade.decode.steps`) over the live rows of a batch: it returns,
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
`cascade.verify.tree`): the same step verifies it in the same target call with a tree mask and true
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
Everything about one generation lives in its `Row` (cascade.decode.row).

Shapes: B = live rows, P = prompt tokens, n = tokens in a row so far, k = drafted
tokens in a row's block, K = the widest block of the batch, V = the vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch

from cascade.decode.batch import RunningBatch
from cascade.decode.build import build_parts
from cascade.decode.drafter_rows import RowDrafters
from cascade.decode.drafting import Drafting
from cascade.decode.row import Row, Stopper, stream_seed
from cascade.decode.steps import Results, Steps
from cascade.drafter import Drafter
from cascade.errors import CascadeError, RequestError
from cascade.metrics import Generation, StepRecord
from cascade.policy import SEQUENTIAL_BATCH, VERIFYING_MODES, Policy, schedule_options
from cascade.rules import Rule
from cascade.runtime import models
from cascade.runtime.ragged import RaggedLM
from cascade.schedules import profile
from cascade.schedules.base import Schedule, ScheduleSettings
from cascade.schedules.builtin import BUILTIN_SCHEDULES, NoDrafts
from cascade.schedules.costs import CostTable
from cascade.verify import sampling

Prompt = str | list[int]


class Engine(Steps):
    def __init__(
        self,
        policy: Policy,
        target: Any,
        tokenizer: Any,
        drafter: Drafter | None,
        rule: Rule,
        *,
        schedule: type[Schedule] | None = None,
        predictor: Any = None,
        drafter_factory: Callable[[], Drafter] | None = None,
        costs: CostTable | None = None,
    ):
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
        self.schedule_cls, self.schedule_settings = self._schedule(schedule, costs)
        # the most tokens the schedule drafts per step (it declares it): sizes each row's cache and the cost table
        self.max_draft = self.schedule_cls.max_draft(self.schedule_settings.options)
        self._by_batch: dict[int, Engine] = {}  # this engine at other batch sizes (with_batch_size)
        # the one owner of every draft's length and draws (cascade.decode.drafting)
        self.drafting = (
            None
            if self.drafters is None or drafter is None
            else Drafting.of(
                self.drafters, drafter, self.params, self.lookahead, predictor, self.drafter_name, d.schedule.name
            )
        )

    def _schedule(self, cls: type[Schedule] | None, costs: CostTable | None) -> tuple[type[Schedule], ScheduleSettings]:
        """The block schedule's class and what each generation's instance is built from (`costs`: the measured
        cost table a schedule that `needs_costs` reads; the engine measures nothing itself)."""
        name = self.policy.decoding.schedule.name
        if cls is None:
            if name not in BUILTIN_SCHEDULES:
                raise CascadeError(f"unknown schedule {name!r}: build the engine with Engine.from_policy")
            cls = BUILTIN_SCHEDULES[name]
        settings = ScheduleSettings(schedule_options(self.policy, cls), self.lookahead, costs, self.predictor)
        return cls, settings

    @classmethod
    def from_policy(cls, policy: Policy | str | Path, registry: Any = None, *, loader: Any = models) -> Engine:
        """Validate the policy against the installed plugins, load the models, build the drafter
        (`cascade.decode.build`; `loader` lets a benchmark share model loads between policies), and give a schedule that
        needs costs its table."""
        p = build_parts(policy, registry, loader)
        return cls._assembled(
            p.policy, p.target, p.tokenizer, p.drafter, p.rule, p.schedule, p.predictor, p.drafter_factory
        )

    @classmethod
    def _assembled(
        cls,
        policy: Policy,
        target: Any,
        tokenizer: Any,
        drafter: Drafter | None,
        rule: Rule,
        schedule: type[Schedule],
        predictor: Any,
        drafter_factory: Callable[[], Drafter] | None,
    ) -> Engine:
        """An engine over loaded parts, with its cost table when the schedule reads one (read from the profile
        cache, or timed on these models now): the composition root's last step."""
        engine = cls(
            policy,
            target,
            tokenizer,
            drafter,
            rule,
            schedule=schedule,
            predictor=predictor,
            drafter_factory=drafter_factory,
        )
        if engine.schedule_cls.needs_costs:
            costs, _, _ = profile.cost_table(engine, engine.max_draft)
            engine.use_costs(costs)
        return engine

    def with_batch_size(self, size: int) -> Engine:
        """This engine with the policy derived to decoding.batch_size = `size` (the same loaded models and drafter),
        so that what reads the batch size (a cost table is a batch's step) reads it from one place, the policy.
        `generate`/`stream` with another `batch_size` use it where the schedule reads costs."""
        if size == self.policy.decoding.batch_size:
            return self
        if size not in self._by_batch:
            policy = self.policy.derive(self.policy.name, {"decoding": {"batch_size": size}}, drop=())
            factory = self.drafters.factory if self.drafters is not None else None
            self._by_batch[size] = self._assembled(
                policy,
                self.target_model,
                self.tokenizer,
                self.drafter,
                self.rule,
                self.schedule_cls,
                self.predictor,
                factory,
            )
        return self._by_batch[size]

    def use_costs(self, costs: CostTable) -> None:
        """The cost table the schedule reads from now on (`cascade.schedules.profile` measures one)."""
        self.schedule_settings = replace(self.schedule_settings, costs=costs)

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

    def generate(
        self,
        prompt: Prompt | Sequence[Prompt],
        max_new_tokens: int | None = None,
        seed: int | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
        record_decisions: bool = True,
        batch_size: int | None = None,
    ) -> Generation | list[Generation]:
        """Decode one prompt (text or token ids) -> its Generation; a list of prompts -> one Generation each,
        in order, decoded `batch_size` rows at a time (default: the policy's decoding.batch_size)."""
        single = isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(t, int) for t in prompt))
        prompts = cast(list[Prompt], [prompt] if single else list(prompt))
        out = dict(self.stream(prompts, max_new_tokens, seed, on_step, record_decisions, batch_size))
        return out[0] if single else [out[i] for i in range(len(prompts))]

    @torch.inference_mode()
    def stream(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int | None = None,
        seed: int | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
        record_decisions: bool = True,
        batch_size: int | None = None,
    ) -> Iterator[tuple[int, Generation]]:
        """(index of the prompt, its Generation), each as soon as its row finishes. Every row is seeded from
        `seed` (default decoding.seed) and its prompt (`cascade.decode.row.stream_seed`), so a row's output does not
        depend on its batch or its batch-mates (under a schedule the batch shares, a sampled row's tokens depend on how
        far the batch drafts, and their law does not; in lossy mode, whose law depends on where blocks end, both do);
        batches group prompts of similar lengths (less padding), so rows may finish out of order."""
        d = self.policy.decoding
        size = d.batch_size if batch_size is None else batch_size
        if size < 1:
            raise CascadeError(f"batch size must be at least 1, got {size}")
        if self.mode == "sequential" and size > 1 and len(prompts) > 1:
            raise CascadeError(SEQUENTIAL_BATCH)
        if size != d.batch_size and self.schedule_cls.needs_costs:  # costs are a batch's: the policy's B decides
            yield from self.with_batch_size(size).stream(prompts, max_new_tokens, seed, on_step, record_decisions)
            return
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
        capacity = prompt.shape[0] + budget + self.max_draft + 2
        generator = torch.Generator(device=self.device)
        generator.manual_seed(stream_seed(seed, prompt))
        return Row(
            index,
            prompt,
            asked,
            budget,
            capacity,
            generator,
            self.new_schedule(),
            record,
            self.params,
            self.rule,
            self.stopper,
        )

    def _decode(
        self, rows: list[Row], on_step: Callable[[StepRecord], None] | None
    ) -> Iterator[tuple[int, Generation]]:
        """Decode rows that start together: the running batch's loop (`cascade.decode.batch`); finished rows leave
        and are yielded."""
        batch = self.running_batch(on_step)
        batch.join(rows)
        while batch:
            for row, generation in batch.step():
                yield row.index, generation

    def running_batch(self, on_step: Callable[[StepRecord], None] | None = None) -> RunningBatch:
        """An empty running batch of this engine: rows join it between steps (`request_row`) and leave when done or
        cancelled; what `cascade serve` drives. One running batch per engine at a time (it owns the caches)."""
        return RunningBatch(self, on_step)

    def request_row(
        self,
        index: int,
        prompt: Prompt,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        record_decisions: bool = True,
        *,
        params: sampling.SamplingParams | None = None,
        rule: Rule | None = None,
        stop: Sequence[str] | None = None,
        speculate: bool = True,
    ) -> Row:
        """A row for `prompt` (checked as `encode` does), identified by `index`, seeded as `stream` seeds it: alone, it
        decodes what `generate` gives. A request may bring its own `params` (temperature, top-k, top-p), its own
        `rule` (built by `cascade.build_rule` from a derived policy: the policy's at another α, or another rule that
        defers as this engine verifies: a cascade's for a cascade, reading features only where the policy's does), stop
        strings, and `speculate=False`: the target's tokens alone, one per step (lossless policies, own schedules)."""
        d = self.policy.decoding
        asked = d.max_new_tokens if max_new_tokens is None else max_new_tokens
        if asked < 1:
            raise RequestError("max_new_tokens", f"max_new_tokens must be at least 1, got {asked}")
        if rule is not None and rule.reads_features != self.rule.reads_features:
            raise RequestError(
                "rule",
                f"rule {rule.name!r} cannot replace the policy's {self.rule.name!r} in a row: "
                "a row reads block features only where the policy's rule does",
            )
        if rule is not None and rule.name != "none" and not self.lookahead:
            raise RequestError(
                "rule",
                f"rule {rule.name!r} cannot replace the policy's {self.rule.name!r} in a row: a cascade draws its "
                "bonus token from the drafter's q, which this policy does not draft",
            )
        if not speculate and (self.lookahead or self.schedule_cls.shared or self.mode not in VERIFYING_MODES):
            raise RequestError(
                "speculate",
                "speculation can be switched off only in a row of a lossless speculative policy with a schedule "
                f"of its own (not mode {self.mode!r}, rule {self.rule.name!r}, schedule {self.schedule_cls.name!r})",
            )
        if params is not None and params != self.params and self.drafters is not None:
            if self.drafters.proposes_trees:
                raise RequestError(
                    "params",
                    f"drafter {self.drafter_name!r} proposes trees with one sampling setting per batch: "
                    "its rows take the policy's temperature, top_k and top_p",
                )
        try:
            ids = self.encode(prompt)
        except CascadeError as exc:
            raise RequestError("prompt", str(exc)) from None
        row = self._row(index, ids, asked, d.seed if seed is None else seed, record_decisions)
        if params is not None:
            row.params = params
        if rule is not None:
            row.rule = rule
        if stop is not None:
            row.stopper = Stopper(self.tokenizer, self.stopper.eos_id, list(stop))
        if not speculate:
            row.schedule = NoDrafts(ScheduleSettings())
        return row

    @property
    def joins_rows(self) -> bool:
        """Whether rows can join while others decode: not in the sequential cascade (one row at a time), nor with a
        batched drafter that does not declare `joins_rows`."""
        return self.mode != "sequential" and (self.drafters is None or self.drafters.joins_rows)

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
        elif self.mode != "drafter":
            features = self._no_features(len(rows))  # one-token prompts: nothing before their last token
        if self.drafters is not None:
            with self._drafter_errors("start"):
                self.drafters.start([row.prompt for row in rows])
                if features is not None:
                    self.drafters.target_features(features)
                if prefilled:
                    self.drafters.adopt_target_cache(self.target)

    def _join(self, live: list[Row], rows: list[Row]) -> None:
        """Rows join the live ones: their prompts are prefilled in one pass of their own and their caches copied in
        after the live rows' (`RaggedLM.absorb`); the drafter starts them after the live rows."""
        if not self.joins_rows:
            raise CascadeError(
                SEQUENTIAL_BATCH
                if self.mode == "sequential"
                else f"drafter {self.drafter_name!r} takes no rows joining a running batch (joins_rows)"
            )
        features = None
        if self.mode != "drafter":
            # the joining prompts are prefilled apart (no live row computes or keeps their padding), then copied in
            joining = self.target.sibling(len(rows), max(row.n for row in rows) + 1)
            if any(row.n > 1 for row in rows):
                joining.forward([row.prompt[:-1] for row in rows], last_only=True, hidden=self.wants_hidden)
                states = joining.hidden  # (B', K, d) left-padded: a joined row's are its last n - 1 columns
                if states is not None:
                    features = [states[i, states.shape[1] - r.n + 1 :] for i, r in enumerate(rows)]
            else:
                features = self._no_features(len(rows))
            self.target.absorb(joining)
        if self.drafters is not None:
            with self._drafter_errors("join"):
                self.drafters.join([row.prompt for row in rows])
                if features is not None:
                    self.drafters.target_features(features)

    def _no_features(self, rows: int) -> list[torch.Tensor] | None:
        """The prompt features of one-token prompts, for a drafter that reads the target's: none, (0, d) each. A
        drafter told nothing would recompute them with a target pass of its own."""
        if not self.wants_hidden:
            return None
        empty = torch.empty(0, self.target_model.config.hidden_size, device=self.device, dtype=self.target_model.dtype)
        return [empty] * rows

    def _leave(self, keep: list[int]) -> None:
        """Finished rows leave the batch: the caches keep only the rows in `keep`."""
        if self.mode != "drafter" and keep:
            self.target.select(keep)
        if self.drafters is not None and keep:
            with self._drafter_errors("keep"):
                self.drafters.keep(keep)
