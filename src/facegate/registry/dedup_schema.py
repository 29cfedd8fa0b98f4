"""Tables of whole-collection de-duplication, on the gallery's SQLAlchemy ``Base`` (migration
``0008_registry_dedup``).

``dedup_runs``: one row per run — what was declared (purpose, FMR, the threshold and model it
resolved to), the arithmetic it was admitted on, what it found, and the change-feed position at
its start (where the next incremental run begins). ``dedup_pairs``: the pairs a run found, by
internal subject id with ``ON DELETE CASCADE``, so erasing a subject removes every pair naming
it and a report never shows an erased person. ``dedup_reviews``: an operator's decision on a
cluster, keyed by a digest of the cluster's sorted internal subject ids (no identity in the
key); the audit log holds the decision with the subjects' external ids.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..gallery.schema import Base, BigId, UTCDateTime


class DedupRunRow(Base):
    __tablename__ = "dedup_runs"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))  # "full" | "incremental"
    status: Mapped[str] = mapped_column(String(16))  # "running" | "completed" | "failed"
    fmr: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    model_id: Mapped[str] = mapped_column(String(128))
    subjects: Mapped[int] = mapped_column(Integer)  # subjects taking part (consent covers the purpose)
    queried: Mapped[int] = mapped_column(Integer)  # subjects searched against everyone (all, or the new ones)
    pairs_compared: Mapped[int] = mapped_column(BigInteger)
    expected_false_pairs: Mapped[float] = mapped_column(Float)
    max_expected_false_pairs: Mapped[float] = mapped_column(Float)
    feed_seq: Mapped[int] = mapped_column(BigInteger)  # change-feed head when the run started
    after_run_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # incremental: the run it continues
    pairs_found: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(String(256))
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)  # run as a registry job
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class DedupPairRow(Base):
    """One pair of distinct subjects scoring at or above the run's threshold (best template pair)."""

    __tablename__ = "dedup_pairs"
    run_id: Mapped[int] = mapped_column(ForeignKey("dedup_runs.id", ondelete="CASCADE"), primary_key=True)
    subject_a: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), primary_key=True, index=True)
    subject_b: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), primary_key=True, index=True)
    score: Mapped[float] = mapped_column(Float)


class DedupReviewRow(Base):
    """An operator's decision on one cluster: "same" (one person) or "different" (several)."""

    __tablename__ = "dedup_reviews"
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    cluster_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    decision: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text)
    members: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("dedup_runs.id", ondelete="SET NULL"), nullable=True)
    actor: Mapped[str] = mapped_column(String(256))
    decided_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
