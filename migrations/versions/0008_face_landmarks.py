"""Face landmarks: the face mesh's 468 points and face-presence logit for each face.

``landmarks`` holds ``(468, 3)`` float16 in the stored crop's pixels (later stages name face
parts on the crop without running the mesh again); ``mesh_presence`` is the mesh's logit that
the crop shows a face. Both are empty for faces found before this revision; the next scan
finds those photos' faces again, since the detection settings' key changed with it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        batch.add_column(sa.Column("landmarks", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("mesh_presence", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        batch.drop_column("mesh_presence")
        batch.drop_column("landmarks")
