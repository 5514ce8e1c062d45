"""decision features for learned rules (q margin, q rank, argmax agreement), each step's block context,
and the calibrations table

`decisions` gains q_margin, q_rank and agree (cascade.features.FEATURES); `steps` gains where the
block sat (sequence_position, recent_acceptance, logq_q10, logq_q50: cascade.features.CONTEXT);
`calibrations` holds one `cascade calibrate` result per row. Older rows keep NULL in the new columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 16:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# written out, not imported: a migration never reads the live models
DECISION_COLUMNS = ("q_margin", "q_rank", "agree")
STEP_FLOAT_COLUMNS = ("recent_acceptance", "logq_q10", "logq_q50")


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        for name in DECISION_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sequence_position", sa.Integer(), nullable=True))
        for name in STEP_FLOAT_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy_name", sa.String(length=200), nullable=False),
        sa.Column("policy_yaml", sa.Text(), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=500), nullable=True),
        sa.Column("model_sha256", sa.String(length=64), nullable=True),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("drafter", sa.String(length=500), nullable=True),
        sa.Column("objective", sa.String(length=16), nullable=False),
        sa.Column("goal", sa.Float(), nullable=False),
        sa.Column("tolerance", sa.Float(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("measured", sa.Float(), nullable=True),
        sa.Column("converged", sa.Boolean(), nullable=False),
        sa.Column("replays", sa.Integer(), nullable=False),
        sa.Column("prompts_sha256", sa.String(length=64), nullable=False),
        sa.Column("num_prompts", sa.Integer(), nullable=False),
        sa.Column("run_ids", sa.JSON(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.CheckConstraint("objective IN ('target_share', 'quality_floor')", name=op.f("ck_calibrations_objective")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calibrations")),
    )
    with op.batch_alter_table("calibrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_calibrations_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_calibrations_rule"), ["rule"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("calibrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calibrations_rule"))
        batch_op.drop_index(batch_op.f("ix_calibrations_created_at"))
    op.drop_table("calibrations")
    with op.batch_alter_table("steps", schema=None) as batch_op:
        for name in reversed(("sequence_position", *STEP_FLOAT_COLUMNS)):
            batch_op.drop_column(name)
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        for name in reversed(DECISION_COLUMNS):
            batch_op.drop_column(name)
