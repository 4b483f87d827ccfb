"""Explanations record the spread of the deletion check's random draws.

The check now calls an explanation faithful only when hiding its supporting superpixels
lowers the probability clearly more than random draws hiding as many pixels do: beyond
their mean by twice their standard deviation and by 2 points. Cached explanations hold
neither that spread nor draws of matched area, so they are dropped (recomputed on demand,
as in 0005) and the column is added. The column is nullable so that SQLite adds it in place
(a NOT NULL column without a default would rebuild the table, leaving free pages behind);
photosort always writes it. Faces, scores and everything else are kept.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM explanations")
    with op.batch_alter_table("explanations") as batch:
        batch.add_column(sa.Column("deletion_spread", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("explanations") as batch:
        batch.drop_column("deletion_spread")
