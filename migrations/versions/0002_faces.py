"""Faces: detected faces with crops and emotion probabilities; face state of each photo.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

EMOTION_COLUMNS = ("p_angry", "p_disgust", "p_fear", "p_happy", "p_sad", "p_surprise", "p_neutral")


def upgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.add_column(
            sa.Column("faces_state", sa.String(16), nullable=False, server_default="pending")
        )
        batch.add_column(sa.Column("faces_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("detector", sa.String(64), nullable=True))
        batch.add_column(sa.Column("phash", sa.String(16), nullable=True))
        batch.create_index("ix_photos_faces_state", ["faces_state"])
    op.create_table(
        "faces",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "photo_id",
            sa.Integer(),
            sa.ForeignKey("photos.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("x", sa.Float(), nullable=False),
        sa.Column("y", sa.Float(), nullable=False),
        sa.Column("w", sa.Float(), nullable=False),
        sa.Column("h", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("sharpness", sa.Float(), nullable=False),
        sa.Column("crop", sa.LargeBinary(), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=True),
        sa.Column("classify_error", sa.Text(), nullable=True),
        *(sa.Column(name, sa.Float(), nullable=True) for name in EMOTION_COLUMNS),
    )
    with op.batch_alter_table("faces") as batch:
        batch.create_index("ix_faces_photo_id", ["photo_id"])
        batch.create_index("ix_faces_model_id", ["model_id"])


def downgrade() -> None:
    op.drop_table("faces")
    with op.batch_alter_table("photos") as batch:
        batch.drop_index("ix_photos_faces_state")
        batch.drop_column("phash")
        batch.drop_column("detector")
        batch.drop_column("faces_error")
        batch.drop_column("faces_state")
