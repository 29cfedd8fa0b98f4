"""Audit archival: the ``audit_archives`` table (ranges moved out to files, the chain's anchor)
and append-only triggers that allow deleting archived events only (seq at or below the anchor).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

_SQLITE_OLD = ("CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
               "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END")
_SQLITE_NEW = ("CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
               "WHEN OLD.seq > COALESCE((SELECT MAX(last_seq) FROM audit_archives), 0) "
               "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (only archived events may be deleted)'); END")
_PG_OLD = ("CREATE OR REPLACE FUNCTION facegate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
           "$$ BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$")
_PG_NEW = (
    "CREATE OR REPLACE FUNCTION facegate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF TG_OP = 'DELETE' AND OLD.seq <= COALESCE((SELECT max(last_seq) FROM audit_archives), 0) THEN RETURN OLD; END IF; "
    "RAISE EXCEPTION 'audit_events is append-only (only archived events may be deleted)'; END $$"
)


def upgrade() -> None:
    op.create_table(
        "audit_archives",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("prev_mac", sa.String(64), nullable=False),
        sa.Column("last_mac", sa.String(64), nullable=False),
        sa.Column("first_ts", TS, nullable=False),
        sa.Column("last_ts", TS, nullable=False),
        sa.Column("cutoff", TS, nullable=False),
        sa.Column("archived_at", TS, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("file_name", sa.String(512), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_archives"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_archives_last_seq", "audit_archives", ["last_seq"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        op.execute(_SQLITE_NEW)
    elif dialect == "postgresql":
        op.execute(_PG_NEW)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        op.execute(_SQLITE_OLD)
    elif dialect == "postgresql":
        op.execute(_PG_OLD)
    op.drop_table("audit_archives")
