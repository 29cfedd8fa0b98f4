"""Tables of the database-backed liveness session store (``facegate.liveness.db_store``).

They live in the gallery database so that every ``facegate serve`` process (and every replica
on one PostgreSQL) shares liveness sessions, their single-use state and the replay digests.
Migration ``0002_liveness_sessions`` creates exactly these tables.

Never stored: frames, images, face crops, landmarks or templates. A session row holds the
challenge, its life-cycle state and, once checked, the audit-safe decision (reason codes,
challenge statuses, counts). A passed session's best frame stays in the memory of the process
that ran the check, until verify/enrol takes it (once) or 120 s pass.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import JSON, Boolean, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from .schema import Base, UTCDateTime


class LivenessSessionRow(Base):
    """One liveness session: pending → checking → passed | failed; passed → consumed."""

    __tablename__ = "liveness_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64))
    owner: Mapped[Optional[str]] = mapped_column(String(256), nullable=True)
    challenges: Mapped[list] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    result_ttl_s: Mapped[float] = mapped_column(Float)
    claimed_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime, nullable=True)
    result_expires_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime, nullable=True)
    consumed_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime, nullable=True)
    live: Mapped[Optional[bool]] = mapped_column(Boolean, nullable=True)
    decision: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)  # audit record: codes and counts only
    model: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    # When the row may be deleted: an hour after the session (or its result) expired, so late
    # submissions still get "used"/"expired" rather than "not found".
    purge_after: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class LivenessFrameDigestRow(Base):
    """SHA-256 of a submitted frame (its bytes, or its decoded pixels), kept 24 h to refuse
    verbatim replays under another session. Not invertible; no foreign key (outlives sessions)."""

    __tablename__ = "liveness_frame_digests"
    digest: Mapped[str] = mapped_column(String(80), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
