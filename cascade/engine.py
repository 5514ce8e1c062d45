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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from cascade import models, sampling
from cascade.drafter import Draft, Drafter, DrafterContext
from cascade.errors import CascadeError, PluginError
from cascade.metrics import Decision, Metrics, StepRecord
from cascade.policy import Policy, check_policy, drafter_options, load_policy
from cascade.rules import Rule
from cascade.schedule import BlockSchedule
from cascade.verify import FEATURES, decision_features, deferral, q_unscaled, verify_block


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: list[int]  # generated tokens only
    prompt_tokens: int
    finish_reason: str  # "length" | "eos" | "stop" | "context"
    metrics: Metrics
    steps: list[StepRecord]


class _Sequence:
    """Mutable state of one generation: the token buffer and what was emitted."""

    def __init__(self, prompt: torch.Tensor, capacity: int):
        self.buf = torch.empty(capacity, dtype=torch.long, device=prompt.device)  # (capacity,)
        self.buf[: prompt.shape[0]] = prompt
        self.n = prompt.shape[0]  # tokens in the sequence (prompt + emitted)
        self.generated: list[int] = []

    @property
    def context(self) -> torch.Tensor:
        return self.buf[: self.n]  # (n,) a view, no copy

    def append(self, tokens: list[int]) -> None:
        m = len(tokens)
        self.buf[self.n : self.n + m] = torch.tensor(tokens, dtype=torch.long)
        self.n += m
        self.generated.extend(tokens)


class Engine:
    def __init__(self, policy: Policy, target, tokenizer, drafter: Drafter | None, rule: Rule):
        self.policy = policy
        self.mode = policy.mode
        self.target = models.CachedLM(target)
        self.tokenizer = tokenizer
        self.drafter = drafter
        self.rule = rule
        self.device = self.target.device
        d = policy.decoding
        self.params = sampling.SamplingParams(d.temperature, d.top_k, d.top_p)
        self.schedule = BlockSchedule(d.block_schedule, d.block_size, d.min_block_size, d.max_block_size, d.confidence)
        self.lenience = d.lenience if self.mode == "lossy" else None
        # a cascade draws the bonus token from π_{k+1}, which needs the drafter's q there
        self.lookahead = self.mode == "speculative" and rule.name != "none"
        self.eos_id = None if d.ignore_eos else tokenizer.eos_token_id
        self.step_fn: Callable = {
            "target": self._target_step,
            "drafter": self._drafter_step,
            "sequential": self._sequential_step,
            "speculative": self._speculative_step,
            "lossy": self._speculative_step,
        }[self.mode]

    # ------------------------------------------------------------------ building

    @classmethod
    def from_policy(cls, policy: Policy | str | Path, registry=None, *, loader=models) -> Engine:
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
        rule = registry.rule(policy.rule.name)(policy.rule.alpha, **policy.rule.options)
        drafter = None
        if policy.mode != "target":
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
            )
            try:
                drafter = drafter_cls(drafter_options(policy, drafter_cls), ctx)
            except CascadeError:
                raise
            except Exception as exc:
                raise PluginError(f"drafter {policy.drafter.plugin!r} failed to build: {type(exc).__name__}: {exc}") from exc
        return cls(policy, target, tokenizer, drafter, rule)

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
        self.record = record_decisions
        self.generator = self._generator(self.policy.decoding.seed if seed is None else seed)
        seq = _Sequence(prompt_ids, prompt_ids.shape[0] + budget + self.schedule.max_size + 2)
        metrics = Metrics(num_prompt_tokens=prompt_ids.shape[0])
        steps: list[StepRecord] = []
        t0 = time.perf_counter()
        self._prefill(prompt_ids)
        finish = "length"
        while len(seq.generated) < budget:
            remaining = budget - len(seq.generated)
            emitted, step = self.step_fn(seq, remaining, len(steps))
            kept, finish = self._stop(seq, emitted)
            if len(kept) < len(emitted):
                emitted, step = kept, truncate_step(step, len(kept))
            seq.append(emitted)
            steps.append(step)
            metrics.add_step(step, verification=self.mode in ("speculative", "lossy"))
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
        return Generation(text, seq.generated, int(prompt_ids.shape[0]), finish, metrics, steps)

    def _generator(self, seed: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        return g

    def _prefill(self, prompt_ids: torch.Tensor) -> None:
        """Caches hold the prompt but its last token; the drafter prefills itself on reset."""
        self.target.reset()
        self.schedule.reset()
        if prompt_ids.shape[0] > 1 and self.mode != "drafter":
            self.target.forward(prompt_ids[:-1], last_only=True)
        if self.drafter is not None:
            self.drafter.reset(prompt_ids, self.params, self.generator)

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

    def _target_step(self, seq: _Sequence, remaining: int, index: int):
        t0 = time.perf_counter()
        p_logits = self.target.forward(seq.buf[seq.n - 1 : seq.n])  # (1, V)
        token = sampling.pick(p_logits, self.params, self.generator).item()
        dt = time.perf_counter() - t0
        decisions = (Decision(0, "target", None, token, None, None),) if self.record else ()
        return [token], StepRecord(index, 0, 0, 0, (token,), 0, 1, 0, 0.0, dt, decisions)

    def _drafter_step(self, seq: _Sequence, remaining: int, index: int):
        k = min(self.schedule.next(), remaining)
        t0 = time.perf_counter()
        draft = self.drafter.propose(seq.context, k)
        tokens = draft.tokens.tolist()
        if not tokens:
            raise PluginError(f"drafter {self.drafter.name!r} proposed no token in drafter-only mode")
        self.drafter.observe(len(tokens))
        dt = time.perf_counter() - t0
        decisions = ()
        if self.record:
            feats = decision_features(draft.tokens, draft.probs, None).tolist()
            decisions = tuple(
                Decision(i, "draft", t, t, True, False, *f[:3]) for i, (t, f) in enumerate(zip(tokens, feats))
            )
        return tokens, StepRecord(index, k, len(tokens), len(tokens), tuple(tokens), 0, 0, draft_calls(draft), dt, 0.0, decisions)

    def _sequential_step(self, seq: _Sequence, remaining: int, index: int):
        """Token-level cascade: the drafter decodes; deferred positions go to the target."""
        t0 = time.perf_counter()
        draft = self.drafter.propose(seq.context, 1)  # x: (1,), q: (1, V)
        q_raw = q_unscaled(draft.tokens, draft.probs, self.target.vocab_size)
        _, r_x = deferral(self.rule, draft.tokens, q_raw, None)  # q-only rule
        x, deferred = torch.stack([draft.tokens[0].float(), r_x[0]]).tolist()
        x, deferred = int(x), bool(deferred)
        t1 = time.perf_counter()
        target_calls = 0
        p_raw = None
        if deferred:
            # the target catches up over every pending token in this one call
            p_logits = self.target.forward(seq.buf[self.target.length : seq.n])[-1:]  # (1, V)
            token = sampling.pick(p_logits, self.params, self.generator).item()
            p_raw = sampling.softmax(p_logits)
            target_calls = 1
        else:
            token = x
        self.drafter.observe(0 if deferred else 1)
        t2 = time.perf_counter()
        decisions = ()
        if self.record:
            f = decision_features(draft.tokens, q_raw, p_raw)[0].tolist()
            decisions = (Decision(0, "draft", x, token if not deferred else None, not deferred, deferred, *f),)
            if deferred:
                decisions += (Decision(0, "target", None, token, None, None),)
        accepted = 0 if deferred else 1
        return [token], StepRecord(index, 1, 1, accepted, (token,), int(deferred), target_calls, draft_calls(draft), t1 - t0, t2 - t1, decisions)

    def _speculative_step(self, seq: _Sequence, remaining: int, index: int):
        """Draft k, verify k + 1 positions in one target call, accept, roll back."""
        asked = min(self.schedule.next(), remaining - 1)  # k accepted + 1 bonus fit the budget
        proposed = asked > 0 or self.lookahead  # a cascade needs q_{k+1} even when k = 0
        t0 = time.perf_counter()
        draft = self.drafter.propose(seq.context, asked, self.schedule.min_confidence, self.lookahead) if proposed else EMPTY_DRAFT
        x = draft.tokens.to(self.device)  # (k,) k <= asked (a drafter may stop early or find nothing)
        q = None if draft.probs is None else draft.probs.to(self.device)  # (k, V)
        q_next = None if (draft.next_probs is None or not self.lookahead) else draft.next_probs.to(self.device)  # (V,)
        k = x.shape[0]
        t1 = time.perf_counter()
        # verify: one target pass over [last emitted, x_1..x_k] gives p_1..p_{k+1}
        p_logits = self.target.forward(torch.cat([seq.buf[seq.n - 1 : seq.n], x]))  # (k + 1, V)
        verdict = verify_block(x, q, p_logits, self.rule, self.params, self.generator, self.lenience, q_next)
        n, nxt, *xs = torch.cat([verdict.n_accepted.view(1), verdict.next_token.view(1), x]).tolist()
        # roll back: keep the context, the last token and the n accepted drafts
        self.target.rollback(seq.n + n)
        if proposed:
            self.drafter.observe(n)
        if k > 0:  # nothing drafted (no n-gram match) says nothing about the block size
            self.schedule.update(k, n)
        t2 = time.perf_counter()
        emitted = xs[:n] + [nxt]
        deferred = int(verdict.deferred.sum().item()) if k > 0 else 0
        decisions = self._block_decisions(x, xs, draft, p_logits, verdict, n, nxt) if self.record else ()
        return emitted, StepRecord(index, asked, k, n, tuple(emitted), deferred, 1, draft_calls(draft), t1 - t0, t2 - t1, decisions)

    def _block_decisions(self, x, xs, draft: Draft, p_logits, verdict, n: int, nxt: int) -> tuple[Decision, ...]:
        k = len(xs)
        q_raw = draft.probs
        p_raw = sampling.softmax(p_logits[:k])
        feats = decision_features(x, q_raw, p_raw).tolist() if k else []
        r_x = verdict.deferred.tolist() if k else []
        rows = [
            Decision(i, "draft", xs[i], xs[i] if i < n else None, i < n, bool(r_x[i]), *feats[i])
            for i in range(k)
        ]
        rows.append(Decision(n, "correction" if n < k else "bonus", None, nxt, None, None))
        return tuple(rows)


EMPTY_DRAFT = Draft(torch.empty(0, dtype=torch.long), calls=0)
STOP_WINDOW = 64  # generated tokens decoded when looking for a stop string


def truncate_step(step: StepRecord, n_emitted: int) -> StepRecord:
    """The step as the output saw it when EOS or a stop string cut it after n_emitted tokens.

    Accepted drafts past the cut count as not accepted (they were never emitted), so the
    step's rows still add up; such a final step emits `accepted` tokens for one target call.
    """
    rows, left = [], n_emitted
    for d in step.decisions:
        if d.emitted_token is not None:
            if left == 0:
                d = replace(d, emitted_token=None, accepted=False if d.kind == "draft" else d.accepted)
            else:
                left -= 1
        rows.append(d)
    return replace(step, emitted=step.emitted[:n_emitted], accepted=min(step.accepted, n_emitted),
                   decisions=tuple(rows))


def draft_calls(draft: Draft) -> int:
    return draft.calls


__all__ = ["Engine", "Generation", "FEATURES"]
