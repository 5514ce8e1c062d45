"""The write side: `Store.open(url)`, runs started (`start_run` -> `cascade.store.runlog.RunLogger`), calibrations.

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

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from cascade.errors import CascadeError
from cascade.metrics import QUALITY
from cascade.policy import VERIFYING_MODES
from cascade.store import db, migrate, runinfo
from cascade.store.columns import new_id, now, nullable, opt_str
from cascade.store.models import (
    CALIBRATION_OBJECTIVES,
    Calibration,
    Run,
    Sequence,
)
from cascade.store.runlog import FLUSH_ROWS, FLUSH_SECONDS, RunLogger

if TYPE_CHECKING:
    from typing_extensions import Self

    from cascade.metrics import Quality
    from cascade.policy import Policy


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
            "block_size": int(info.pop("max_draft", 0)),  # the most the schedule drafts per step
            "target": policy.target.model,
            "drafter": policy.drafter.plugin if policy.drafter is not None else None,
            "drafter_options": dict(policy.drafter.options) if policy.drafter is not None else {},
            "device": opt_str(info.pop("device", None)),
            "dtype": opt_str(info.pop("dtype", None)),
            "versions": info.pop("versions", None) or runinfo.package_versions(),
            "git_commit": info.pop("git_commit", None) or runinfo.git_commit(),
            "info": info,
            "hostname": runinfo.hostname(),
            "pid": pid,
            "pid_started": runinfo.process_start(pid),
            "status": "running",
            "started_at": now(),
        }
        run_id = self.write(lambda conn: new_id(conn.execute(insert(Run).values(**row))))
        return RunLogger(
            self,
            run_id,
            policy.rule.name,
            float(policy.rule.alpha),
            policy.mode in VERIFYING_MODES,
            flush_rows,
            flush_seconds,
        )

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
                    update(Run)
                    .where(Run.id.in_(dead), Run.status == "running")
                    .values(
                        status="interrupted",
                        finished_at=now(),
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
            raise CascadeError(
                f"calibration objective {record.objective!r}: expected one of {', '.join(CALIBRATION_OBJECTIVES)}"
            )
        row = {
            **asdict(record),
            "measured": None if record.measured is None else nullable(float(record.measured)),
            "run_ids": list(record.run_ids),
            "info": dict(record.info),
            "created_at": now(),
        }
        return self.write(lambda conn: new_id(conn.execute(insert(Calibration).values(**row))))

    def annotate_run(self, run_id: int, key: str, value: Any) -> None:
        """Set `runs.info[key]` (JSON-ready `value`) of a run, e.g. a benchmark's own figures for it; the rest of
        its info stays."""

        def go(conn: Connection) -> None:
            info = conn.execute(select(Run.info).where(Run.id == run_id)).scalar_one_or_none()
            if info is None and not conn.execute(select(Run.id).where(Run.id == run_id)).first():
                raise CascadeError(f"no run {run_id} in store {self.url}")
            conn.execute(update(Run).where(Run.id == run_id).values(info={**(info or {}), key: value}))

        self.write(go)

    def set_quality(self, sequence_id: int, quality: Quality, *, reference: str | None = None) -> None:
        """Fill a sequence's quality fields (benchmarks): every field of `quality` (`QUALITY` names) and
        `reference`; None leaves a column as it is, NaN is stored as NULL."""
        values: dict[str, Any] = {
            name: nullable(float(value)) for name in QUALITY if (value := getattr(quality, name)) is not None
        }
        if reference is not None:
            values["reference"] = reference
        if values:
            self.write(lambda conn: conn.execute(update(Sequence).where(Sequence.id == sequence_id).values(**values)))
