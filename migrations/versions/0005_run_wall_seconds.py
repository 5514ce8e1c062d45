"""a run's wall-clock decoding time

`runs.wall_seconds`: the seconds during which at least one of the run's sequences was decoding (the union of
their generate() intervals), so a batched run's throughput is its tokens over the time it took, not over the
sum of its rows' overlapping times. Older runs keep NULL (their throughput is unknown; per-row figures stay).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 01:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wall_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("wall_seconds")
