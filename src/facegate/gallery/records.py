"""Records the gallery keeps about itself: audit events and archive reports, purges, master-key
rotations and API keys. Frozen dataclasses with ``to_dict()`` for JSON."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .policies import iso_utc, utcnow

ADMIN = "admin"


def scope_granted(granted: Iterable[str], scope: str) -> bool:
    """``admin`` implies every other scope."""
    return scope in granted or ADMIN in granted


@dataclass(frozen=True)
class AuditEvent:
    """One audit record. Never contains pixels or templates."""

    seq: int
    ts: dt.datetime
    actor: str
    action: str
    collection: str | None
    subjects: tuple[str, ...]
    purpose: str | None
    decision: str | None
    score: float | None
    details: dict[str, Any]
    mac: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": iso_utc(self.ts),
            "actor": self.actor,
            "action": self.action,
            "collection": self.collection,
            "subjects": list(self.subjects),
            "purpose": self.purpose,
            "decision": self.decision,
            "score": self.score,
            "details": self.details,
            "mac": self.mac,
        }


@dataclass(frozen=True)
class AuditReport:
    """Result of ``audit verify``: ``ok`` is False when any row was edited, deleted or inserted."""

    ok: bool
    events: int
    head_seq: int
    head_mac: str
    first_bad_seq: int | None = None
    problem: str | None = None
    # After an archival (``Gallery.audit_archive``) the stored chain starts after the anchor:
    # the last archived event's seq and MAC (0 and None when nothing was archived).
    archived_through: int = 0
    anchor_mac: str | None = None
    # The newest event the data directory's witness file (witness.py) vouches for; None: no witness.
    witnessed_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AuditArchiveReport:
    """Result of ``Gallery.audit_archive``: the range moved to ``path`` (``count`` 0 and no
    file when nothing was older than ``before``) and the chain's new anchor (``last_mac``)."""

    path: str | None
    count: int
    first_seq: int | None
    last_seq: int | None
    prev_mac: str | None  # what the first archived event chains to (the previous anchor)
    last_mac: str | None  # the new anchor: the oldest event left in the database chains to it
    first_ts: dt.datetime | None
    last_ts: dt.datetime | None
    before: dt.datetime
    file_sha256: str | None
    bytes: int
    event_seq: int | None  # the audit.archive event recording this archival
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "first_ts": iso_utc(self.first_ts),
            "last_ts": iso_utc(self.last_ts),
            "before": iso_utc(self.before),
        }


@dataclass(frozen=True)
class AuditArchiveFile:
    """One archive file as checked by ``Gallery.audit_verify_archive``."""

    path: str
    ok: bool
    count: int
    first_seq: int | None = None
    last_seq: int | None = None
    prev_mac: str | None = None
    last_mac: str | None = None
    first_ts: dt.datetime | None = None
    last_ts: dt.datetime | None = None
    sha256: str | None = None
    committed: bool | None = None  # None: checked without the database
    first_bad_seq: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "first_ts": iso_utc(self.first_ts), "last_ts": iso_utc(self.last_ts)}


@dataclass(frozen=True)
class AuditArchiveCheck:
    """Result of ``Gallery.audit_verify_archive``. ``ok``: every file is intact (MACs, order,
    count, footer) and, with the database, matches the archival it records and the database
    chain is intact. ``complete``: the files and the database together cover the whole chain,
    from the first event ever to the head, without a gap."""

    ok: bool
    complete: bool
    files: tuple[AuditArchiveFile, ...]
    events: int  # archived events checked
    database: AuditReport | None
    missing: tuple[tuple[int, int], ...] = ()  # (first, last) seq ranges not covered by the files given
    problem: str | None = None
    expect_head_found: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "files": [f.to_dict() for f in self.files],
            "database": None if self.database is None else self.database.to_dict(),
            "missing": [list(m) for m in self.missing],
        }


@dataclass(frozen=True)
class PurgeItem:
    collection: str
    subject: str
    reason: str  # "retention" | "no_active_consent"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class MasterKeyRotation:
    """Result of ``Gallery.rotate_master_key``: fingerprints (public ids, never key material),
    what was re-wrapped, and where the new key lives (``key_file`` None: the caller supplied
    it and must store it, e.g. in $FACEGATE_MASTER_KEY's secret store)."""

    old_key_id: str
    new_key_id: str
    subjects: int
    keyring_entries: int
    key_file: str | None
    old_key_destroyed: bool  # the old key file was overwritten and removed
    seconds: float
    at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": iso_utc(self.at)}


@dataclass(frozen=True)
class PurgeReport:
    dry_run: bool
    erased: tuple[PurgeItem, ...]
    at: dt.datetime
    rotation: MasterKeyRotation | None = None  # purge(rotate_master_key=True)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dry_run": self.dry_run,
            "at": iso_utc(self.at),
            "count": len(self.erased),
            "erased": [e.to_dict() for e in self.erased],
        }
        if self.rotation is not None:
            out["master_key_rotation"] = self.rotation.to_dict()
        return out


@dataclass(frozen=True)
class ApiKey:
    """An API key's record (never its secret). ``collections`` None means every collection."""

    id: int
    name: str
    prefix: str  # public, shown in listings and logs: "fg_<prefix>_…"
    scopes: tuple[str, ...]
    collections: tuple[str, ...] | None
    created_at: dt.datetime
    created_by: str
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > utcnow())

    @property
    def actor(self) -> str:
        """What the audit log records as the actor of this key's requests."""
        return f"key:{self.name}({self.prefix})"

    def has_scope(self, scope: str) -> bool:
        return scope_granted(self.scopes, scope)

    def can_access(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def allows(self, scope: str, collection: str | None = None) -> bool:
        return self.has_scope(scope) and (collection is None or self.can_access(collection))

    def require(self, scope: str, collection: str | None = None) -> None:
        """Raise ScopeMissingError / CollectionForbiddenError unless allowed."""
        from .errors import CollectionForbiddenError, ScopeMissingError

        if not self.has_scope(scope):
            raise ScopeMissingError(f"API key {self.name!r} lacks the {scope!r} scope", scope=scope)
        if collection is not None and not self.can_access(collection):
            raise CollectionForbiddenError(
                f"API key {self.name!r} is not granted collection {collection!r}", collection=collection
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "collections": None if self.collections is None else list(self.collections),
            "created_at": iso_utc(self.created_at),
            "created_by": self.created_by,
            "last_used_at": iso_utc(self.last_used_at),
            "revoked_at": iso_utc(self.revoked_at),
            "expires_at": iso_utc(self.expires_at),
            "active": self.active,
        }
