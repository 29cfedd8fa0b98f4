"""Liveness sessions and replay digests shared by every process on the database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The liveness tables' models join the gallery's metadata (env.py's target_metadata, the model check).
import facegate.liveness.schema  # noqa: F401

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "liveness_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(256), nullable=True),
        sa.Column("challenges", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("result_ttl_s", sa.Float(), nullable=False),
        sa.Column("claimed_at", TS, nullable=True),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("result_expires_at", TS, nullable=True),
        sa.Column("consumed_at", TS, nullable=True),
        sa.Column("live", sa.Boolean(), nullable=True),
        sa.Column("decision", sa.JSON(), nullable=True),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("purge_after", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_liveness_sessions"),
    )
    op.create_index("ix_liveness_sessions_purge_after", "liveness_sessions", ["purge_after"])
    op.create_table(
        "liveness_frame_digests",
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_liveness_frame_digests"),
    )
    op.create_index("ix_liveness_frame_digests_seen_at", "liveness_frame_digests", ["seen_at"])


def downgrade() -> None:
    op.drop_table("liveness_frame_digests")
    op.drop_table("liveness_sessions")
