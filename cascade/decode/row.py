"""One row of a batch: everything about one generation (SPEC.md "Batched decoding").

A `Row` holds its token buffer, its own random stream (so its output never depends
on its batch-mates), its block schedule, its recent acceptance, its steps and
metrics, and why it finished. The engine's loop steps every live row at once and
hands each its share of the step (`Row.take`); a row that finishes leaves the batch.

Shapes: P = prompt tokens, n = tokens in the sequence so far.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from typing import Any

import torch

from cascade.errors import PluginError
from cascade.features import LOGQ_QUANTILES, LOGQ_WINDOW, RECENT_STEPS, BlockContext, quantile
from cascade.metrics import Generation, Metrics, StepRecord, truncate_step
from cascade.schedules.base import DraftPlan, Schedule

STOP_WINDOW = 64  # generated tokens decoded when looking for a stop string


class Row:
    """Mutable state of one generation."""

    def __init__(
        self,
        index: int,
        prompt: torch.Tensor,
        asked: int,
        budget: int,
        capacity: int,
        generator: torch.Generator,
        schedule: Schedule,
        record: bool,
        params: Any,
        rule: Any,
        stopper: Stopper,
    ):
        self.index = index  # the prompt's position among those given to the engine
        self.prompt = prompt  # (P,)
        self.asked, self.budget = asked, budget  # max_new_tokens, and what the target's context leaves of it
        self.buf = torch.empty(capacity, dtype=torch.long, device=prompt.device)  # (capacity,)
        self.buf[: prompt.shape[0]] = prompt
        self.n = prompt.shape[0]  # tokens in the sequence (prompt + emitted)
        self.generated: list[int] = []
        self.generator = generator  # every random draw of this generation
        self.schedule = schedule  # this generation's block sizes
        self.record = record  # build per-position Decision rows
        # this row's sampling (SamplingParams), deferral rule and stop strings: the engine's, or a request's own
        self.params, self.rule, self.stopper = params, rule, stopper
        self.recent: deque[tuple[int, int]] = deque(maxlen=RECENT_STEPS)  # (drafted, accepted) per step
        self.logq: deque[float] = deque(maxlen=LOGQ_WINDOW)  # log q(x) of the latest drafted positions
        self.steps: list[StepRecord] = []
        self.metrics = Metrics(num_prompt_tokens=prompt.shape[0])
        self.finish = "length"
        self.t0 = time.perf_counter()  # when it joined its batch (reset on admission): its timings start there

    @property
    def remaining(self) -> int:
        return self.budget - len(self.generated)

    @property
    def done(self) -> bool:
        return self.finish != "length" or self.remaining <= 0

    @property
    def context(self) -> torch.Tensor:
        return self.buf[: self.n]  # (n,) a view, no copy

    @property
    def last(self) -> torch.Tensor:
        return self.buf[self.n - 1 : self.n]  # (1,) the last token, not yet in the target's cache

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

    def take(self, emitted: list[int], step: StepRecord, verification: bool) -> StepRecord:
        """This row's share of a step: cut at EOS or a stop string, append, count. The step as kept."""
        kept, self.finish = self.stopper.cut(self.generated, emitted)
        if len(kept) < len(emitted):
            step = truncate_step(step, len(kept))
        m = len(kept)
        self.buf[self.n : self.n + m] = torch.tensor(kept, dtype=torch.long)
        self.n += m
        self.generated.extend(kept)
        self.steps.append(step)
        self.metrics.add_step(step, verification=verification)
        if len(self.steps) == 1:
            self.metrics.ttft_seconds = time.perf_counter() - self.t0
        return step

    def result(self, tokenizer: Any) -> Generation:
        if self.finish == "length" and self.budget < self.asked:
            self.finish = "context"  # stopped by the target's context length, not by max_new_tokens
        self.metrics.decode_seconds = time.perf_counter() - self.t0  # prefill included, as in transformers' generate()
        self.metrics.num_generated_tokens = len(self.generated)
        text = self.stopper.trim(tokenizer.decode(self.generated, skip_special_tokens=True))
        return Generation(
            text=text,
            token_ids=self.generated,
            prompt_tokens=int(self.prompt.shape[0]),
            finish_reason=self.finish,
            metrics=self.metrics,
            steps=self.steps,
        )


class Stopper:
    """Where a generation ends: EOS (kept) or the token completing a stop string (cut from the text)."""

    def __init__(self, tokenizer: Any, eos_id: int | None, stops: list[str]):
        self.tokenizer, self.eos_id, self.stops = tokenizer, eos_id, stops

    def cut(self, generated: list[int], emitted: list[int]) -> tuple[list[int], str]:
        """A step's tokens up to EOS or a completed stop string, whichever comes first, and the reason."""
        cut, reason = len(emitted), "length"
        if self.eos_id is not None and self.eos_id in emitted:
            cut, reason = emitted.index(self.eos_id) + 1, "eos"
        if self.stops:
            window = generated[-STOP_WINDOW:]
            for i in range(1, cut + 1):
                text = self.tokenizer.decode(window + emitted[:i], skip_special_tokens=True)
                if any(s in text for s in self.stops):
                    cut, reason = i, "stop"
                    break
        return emitted[:cut], reason

    def trim(self, text: str) -> str:
        cuts = [text.find(s) for s in self.stops if s in text]
        return text[: min(cuts)] if cuts else text


def plan_rows(rows: list[Row]) -> list[DraftPlan]:
    """Each live row's plan for a step, k accepted + 1 bonus within its budget: from its own schedule, or from the
    batch's shared one at once (`plan_batch`)."""
    limits = [r.remaining - 1 for r in rows]
    shared = rows[0].schedule
    if shared.shared and all(r.schedule is shared for r in rows):
        plans = list(shared.plan_batch(limits))
        if len(plans) != len(rows):
            raise PluginError(f"schedule {shared.name!r} planned {len(plans)} rows for a batch of {len(rows)}")
        return plans
    return [r.schedule.plan(limit) for r, limit in zip(rows, limits)]


def stream_seed(seed: int, prompt: torch.Tensor) -> int:
    """Row b's random stream: the seed mixed with its prompt's tokens. A row's output still depends on neither
    its batch nor its batch-mates, and rows with different prompts draw from independent streams: a batch's
    shared decisions (`bass`, `adaptive`'s width) read every row's drafts, and with one stream for all, a row
    ahead would have drawn the very numbers a row behind draws its next tokens from."""
    digest = hashlib.sha256(str(int(seed)).encode() + prompt.to("cpu", torch.int64).numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
