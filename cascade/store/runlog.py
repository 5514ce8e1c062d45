"""One run's log: the batched `RunLogger` the engine hands records to (made by `Store.start_run`).

Steps and decisions are buffered and written with one executemany per table in one transaction
every `flush_rows` rows or `flush_seconds` seconds (checked on each step; no thread), never a commit
per row. Leaving its `with` block marks the run done, interrupted (Ctrl-C) or failed (an exception).
Not thread-safe: one per decoding thread.
"""

from __future__ import annotations

import collections.abc as abc
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, insert, update

from cascade.errors import CascadeError
from cascade.features import CONTEXT, FEATURES
from cascade.metrics import add_counts
from cascade.store.columns import new_id, now, nullable
from cascade.store.models import METRIC_COLUMNS, RUN_STATUSES, Decision, Run, Sequence, Step

if TYPE_CHECKING:
    from typing_extensions import Self

    from cascade.metrics import Generation, StepRecord


class Writes(Protocol):
    """What a RunLogger needs of its store (`cascade.store.writer.Store`)."""

    def write(self, fn: Callable[[Connection], Any]) -> Any: ...


FLUSH_ROWS = 2000  # buffered step + decision rows that trigger a write
FLUSH_SECONDS = 1.0  # ... or the age of the oldest unwritten row
SEED_MIN, SEED_MAX = -(2**31), 2**31 - 1  # what `sequences.seed` (INTEGER) holds on PostgreSQL too


def _context(step: StepRecord) -> dict[str, Any]:
    """The step's CONTEXT columns (NULL when the engine did not record where the block sat)."""
    c = step.context
    if c is None:
        return dict.fromkeys(CONTEXT)
    return {
        "sequence_position": c.sequence_position,
        **{name: nullable(getattr(c, name)) for name in CONTEXT if name != "sequence_position"},
    }


class RunLogger:
    """Buffers one run's steps and decisions and writes them in batches. Made by `Store.start_run`."""

    def __init__(
        self,
        store: Writes,
        run_id: int,
        rule: str,
        alpha: float,
        verifying: bool,
        flush_rows: int = FLUSH_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
    ):
        self.store = store
        self.run_id = run_id
        self.status = "running"
        self.rule, self.alpha, self.verifying = rule, alpha, verifying
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._steps: list[dict[str, Any]] = []
        self._decisions: list[dict[str, Any]] = []
        self._oldest = time.monotonic()  # when the oldest unwritten row was buffered
        self._next_index = 0
        self._totals: dict[str, Any] = {name: 0 for name in METRIC_COLUMNS}
        self._totals["accepted_per_position"] = []
        self._num_sequences = 0
        self._busy: list[tuple[float, float]] = []  # disjoint (start, end) monotonic intervals spent decoding
        self._wall = 0.0  # their total length

    # ------------------------------------------------------------------ sequences

    def start_sequence(
        self,
        prompt_text: str,
        prompt_tokens: int | None = None,
        *,
        reference: str | None = None,
        seed: int | None = None,
        index: int | None = None,
    ) -> int:
        """Insert a sequence row (its steps follow) and return its id. `index`: the prompt's position among the
        run's prompts (what `cascade run --json` prints as "index"); by default the order sequences start in.

        `seed`: the seed the sequence is decoded with (a 32-bit signed integer: the column is INTEGER on
        every backend), None when not known."""
        if seed is not None and not SEED_MIN <= int(seed) <= SEED_MAX:
            raise ValueError(f"seed must be a 32-bit signed integer ({SEED_MIN}..{SEED_MAX}) to be stored, got {seed}")
        row = {
            "run_id": self.run_id,
            "index": self._next_index if index is None else int(index),
            "prompt_text": prompt_text,
            "num_prompt_tokens": prompt_tokens or 0,
            "reference": reference,
            "seed": None if seed is None else int(seed),
            "started_at": now(),
        }

        def go(conn: Connection) -> int:
            self._write_buffers(conn)
            return new_id(conn.execute(insert(Sequence).values(**row)))

        seq_id = self._commit(go)
        self._next_index = self._next_index + 1 if index is None else max(self._next_index, int(index) + 1)
        return seq_id

    def log_step(self, sequence_id: int, step: StepRecord) -> None:
        """Buffer one step and its decisions; write when the buffer is full or old enough."""
        if not (self._steps or self._decisions):
            self._oldest = time.monotonic()
        self._steps.append(
            {
                "sequence_id": sequence_id,
                "index": step.index,
                "block_size": step.block_size,
                "drafted": step.drafted,
                "accepted": step.accepted,
                "emitted": len(step.emitted),
                "deferred": step.deferred,
                "target_calls": step.target_calls,
                "drafter_calls": step.drafter_calls,
                "draft_seconds": step.draft_seconds,
                "verify_seconds": step.verify_seconds,
                **_context(step),
            }
        )
        rule, alpha = self.rule, self.alpha
        self._decisions.extend(
            {
                "sequence_id": sequence_id,
                "step": step.index,
                "position": d.position,
                "kind": d.kind,
                "drafted_token": d.drafted_token,
                "emitted_token": d.emitted_token,
                **{name: nullable(getattr(d, name)) for name in FEATURES},
                "rule": rule,
                "alpha": alpha,
                "deferred": d.deferred,
                "accepted": d.accepted,
            }
            for d in step.decisions
        )
        if (
            len(self._steps) + len(self._decisions) >= self.flush_rows
            or time.monotonic() - self._oldest >= self.flush_seconds
        ):
            self.flush()

    def record(
        self,
        rows: abc.Sequence[Mapping[str, Any]],
        decode: Callable[[Callable[[StepRecord], None]], Iterable[tuple[int, Generation]]],
        seed: int | None = None,
    ) -> Iterator[tuple[int, Generation, int]]:
        """Log a decode of `rows` (each a mapping with its "prompt" and, optionally, "reference"), the one loop
        every command logs through. `decode(on_step)` decodes them, calling `on_step` with every StepRecord, and
        yields (row index, Generation) as rows finish, e.g. `lambda on_step: engine.stream(prompts,
        on_step=on_step)`, batched as the engine batches. A row's sequence starts at its first step and ends with
        its generation. Yields (row index, Generation, sequence id) in finishing order."""
        sequences: dict[int, int] = {}

        def on_step(step: StepRecord) -> None:
            if step.row not in sequences:
                row = rows[step.row]
                sequences[step.row] = self.start_sequence(
                    row["prompt"], reference=row.get("reference"), seed=seed, index=step.row
                )
            self.log_step(sequences[step.row], step)

        for index, generation in decode(on_step):
            self.end_sequence(sequences[index], generation)
            yield index, generation, sequences[index]

    def step_logger(self, sequence_id: int) -> Callable[[StepRecord], None]:
        """An `on_step` callback for `Engine.generate` that logs into `sequence_id`."""
        return lambda step: self.log_step(sequence_id, step)

    def end_sequence(self, sequence_id: int, generation: Generation) -> None:
        """Write what is buffered, the sequence's output and metrics, and the run's new totals."""
        m = generation.metrics
        seq_values: dict[str, Any] = {name: getattr(m, name) for name in METRIC_COLUMNS}
        seq_values.update(
            accepted_per_position=list(m.accepted_per_position),
            output_text=generation.text,
            output_token_ids=list(generation.token_ids),
            finish_reason=generation.finish_reason,
            finished_at=now(),
        )
        totals = {name: self._totals[name] + seq_values[name] for name in METRIC_COLUMNS}
        totals["accepted_per_position"] = add_counts(self._totals["accepted_per_position"], m.accepted_per_position)
        wall = self._decoded(m.decode_seconds)

        def go(conn: Connection) -> None:
            self._write_buffers(conn)
            conn.execute(update(Sequence).where(Sequence.id == sequence_id).values(**seq_values))
            conn.execute(
                update(Run)
                .where(Run.id == self.run_id)
                .values(num_sequences=self._num_sequences + 1, wall_seconds=wall, **totals)
            )

        self._commit(go)
        self._totals = totals
        self._num_sequences += 1

    def _decoded(self, seconds: float) -> float:
        """Add a sequence that decoded for `seconds` until now; the run's wall-clock decoding time so far (the
        union of its sequences' intervals: rows decoded together count once)."""
        end = time.monotonic()
        start = end - max(0.0, float(seconds or 0.0))
        while self._busy and self._busy[-1][1] >= start:  # ends only grow: overlaps are at the tail
            s, e = self._busy.pop()
            self._wall -= e - s
            start = min(start, s)
        self._busy.append((start, end))
        self._wall += end - start
        return self._wall

    def log_generation(self, prompt_text: str, generation: Generation, *, reference: str | None = None) -> int:
        """Log a finished generation (its `steps`) as one sequence; returns the sequence id."""
        seq_id = self.start_sequence(prompt_text, generation.prompt_tokens, reference=reference)
        for step in generation.steps:
            self.log_step(seq_id, step)
        self.end_sequence(seq_id, generation)
        return seq_id

    # ------------------------------------------------------------------ writing

    def flush(self) -> None:
        """Write buffered steps and decisions now (one transaction)."""
        if self._steps or self._decisions:
            self._commit(self._write_buffers)

    def _write_buffers(self, conn: Connection) -> None:
        # steps first: decisions reference them. Buffers are cleared by _commit once committed.
        if self._steps:
            conn.execute(insert(Step), self._steps)
        if self._decisions:
            conn.execute(insert(Decision), self._decisions)

    def _commit(self, fn: Callable[[Connection], Any]) -> Any:
        if self.status != "running":
            raise CascadeError(f"run {self.run_id} is already finished ({self.status}); start a new run")
        n_steps, n_decisions = len(self._steps), len(self._decisions)
        out = self.store.write(fn)
        del self._steps[:n_steps], self._decisions[:n_decisions]  # keep rows buffered if the write failed
        return out

    def finish(self, status: str = "done", error: str | None = None) -> None:
        """Flush and mark the run `status` (done, failed, interrupted); a second call does nothing."""
        if self.status != "running":
            return
        if status not in RUN_STATUSES or status == "running":
            raise ValueError(f"status must be one of done, failed, interrupted, got {status!r}")

        def go(conn: Connection) -> None:
            self._write_buffers(conn)
            conn.execute(update(Run).where(Run.id == self.run_id).values(status=status, error=error, finished_at=now()))

        self._commit(go)
        self.status = status

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.finish("done")
            return
        status = "failed" if issubclass(exc_type, Exception) else "interrupted"  # KeyboardInterrupt, SystemExit
        try:
            self.finish(status, error=f"{exc_type.__name__}: {exc}")
        except Exception as store_exc:  # noqa: BLE001  never hide the exception that ended the run
            print(f"warning: could not mark run {self.run_id} {status}: {store_exc}", file=sys.stderr)
