"""base schema: runs, sequences, steps, decisions

Revision ID: 0001
Revises:
Create Date: 2026-11-22 01:21:06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def metric_columns() -> list[sa.Column]:
    """Counters of cascade.metrics.Metrics, on runs (totals) and sequences."""
    ints = (
        "num_drafts",
        "num_draft_tokens",
        "num_accepted_tokens",
        "num_deferred",
        "target_calls",
        "drafter_calls",
        "num_generated_tokens",
        "num_prompt_tokens",
    )
    return [
        *(sa.Column(name, sa.Integer(), nullable=False) for name in ints),
        sa.Column("decode_seconds", sa.Float(), nullable=False),
        sa.Column("ttft_seconds", sa.Float(), nullable=False),
        sa.Column("accepted_per_position", sa.JSON(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_name", sa.String(length=200), nullable=False),
        sa.Column("policy_yaml", sa.Text(), nullable=False),
        sa.Column("policy_sha256", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("block_size", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("drafter", sa.String(length=500), nullable=True),
        sa.Column("drafter_options", sa.JSON(), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("dtype", sa.String(length=32), nullable=True),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_started", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("num_sequences", sa.Integer(), nullable=False),
        *metric_columns(),
        sa.CheckConstraint("status IN ('running', 'done', 'failed', 'interrupted')", name=op.f("ck_runs_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_started_at"), ["started_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_status"), ["status"], unique=False)

    op.create_table(
        "sequences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("prompt_text", sa.Text(), nullable=False),
        sa.Column("output_text", sa.Text(), nullable=True),
        sa.Column("output_token_ids", sa.JSON(), nullable=True),
        sa.Column("finish_reason", sa.String(length=16), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        *metric_columns(),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_sequences_run_id_runs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequences")),
    )
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sequences_run_id"), ["run_id"], unique=False)

    op.create_table(
        "steps",
        sa.Column("sequence_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("block_size", sa.Integer(), nullable=False),
        sa.Column("drafted", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("emitted", sa.Integer(), nullable=False),
        sa.Column("deferred", sa.Integer(), nullable=False),
        sa.Column("target_calls", sa.Integer(), nullable=False),
        sa.Column("drafter_calls", sa.Integer(), nullable=False),
        sa.Column("draft_seconds", sa.Float(), nullable=False),
        sa.Column("verify_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sequence_id"], ["sequences.id"], name=op.f("fk_steps_sequence_id_sequences"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("sequence_id", "index", name=op.f("pk_steps")),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sequence_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("drafted_token", sa.Integer(), nullable=True),
        sa.Column("emitted_token", sa.Integer(), nullable=True),
        sa.Column("q_x", sa.Float(), nullable=True),
        sa.Column("q_max", sa.Float(), nullable=True),
        sa.Column("q_entropy", sa.Float(), nullable=True),
        sa.Column("p_x", sa.Float(), nullable=True),
        sa.Column("p_max", sa.Float(), nullable=True),
        sa.Column("p_entropy", sa.Float(), nullable=True),
        sa.Column("d_tv", sa.Float(), nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("deferred", sa.Boolean(), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=True),
        sa.CheckConstraint("kind IN ('draft', 'correction', 'bonus', 'target')", name=op.f("ck_decisions_kind")),
        sa.ForeignKeyConstraint(
            ["sequence_id", "step"],
            ["steps.sequence_id", "steps.index"],
            name=op.f("fk_decisions_sequence_id_steps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index("ix_decisions_sequence_step", ["sequence_id", "step"], unique=False)


def downgrade() -> None:
    op.drop_table("decisions")
    op.drop_table("steps")
    op.drop_table("sequences")
    op.drop_table("runs")
