"""completion quality fields of a sequence (cascade.metrics.Quality) and its decoding seed

Benchmarks fill exact match, edit similarity (first line, first lines), parses, distinct-2 and
repeat-4 next to chrF and the target's log-prob; `seed` is the seed a sequence was decoded with
(several seeds per prompt at T > 0), NULL for sequences logged before this revision.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# written out, not imported: a migration never reads the live models or cascade.metrics.QUALITY
QUALITY_COLUMNS = ("exact_match", "edit_similarity", "edit_similarity_lines", "parses", "distinct_2", "repeat_4")


def upgrade() -> None:
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        for name in QUALITY_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("seed", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.drop_column("seed")
        for name in reversed(QUALITY_COLUMNS):
            batch_op.drop_column(name)
