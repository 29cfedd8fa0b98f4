"""Collections: ``liveness_required`` — the operations (enroll, verify, identify) that need a
passed liveness check. Existing collections get the empty list (nothing required).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both backends (SQLite allows it with a constant default): no table
    # rebuild, so the subjects' foreign keys and the rows are left alone.
    op.add_column("collections", sa.Column("liveness_required", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))


def downgrade() -> None:
    # Native DROP COLUMN (SQLite >= 3.35, PostgreSQL), never a table rebuild: rebuilding
    # ``collections`` under foreign_keys=ON would cascade-delete every subject.
    op.execute("ALTER TABLE collections DROP COLUMN liveness_required")
