"""Scan claims: the folders each running scan writes, so scans of other folders run beside it.

A scan of a PostgreSQL library records its roots here and holds an advisory lock named by
the row's id for as long as it runs. Another scan reads the table to refuse only folders
that overlap, naming the scan (machine, pid, folder); a row whose lock is gone belongs to a
scan that was killed, and is deleted. SQLite libraries keep one writer (an ``flock``) and
leave the table empty. Nothing else changes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scan_claims",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("roots", sa.Text(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scan_claims")
