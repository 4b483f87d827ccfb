"""PostgreSQL: an index on photos.path in codepoint order, for folder-range queries.

``path_under`` compares paths with ``COLLATE "C"`` on PostgreSQL (locale collations sort "/"
among other characters), and the unique index on ``path`` uses the database's collation,
so it cannot serve that range: ``top --under``, ``relocate`` and every scan's missing-file
check would read the whole table. SQLite already compares by codepoint; nothing to do there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Revisions are frozen: the name is written out, not imported from the current models.
INDEX = "ix_photos_path_codepoint"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f'CREATE INDEX {INDEX} ON photos (path COLLATE "C")')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX {INDEX}")
