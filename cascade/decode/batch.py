"""A running batch: the engine's one loop, as an object rows join and leave between steps (SPEC.md "Batched decoding").

    batch = engine.running_batch(on_step)        # no row yet
    batch.join([engine.request_row(0, "def f(")])  # waits for the next step
    while batch:                                 # rows live or waiting
        for row, generation in batch.step():     # admit the waiting, step every live row once
            ...                                  # the rows that finished (or were cancelled) this step
    batch.cancel(0)                              # leaves at the next step (its client went away)

`Engine.generate` is this loop over rows that all join at once; `cascade serve` (continuous batching)
joins requests as they arrive. Rows joining a batch that is decoding are prefilled in one target pass
of their prompts (the live rows fed nothing: their slots for it are holes), and their drafter starts
them beside the live rows (`Drafter.join`); a batch with no live row starts afresh. Each row keeps
its own random stream, so its tokens do not depend on when it joined or beside whom (under a schedule
the batch shares, a sampled row's tokens depend on how far the batch drafts, and their law does not).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cascade.metrics import Generation, StepRecord
from cascade.policy import VERIFYING_MODES

ABORT = "abort"  # a cancelled row's finish reason (vLLM's)


class RunningBatch:
    """Rows decoding together; others wait to join at the next step."""

    def __init__(self, engine: Any, on_step: Callable[[StepRecord], None] | None = None):
        self.engine = engine
        self.on_step = on_step
        self.live: list[Any] = []  # Rows (cascade.decode.row) in the caches' row order
        self.waiting: list[Any] = []
        self.cancelled: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.live or self.waiting)

    def join(self, rows: list[Any]) -> None:
        """These rows join at the next step."""
        self.waiting.extend(rows)

    def cancel(self, index: int) -> None:
        """The row with this index leaves at the next step (finish reason "abort"), waiting or live."""
        self.cancelled.add(index)

    def step(self) -> list[tuple[Any, Generation]]:
        """Admit the waiting rows, step every live row once; the rows that finished, with their Generations."""
        e = self.engine
        out = self._leave(lambda row: row.index in self.cancelled)
        gone = [row for row in self.waiting if row.index in self.cancelled]
        self.waiting = [row for row in self.waiting if row.index not in self.cancelled]
        for row in gone:
            row.finish = ABORT
            out.append((row, row.result(e.tokenizer)))
        self.cancelled.clear()
        if self.waiting:
            self._admit()
        if not self.live:
            return out
        verifying = e.mode in VERIFYING_MODES
        for row, (emitted, record) in zip(self.live, e.step_fn(self.live)):
            record = row.take(emitted, record, verifying)
            if self.on_step is not None:
                self.on_step(record)
        return out + self._leave(lambda row: row.done)

    def _admit(self) -> None:
        e, rows = self.engine, self.waiting
        self.waiting = []
        now = time.perf_counter()
        for row in rows:
            row.t0 = now
        if e.schedule_cls.shared:  # one schedule for the batch (BASS, adaptive): the joining rows take the batch's
            shared = self.live[0].schedule if self.live else rows[0].schedule
            for row in rows:
                row.schedule = shared
        if self.live:
            e._join(self.live, rows)
            self.live = self.live + rows
        else:
            e._prefill(rows)
            self.live = rows

    def _leave(self, leaving: Callable[[Any], bool]) -> list[tuple[Any, Generation]]:
        """The live rows `leaving` says leave the caches; their Generations."""
        e = self.engine
        keep = [b for b, row in enumerate(self.live) if not leaving(row)]
        if len(keep) == len(self.live):
            return []
        e._leave(keep)
        out = []
        for row in self.live:
            if leaving(row):
                if row.index in self.cancelled:
                    row.finish = ABORT
                out.append((row, row.result(e.tokenizer)))
        self.live = [self.live[b] for b in keep]
        return out
