"""Drop cached LIME explanations; they are recomputed on demand from the crop the model sees.

Explanations made before this revision resized the face crop with a different filter from
the model's own preprocessing, so the probability they report differed slightly from the
one stored with the face (`explain` said 98% where `show` said 97%). The cache key has no
field for how a crop was resized; emptying the cache is the one safe way to retire them.
Faces, scores and everything else are kept.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM explanations")


def downgrade() -> None:
    """Nothing to restore: older photosort recomputes what it needs."""
