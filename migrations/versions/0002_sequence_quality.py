"""sequence quality fields (reference, chrF, target log-prob) and an index on the policy hash

Benchmarks fill the quality fields after a run; runs of one policy are found by its hash.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reference", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("chrf", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("target_logprob", sa.Float(), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_policy_sha256"), ["policy_sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_policy_sha256"))
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.drop_column("target_logprob")
        batch_op.drop_column("chrf")
        batch_op.drop_column("reference")
