"""The write side: `Store.open(url)` and the batched `RunLogger` the engine hands records to.

    store = Store.open(url)                            # connects, creates/checks the schema
    with store.start_run(policy, engine_info(engine)) as run:
        seq = run.start_sequence(prompt, n_prompt_tokens)
        gen = engine.generate(prompt, on_step=run.step_logger(seq))
        run.end_sequence(seq, gen)
    # leaving the block: flushed and marked done / interrupted (Ctrl-C) / failed (an exception)

Steps and decisions are buffered and written with one executemany per table in one
transaction every `flush_rows` rows or `flush_seconds` seconds (checked on each step; no
thread), never a commit per row. A process killed with SIGKILL keeps what was flushed;
the next `Store.open` on its host marks its run `interrupted`. A RunLogger is not
thread-safe: one per decoding thread.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import Connection, CursorResult, Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from cascade.errors import CascadeError
from cascade.features import CONTEXT, FEATURES
from cascade.metrics import QUALITY, add_counts
from cascade.policy import VERIFYING_MODES
from cascade.store import db, migrate, runinfo
from cascade.store.models import (
    CALIBRATION_OBJECTIVES,
    METRIC_COLUMNS,
    RUN_STATUSES,
    Calibration,
    Decision,
    Run,
    Sequence,
    Step,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from cascade.metrics import Generation, Quality, StepRecord
    from cascade.policy import Policy

FLUSH_ROWS = 2000  # buffered step + decision rows that trigger a write
FLUSH_SECONDS = 1.0  # ... or the age of the oldest unwritten row
SEED_MIN, SEED_MAX = -(2**31), 2**31 - 1  # what `sequences.seed` (INTEGER) holds on PostgreSQL too


@dataclass(frozen=True)
class CalibrationRecord:
    """One α calibration, as `cascade calibrate` found it (the `calibrations` table's columns)."""

    policy_name: str  # the derived policy, calibrated
    policy_yaml: str
    rule: str
    target: str
    objective: str  # "target_share" | "quality_floor"
    goal: float  # the share (or quality floor) asked for
    tolerance: float
    alpha: float  # the α chosen
    measured: float | None  # what was measured at that α
    converged: bool  # measured within tolerance of goal
    replays: int  # real decoding runs it took
    prompts_sha256: str
    num_prompts: int
    drafter: str | None = None
    model: str | None = None  # a learned rule's artefact
    model_sha256: str | None = None
    run_ids: tuple[int, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _f(x: float | None) -> float | None:
    """NaN (the engine's "absent") is stored as NULL on every backend."""
    return None if x is None or math.isnan(x) else x


class Store:
    """A connected decision store. `Store.open(url)` is the only constructor callers need."""

    def __init__(self, engine: Engine):
        self.engine = engine  # writers: BEGIN IMMEDIATE on SQLite
        self.url = db.mask_url(engine.url)  # safe to print
        self._reader: Engine | None = None

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Store:
        """Connect, bring an empty database to the schema head, mark runs of dead writers interrupted.

        Raises CascadeError (URL password masked) when the database cannot be reached, its schema is
        older or newer than this code, or (`create=False`) a SQLite file does not exist.
        """
        parsed = db.parse_url(url)
        db.check_sqlite_file(parsed, create=create)
        store = cls(db.make_engine(parsed))
        try:
            db.check_connection(store.reader)
            migrate.ensure_schema(store.engine, store.reader)
            store.mark_dead_runs()
        except SQLAlchemyError as exc:
            store.close()
            raise CascadeError(f"cannot open store {db.mask_url(parsed)}: {db.short_reason(exc, parsed)}") from None
        except BaseException:
            store.close()
            raise
        return store

    @property
    def reader(self) -> Engine:
        """An engine for queries: on SQLite it never takes the write lock, so readers never stall writers."""
        if self._reader is None:
            sqlite_file = db.is_sqlite(self.engine.url) and db.sqlite_path(self.engine.url) is not None
            self._reader = db.make_engine(self.engine.url, immediate=False) if sqlite_file else self.engine
        return self._reader

    def write(self, fn: Callable[[Connection], Any]) -> Any:
        """Run `fn(conn)` in one committed transaction; a failure becomes a CascadeError naming the store."""
        try:
            return db.write(self.engine, fn)
        except SQLAlchemyError as exc:
            raise CascadeError(f"cannot write to store {self.url}: {db.short_reason(exc, self.engine.url)}") from exc

    def close(self) -> None:
        if self._reader is not None and self._reader is not self.engine:
            self._reader.dispose()
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        policy: Policy,
        info: Mapping[str, Any] | None = None,
        *,
        flush_rows: int = FLUSH_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> RunLogger:
        """Insert a `running` run for `policy` and return its logger (use it as a context manager).

        `info`: what the caller knows about the engine, e.g. `runinfo.engine_info(engine)`: `device` and
        `dtype` get their own columns, the rest goes to `runs.info`. Versions, git commit and the owner
        process are filled in here.
        """
        info = dict(info or {})
        if policy.base_dir is not None:  # where the policy's relative model folders resolve (the dashboard reads it)
            info.setdefault("policy_dir", str(Path(policy.base_dir).absolute()))
        pid = os.getpid()
        row = {
            "policy_name": policy.name,
            "policy_yaml": policy.source_text or yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False),
            "policy_sha256": policy.sha256,
            "mode": policy.mode,
            "rule": policy.rule.name,
            "alpha": float(policy.rule.alpha),
            "temperature": float(policy.decoding.temperature),
            "block_size": int(policy.decoding.block_size),
            "target": policy.target.model,
            "drafter": policy.drafter.plugin if policy.drafter is not None else None,
            "drafter_options": dict(policy.drafter.options) if policy.drafter is not None else {},
            "device": _opt_str(info.pop("device", None)),
            "dtype": _opt_str(info.pop("dtype", None)),
            "versions": info.pop("versions", None) or runinfo.package_versions(),
            "git_commit": info.pop("git_commit", None) or runinfo.git_commit(),
            "info": info,
            "hostname": runinfo.hostname(),
            "pid": pid,
            "pid_started": runinfo.process_start(pid),
            "status": "running",
            "started_at": _now(),
        }
        run_id = self.write(lambda conn: _new_id(conn.execute(insert(Run).values(**row))))
        return RunLogger(self, run_id, policy.rule.name, float(policy.rule.alpha), policy.mode in VERIFYING_MODES,
                         flush_rows, flush_seconds)

    def mark_dead_runs(self) -> list[int]:
        """Mark `interrupted` the `running` runs of this host whose writer process is gone; their ids."""
        host = runinfo.hostname()

        def go(conn: Connection) -> list[int]:
            rows = conn.execute(
                select(Run.id, Run.pid, Run.pid_started).where(Run.status == "running", Run.hostname == host)
            ).all()
            dead = [r.id for r in rows if not runinfo.process_alive(r.pid, r.pid_started)]
            if dead:
                conn.execute(
                    update(Run).where(Run.id.in_(dead), Run.status == "running").values(
                        status="interrupted", finished_at=_now(),
                        error="the writing process ended without finishing the run (killed?)",
                    )
                )
            return dead

        with self.reader.connect() as conn:  # usually nothing to do: check without the write lock
            if not conn.execute(select(Run.id).where(Run.status == "running", Run.hostname == host).limit(1)).first():
                return []
        return self.write(go)

    def add_calibration(self, record: CalibrationRecord) -> int:
        """Store one calibration result; its id."""
        if record.objective not in CALIBRATION_OBJECTIVES:
            raise CascadeError(f"calibration objective {record.objective!r}: expected one of "
                               f"{', '.join(CALIBRATION_OBJECTIVES)}")
        row = {**asdict(record), "measured": None if record.measured is None else _f(float(record.measured)),
               "run_ids": list(record.run_ids), "info": dict(record.info), "created_at": _now()}
        return self.write(lambda conn: _new_id(conn.execute(insert(Calibration).values(**row))))

    def set_quality(self, sequence_id: int, quality: Quality, *, reference: str | None = None) -> None:
        """Fill a sequence's quality fields (benchmarks): every field of `quality` (`QUALITY` names) and
        `reference`; None leaves a column as it is, NaN is stored as NULL."""
        values: dict[str, Any] = {name: _f(float(value)) for name in QUALITY
                                  if (value := getattr(quality, name)) is not None}
        if reference is not None:
            values["reference"] = reference
        if values:
            self.write(lambda conn: conn.execute(update(Sequence).where(Sequence.id == sequence_id).values(**values)))


def _context(step: StepRecord) -> dict[str, Any]:
    """The step's CONTEXT columns (NULL when the engine did not record where the block sat)."""
    c = step.context
    if c is None:
        return dict.fromkeys(CONTEXT)
    return {"sequence_position": c.sequence_position,
            **{name: _f(getattr(c, name)) for name in CONTEXT if name != "sequence_position"}}


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key of a one-row INSERT (no RETURNING: works with SQLite older than 3.35)."""
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


class RunLogger:
    """Buffers one run's steps and decisions and writes them in batches. Made by `Store.start_run`."""

    def __init__(self, store: Store, run_id: int, rule: str, alpha: float, verifying: bool,
                 flush_rows: int = FLUSH_ROWS, flush_seconds: float = FLUSH_SECONDS):
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

    # ------------------------------------------------------------------ sequences

    def start_sequence(self, prompt_text: str, prompt_tokens: int | None = None, *,
                       reference: str | None = None, seed: int | None = None) -> int:
        """Insert a sequence row (its steps follow) and return its id.

        `seed`: the seed the sequence is decoded with (a 32-bit signed integer: the column is INTEGER on
        every backend), None when not known."""
        if seed is not None and not SEED_MIN <= int(seed) <= SEED_MAX:
            raise ValueError(f"seed must be a 32-bit signed integer ({SEED_MIN}..{SEED_MAX}) to be stored, got {seed}")
        row = {"run_id": self.run_id, "index": self._next_index, "prompt_text": prompt_text,
               "num_prompt_tokens": prompt_tokens or 0, "reference": reference,
               "seed": None if seed is None else int(seed), "started_at": _now()}

        def go(conn: Connection) -> int:
            self._write_buffers(conn)
            return _new_id(conn.execute(insert(Sequence).values(**row)))

        seq_id = self._commit(go)
        self._next_index += 1
        return seq_id

    def log_step(self, sequence_id: int, step: StepRecord) -> None:
        """Buffer one step and its decisions; write when the buffer is full or old enough."""
        if not (self._steps or self._decisions):
            self._oldest = time.monotonic()
        self._steps.append({
            "sequence_id": sequence_id, "index": step.index, "block_size": step.block_size,
            "drafted": step.drafted, "accepted": step.accepted, "emitted": len(step.emitted),
            "deferred": step.deferred, "target_calls": step.target_calls, "drafter_calls": step.drafter_calls,
            "draft_seconds": step.draft_seconds, "verify_seconds": step.verify_seconds,
            **_context(step),
        })
        rule, alpha = self.rule, self.alpha
        self._decisions.extend({
            "sequence_id": sequence_id, "step": step.index, "position": d.position, "kind": d.kind,
            "drafted_token": d.drafted_token, "emitted_token": d.emitted_token,
            **{name: _f(getattr(d, name)) for name in FEATURES},
            "rule": rule, "alpha": alpha, "deferred": d.deferred, "accepted": d.accepted,
        } for d in step.decisions)
        if (len(self._steps) + len(self._decisions) >= self.flush_rows
                or time.monotonic() - self._oldest >= self.flush_seconds):
            self.flush()

    def step_logger(self, sequence_id: int) -> Callable[[StepRecord], None]:
        """An `on_step` callback for `Engine.generate` that logs into `sequence_id`."""
        return lambda step: self.log_step(sequence_id, step)

    def end_sequence(self, sequence_id: int, generation: Generation) -> None:
        """Write what is buffered, the sequence's output and metrics, and the run's new totals."""
        m = generation.metrics
        seq_values: dict[str, Any] = {name: getattr(m, name) for name in METRIC_COLUMNS}
        seq_values.update(
            accepted_per_position=list(m.accepted_per_position), output_text=generation.text,
            output_token_ids=list(generation.token_ids), finish_reason=generation.finish_reason, finished_at=_now(),
        )
        totals = {name: self._totals[name] + seq_values[name] for name in METRIC_COLUMNS}
        totals["accepted_per_position"] = add_counts(self._totals["accepted_per_position"], m.accepted_per_position)

        def go(conn: Connection) -> None:
            self._write_buffers(conn)
            conn.execute(update(Sequence).where(Sequence.id == sequence_id).values(**seq_values))
            conn.execute(update(Run).where(Run.id == self.run_id).values(
                num_sequences=self._num_sequences + 1, **totals))

        self._commit(go)
        self._totals = totals
        self._num_sequences += 1

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
            conn.execute(update(Run).where(Run.id == self.run_id).values(
                status=status, error=error, finished_at=_now()))

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
