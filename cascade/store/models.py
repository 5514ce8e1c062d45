"""The decision store's schema: typed SQLAlchemy 2 models for runs, sequences, steps and decisions.

    runs 1─* sequences 1─* steps 1─* decisions

- `runs`: one `cascade run` / benchmark arm: the policy (YAML text and hash), target and
  drafter, device, dtype, package versions, git commit, owner process, status, totals.
- `sequences`: one prompt (and seed) of a run: prompt, output, per-sequence metrics (SPEC.md names)
  and quality fields benchmarks fill later (reference and `cascade.metrics.QUALITY`).
- `steps`: one verification step (or one drafter step in `sequential`/`drafter` mode),
  keyed by (sequence, step index).
- `decisions`: one row per drafted position and per token the target emitted itself
  (correction, bonus, target), with the quantities the rules read (`cascade.features.FEATURES`).

    calibrations: one `cascade calibrate` result each (rule, objective, α found, replays)

The metric columns of `runs` and `sequences` carry the names of `cascade.metrics.Metrics`'
counters, so totals are `Metrics` fields one to one (a test checks the two lists agree).
Every constraint and index is named through the metadata's naming convention, so
migrations can refer to them on every backend.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cascade.metrics import COUNTERS, QUALITY

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("running", "done", "failed", "interrupted")
DECISION_KINDS = ("draft", "correction", "bonus", "target")
CALIBRATION_OBJECTIVES = ("target_share", "quality_floor")

# 64-bit ids on servers; SQLite needs INTEGER for an auto-incrementing rowid alias
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class MetricColumns:
    """Counters of `cascade.metrics.Metrics`, shared by runs (totals) and sequences."""

    num_drafts: Mapped[int] = mapped_column(Integer, default=0)  # verification steps
    num_draft_tokens: Mapped[int] = mapped_column(Integer, default=0)
    num_accepted_tokens: Mapped[int] = mapped_column(Integer, default=0)
    num_deferred: Mapped[int] = mapped_column(Integer, default=0)
    target_calls: Mapped[int] = mapped_column(Integer, default=0)
    drafter_calls: Mapped[int] = mapped_column(Integer, default=0)
    num_generated_tokens: Mapped[int] = mapped_column(Integer, default=0)
    num_prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    decode_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    accepted_per_position: Mapped[list[int]] = mapped_column(JSON, default=list)


class Run(MetricColumns, Base):
    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(_in("status", RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_name: Mapped[str] = mapped_column(String(200))
    policy_yaml: Mapped[str] = mapped_column(Text)
    policy_sha256: Mapped[str] = mapped_column(String(64), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(64))
    alpha: Mapped[float] = mapped_column(Float)
    temperature: Mapped[float] = mapped_column(Float)
    block_size: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(500))  # hub id or folder
    drafter: Mapped[str | None] = mapped_column(String(500))  # plugin name (None: target-only)
    drafter_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    device: Mapped[str | None] = mapped_column(String(64))
    dtype: Mapped[str | None] = mapped_column(String(32))
    versions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # package -> version
    git_commit: Mapped[str | None] = mapped_column(String(64))
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # anything else the caller knows
    hostname: Mapped[str] = mapped_column(String(255))  # owner process, to spot runs whose writer died
    pid: Mapped[int] = mapped_column(Integer)
    pid_started: Mapped[int | None] = mapped_column(BigInteger)  # process start ticks (Linux), guards pid reuse
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    num_sequences: Mapped[int] = mapped_column(Integer, default=0)  # finished sequences in the totals
    # seconds during which at least one sequence was decoding (the union of their generate() intervals): a batched
    # run's throughput is its tokens over this, not over decode_seconds (the sum of its rows' overlapping times)
    wall_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class Sequence(MetricColumns, Base):
    __tablename__ = "sequences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)  # order within the run
    prompt_text: Mapped[str] = mapped_column(Text)
    output_text: Mapped[str | None] = mapped_column(Text)  # None until the sequence ends
    output_token_ids: Mapped[list[int] | None] = mapped_column(JSON)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seed: Mapped[int | None] = mapped_column(Integer)  # the seed it was decoded with; NULL: not recorded (before 0003)
    # quality (`cascade.metrics.Quality`, columns named and ordered as QUALITY), filled later by benchmarks;
    # NULL = not measured. reference, chrf, target_logprob: revision 0002; the rest: 0003
    reference: Mapped[str | None] = mapped_column(Text)
    chrf: Mapped[float | None] = mapped_column(Float)  # chrF against the reference, 0..100
    target_logprob: Mapped[float | None] = mapped_column(Float)  # target's mean log-prob of the emitted tokens
    exact_match: Mapped[float | None] = mapped_column(Float)  # first non-blank line equals the reference's, 0 or 1
    edit_similarity: Mapped[float | None] = mapped_column(Float)  # Levenshtein similarity of the first line, 0..100
    edit_similarity_lines: Mapped[float | None] = mapped_column(Float)  # the same over the first 3 lines
    parses: Mapped[float | None] = mapped_column(Float)  # prompt + completion lines parse as Python, 0 or 1
    distinct_2: Mapped[float | None] = mapped_column(Float)  # distinct code-token bigrams / bigrams, 0..1
    repeat_4: Mapped[float | None] = mapped_column(Float)  # code-token 4-grams repeating an earlier one, 0..1


class Step(Base):
    __tablename__ = "steps"

    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequences.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)  # StepRecord.index
    block_size: Mapped[int] = mapped_column(Integer)  # tokens asked of the drafter
    drafted: Mapped[int] = mapped_column(Integer)
    accepted: Mapped[int] = mapped_column(Integer)
    emitted: Mapped[int] = mapped_column(Integer)  # tokens this step put in the output
    deferred: Mapped[int] = mapped_column(Integer)
    target_calls: Mapped[int] = mapped_column(Integer)
    drafter_calls: Mapped[int] = mapped_column(Integer)
    draft_seconds: Mapped[float] = mapped_column(Float)
    verify_seconds: Mapped[float] = mapped_column(Float)
    # where the block sat (`cascade.features.CONTEXT`), logged with the decisions; revision 0004
    sequence_position: Mapped[int | None] = mapped_column(Integer)
    recent_acceptance: Mapped[float | None] = mapped_column(Float)
    logq_q10: Mapped[float | None] = mapped_column(Float)
    logq_q50: Mapped[float | None] = mapped_column(Float)


class Decision(Base):
    __tablename__ = "decisions"
    __table_args__ = (
        ForeignKeyConstraint(["sequence_id", "step"], ["steps.sequence_id", "steps.index"], ondelete="CASCADE"),
        CheckConstraint(_in("kind", DECISION_KINDS), name="kind"),
        Index("ix_decisions_sequence_step", "sequence_id", "step"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sequence_id: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)  # StepRecord.index
    position: Mapped[int] = mapped_column(Integer)  # in the block; a correction/bonus sits at the accepted count
    kind: Mapped[str] = mapped_column(String(12))  # draft | correction | bonus | target
    drafted_token: Mapped[int | None] = mapped_column(Integer)
    emitted_token: Mapped[int | None] = mapped_column(Integer)  # None: a rejected draft
    q_x: Mapped[float | None] = mapped_column(Float)  # q(drafted) at T = 1; NULL = absent (no q)
    q_max: Mapped[float | None] = mapped_column(Float)
    q_entropy: Mapped[float | None] = mapped_column(Float)
    q_margin: Mapped[float | None] = mapped_column(Float)  # revision 0004 (NULL in older rows)
    q_rank: Mapped[float | None] = mapped_column(Float)  # revision 0004
    p_x: Mapped[float | None] = mapped_column(Float)
    p_max: Mapped[float | None] = mapped_column(Float)
    p_entropy: Mapped[float | None] = mapped_column(Float)
    d_tv: Mapped[float | None] = mapped_column(Float)
    agree: Mapped[float | None] = mapped_column(Float)  # revision 0004
    rule: Mapped[str] = mapped_column(String(64))
    alpha: Mapped[float] = mapped_column(Float)
    deferred: Mapped[bool | None] = mapped_column(Boolean)  # r(x); drafts only
    accepted: Mapped[bool | None] = mapped_column(Boolean)  # drafts only


class Calibration(Base):
    """One α calibration (`cascade calibrate`): the α found for a rule and an objective, and how."""

    __tablename__ = "calibrations"
    __table_args__ = (CheckConstraint(_in("objective", CALIBRATION_OBJECTIVES), name="objective"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    policy_name: Mapped[str] = mapped_column(String(200))  # the calibrated (derived) policy
    policy_yaml: Mapped[str] = mapped_column(Text)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str | None] = mapped_column(String(500))  # a learned rule's artefact (path), else NULL
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(500))
    drafter: Mapped[str | None] = mapped_column(String(500))
    objective: Mapped[str] = mapped_column(String(16))  # target_share | quality_floor
    goal: Mapped[float] = mapped_column(Float)  # the share (or quality floor) asked for
    tolerance: Mapped[float] = mapped_column(Float)
    alpha: Mapped[float] = mapped_column(Float)  # the α chosen
    measured: Mapped[float | None] = mapped_column(Float)  # the share (or quality) measured at that α
    converged: Mapped[bool] = mapped_column(Boolean)  # measured within tolerance of goal
    replays: Mapped[int] = mapped_column(Integer)  # real decoding runs it took
    prompts_sha256: Mapped[str] = mapped_column(String(64))
    num_prompts: Mapped[int] = mapped_column(Integer)
    run_ids: Mapped[list[int]] = mapped_column(JSON, default=list)  # the replays' runs
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


METRIC_COLUMNS = COUNTERS
"""Summable counters shared by `runs` and `sequences` (equal to `cascade.metrics.COUNTERS`)."""

QUALITY_COLUMNS = QUALITY
"""Quality columns of `sequences`, in table order (equal to `cascade.metrics.QUALITY`)."""
