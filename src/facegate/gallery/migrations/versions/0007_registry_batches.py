"""Registry jobs (bulk enrolment, de-duplication), bulk-enrolment rows and uploads.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The registry tables' models join the gallery's metadata (env.py's target_metadata, the model check).
import facegate.registry.batch_schema  # noqa: F401

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "registry_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("active_collection", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("done", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registry_jobs"),
        # One active job per collection: set while queued/running, NULL after (NULLs never collide).
        sa.UniqueConstraint("active_collection", name="uq_registry_jobs_active_collection"),
    )
    op.create_index("ix_registry_jobs_collection", "registry_jobs", ["collection"])
    op.create_index("ix_registry_jobs_status", "registry_jobs", ["status"])
    op.create_table(
        "registry_batch_items",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("collection_id", BIG_ID, nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("template_id", BIG_ID, nullable=True),
        sa.Column("subject_id", BIG_ID, nullable=True),
        sa.Column("duplicates", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["registry_jobs.id"], ondelete="CASCADE",
                                name="fk_registry_batch_items_job_id_registry_jobs"),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], ondelete="CASCADE",
                                name="fk_registry_batch_items_collection_id_collections"),
        sa.ForeignKeyConstraint(["template_id"], ["templates.id"], ondelete="CASCADE",
                                name="fk_registry_batch_items_template_id_templates"),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], ondelete="CASCADE",
                                name="fk_registry_batch_items_subject_id_subjects"),
        sa.PrimaryKeyConstraint("id", name="pk_registry_batch_items"),
        sa.UniqueConstraint("job_id", "line", name="uq_registry_batch_items_job_line"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_registry_batch_items_key", "registry_batch_items", ["collection_id", "subject", "image_sha256"])
    op.create_index("ix_registry_batch_items_template_id", "registry_batch_items", ["template_id"])
    op.create_index("ix_registry_batch_items_subject_id", "registry_batch_items", ["subject_id"])
    op.create_table(
        "registry_batch_files",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["registry_jobs.id"], ondelete="CASCADE",
                                name="fk_registry_batch_files_job_id_registry_jobs"),
        sa.PrimaryKeyConstraint("job_id", "name", name="pk_registry_batch_files"),
    )


def downgrade() -> None:
    op.drop_table("registry_batch_files")
    op.drop_table("registry_batch_items")
    op.drop_table("registry_jobs")
