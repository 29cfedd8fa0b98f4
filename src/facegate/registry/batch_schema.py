"""Tables of bulk enrolment (``registry/batch.py``), on the gallery's SQLAlchemy ``Base``;
migration ``0007_registry_batches`` creates them with ``registry_jobs`` (``registry/jobs.py``).

``registry_batch_items``: one row per manifest row a batch job handled — the idempotency key
(collection, subject, image sha256) and the row's outcome with the same reason codes as single
enrolment. A row points at its subject (once the subject exists) and, when accepted, at the
template it produced, and is deleted with either: erasing a subject removes its rows and keys.
No image and no template is stored here.

``registry_batch_files``: the images (and manifest) uploaded for a service job, only while the
job needs them: AES-256-GCM under a key derived from the master key, the job id and file name as
associated data; deleted in the transaction that ends the job, whatever its outcome.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..gallery.schema import Base, BigId, UTCDateTime
from .jobs import JobRow  # noqa: F401  (registry_jobs, the table the foreign keys below name)


class BatchItemRow(Base):
    __tablename__ = "registry_batch_items"
    __table_args__ = (
        UniqueConstraint("job_id", "line", name="uq_registry_batch_items_job_line"),
        Index("ix_registry_batch_items_key", "collection_id", "subject", "image_sha256"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("registry_jobs.id", ondelete="CASCADE"))
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(String(256))
    image: Mapped[str] = mapped_column(Text)  # the manifest's file reference
    image_sha256: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # pending | accepted | rejected | skipped
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"), nullable=True,
                                                    index=True)
    # The subject once it exists: erasing it deletes its rows (accepted or not) with it.
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), nullable=True,
                                                   index=True)
    # None (SQL NULL, not JSON null): not flagged; a list (empty when not disclosed): flagged.
    duplicates: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class BatchFileRow(Base):
    __tablename__ = "registry_batch_files"
    job_id: Mapped[str] = mapped_column(ForeignKey("registry_jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(1024), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
