"""Explanations record where the support's drop ranks among the deletion check's draws.

The check now compares the support's drop with 500 random draws instead of 20 (with 20, a
third of the verdicts flipped with the seed) and records the share of draws it beats and
their number. Cached explanations were checked against 20 draws and by LIME samples drawn
differently, so they are dropped (recomputed on demand, as in 0005 and 0006). Both columns
are nullable so that SQLite adds them in place; photosort always writes them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM explanations")
    with op.batch_alter_table("explanations") as batch:
        batch.add_column(sa.Column("deletion_rank", sa.Float(), nullable=True))
        batch.add_column(sa.Column("deletion_draws", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("explanations") as batch:
        batch.drop_column("deletion_draws")
        batch.drop_column("deletion_rank")
