"""Passed liveness sessions' results (encrypted best-frame crop), shared by every process.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "liveness_results",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["liveness_sessions.id"], ondelete="CASCADE",
                                name="fk_liveness_results_session_id_liveness_sessions"),
        sa.PrimaryKeyConstraint("session_id", name="pk_liveness_results"),
    )
    op.create_index("ix_liveness_results_expires_at", "liveness_results", ["expires_at"])


def downgrade() -> None:
    op.drop_table("liveness_results")
