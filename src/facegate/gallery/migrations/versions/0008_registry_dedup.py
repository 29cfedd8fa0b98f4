"""Registry de-duplication runs and reviewed clusters.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dedup_runs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("collection_id", BigId, nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fmr", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("subjects", sa.Integer(), nullable=False),
        sa.Column("queried", sa.Integer(), nullable=False),
        sa.Column("pairs_compared", sa.BigInteger(), nullable=False),
        sa.Column("expected_false_pairs", sa.Float(), nullable=False),
        sa.Column("max_expected_false_pairs", sa.Float(), nullable=False),
        sa.Column("feed_seq", sa.BigInteger(), nullable=False),
        sa.Column("after_run_id", sa.BigInteger(), nullable=True),
        sa.Column("pairs_found", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], ondelete="CASCADE",
                                name="fk_dedup_runs_collection_id_collections"),
        sa.PrimaryKeyConstraint("id", name="pk_dedup_runs"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_dedup_runs_collection_id", "dedup_runs", ["collection_id"])
    op.create_index("ix_dedup_runs_job_id", "dedup_runs", ["job_id"])
    op.create_table(
        "dedup_pairs",
        sa.Column("run_id", BigId, nullable=False),
        sa.Column("subject_a", BigId, nullable=False),
        sa.Column("subject_b", BigId, nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["dedup_runs.id"], ondelete="CASCADE", name="fk_dedup_pairs_run_id_dedup_runs"),
        sa.ForeignKeyConstraint(["subject_a"], ["subjects.id"], ondelete="CASCADE", name="fk_dedup_pairs_subject_a_subjects"),
        sa.ForeignKeyConstraint(["subject_b"], ["subjects.id"], ondelete="CASCADE", name="fk_dedup_pairs_subject_b_subjects"),
        sa.PrimaryKeyConstraint("run_id", "subject_a", "subject_b", name="pk_dedup_pairs"),
    )
    op.create_index("ix_dedup_pairs_subject_a", "dedup_pairs", ["subject_a"])
    op.create_index("ix_dedup_pairs_subject_b", "dedup_pairs", ["subject_b"])
    op.create_table(
        "dedup_reviews",
        sa.Column("collection_id", BigId, nullable=False),
        sa.Column("cluster_key", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("run_id", BigId, nullable=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], ondelete="CASCADE",
                                name="fk_dedup_reviews_collection_id_collections"),
        sa.ForeignKeyConstraint(["run_id"], ["dedup_runs.id"], ondelete="SET NULL", name="fk_dedup_reviews_run_id_dedup_runs"),
        sa.PrimaryKeyConstraint("collection_id", "cluster_key", name="pk_dedup_reviews"),
    )


def downgrade() -> None:
    op.drop_table("dedup_reviews")
    op.drop_table("dedup_pairs")
    op.drop_table("dedup_runs")
