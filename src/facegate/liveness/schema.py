"""Tables of the database-backed liveness session store (``facegate.liveness.db_store``), on the
gallery's SQLAlchemy ``Base``.

They live in the gallery database so that every ``facegate serve`` process (and every replica
on one PostgreSQL) shares liveness sessions, their single-use state, the replay digests and a
passed session's result. Migration ``0002_liveness_sessions`` creates the first two tables,
``0003_liveness_results`` the third.

Never stored: frames, landmarks or templates, and nothing in plaintext about the face. A session
row holds the challenge, its life-cycle state and, once checked, the audit-safe decision (reason
codes, challenge statuses, counts). A *passed* session's face-centred crop of its best frame —
what verify/enrol use in place of an image — is kept in ``liveness_results`` only as AES-256-GCM
ciphertext under a key derived from the master key, bound to the session id, and only until
verify/enrol takes it (the same transaction that marks the session consumed deletes it) or its
result expires (120 s; deleted by the purge and by any later consume attempt).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, Float, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

# One metadata for the whole gallery database: the migrations and the model check see these tables.
from ..gallery.schema import Base, UTCDateTime


class LivenessSessionRow(Base):
    """One liveness session: pending → checking → passed | failed; passed → consumed."""

    __tablename__ = "liveness_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(256), nullable=True)
    challenges: Mapped[list] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    result_ttl_s: Mapped[float] = mapped_column(Float)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    result_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    consumed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    live: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    decision: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # audit record: codes and counts only
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
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


class LivenessResultRow(Base):
    """A passed session's face-centred best-frame crop (PNG), encrypted: ``ciphertext`` = 12-byte
    nonce + AES-256-GCM(key = HKDF(master key, "liveness-result/v1"), associated data = the
    session id). ``key_id``: the fingerprint of the master key the key was derived from (a
    rotation makes the row unreadable: "run a new check"). Deleted when the session is consumed
    (same transaction), when ``expires_at`` has passed (purge, consume), and with its session."""

    __tablename__ = "liveness_results"
    session_id: Mapped[str] = mapped_column(ForeignKey("liveness_sessions.id", ondelete="CASCADE"), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
