"""Explanations: cached LIME results per face, model and parameters.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "explanations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "face_id", sa.Integer(), sa.ForeignKey("faces.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("emotion", sa.String(16), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("fit", sa.Float(), nullable=False),
        sa.Column("deletion_support", sa.Float(), nullable=False),
        sa.Column("deletion_random", sa.Float(), nullable=False),
        sa.Column("segment_map", sa.LargeBinary(), nullable=False),
        sa.Column("weights", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint(
            "face_id", "model_id", "emotion", "samples", "segments", "seed", name="uq_explanation"
        ),
    )
    with op.batch_alter_table("explanations") as batch:
        batch.create_index("ix_explanations_face_id", ["face_id"])


def downgrade() -> None:
    op.drop_table("explanations")
