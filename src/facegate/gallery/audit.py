"""Append-only audit log with a keyed hash chain.

Each event's ``mac`` is HMAC-SHA256(audit key, prev_mac || canonical(event)), where the audit
key is a random secret wrapped by the master key (so it is never in the database in clear).
Someone who can write the database but does not hold the master key cannot edit, delete,
insert or reorder events without ``verify`` noticing: an edited row's MAC no longer matches, a
deleted row breaks the next row's ``prev_mac`` and the sequence, and a truncated tail no longer
matches the ``audit_head`` row. Deleting the tail *and* rewriting the head (or wiping the log
back to genesis) leaves a shorter valid chain: the witness file (witness.py) and a head recorded
elsewhere (``verify(expect_head=...)``) catch that.

Events never contain pixels or templates: actor, action, collection, subject external ids,
purpose, decision, score and small details (counts, reason codes).

Archival (``audit_archive.archive``): the oldest events move to a JSON Lines file (header, one event per
line with its ``prev_mac`` and ``mac``, footer MAC'd with the audit key) and are deleted from
the database in one transaction that also records the chain's new *anchor* (the last archived
event's MAC) in ``audit_archives`` and appends an ``audit.archive`` event naming it. ``verify``
then starts the chain at the anchor and checks it against that event; ``audit_archive.verify_archive``
checks files, and files + database together (the last file's last MAC = the anchor).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any, TypedDict

from .errors import AuditTamperedError
from .ports import StoreTransaction, TemplateStore
from .transaction import StoreTx
from .types import AuditEvent, AuditReport
from .witness import Checkpoint, Witness, WitnessTamperedError

GENESIS = "0" * 64
ARCHIVE_ACTION = "audit.archive"  # reserved: only ``archive`` writes it
ARCHIVE_FORMAT = "facegate.audit-archive"
ARCHIVE_VERSION = 1
ARCHIVE_LOCK = "audit-archive"
ARCHIVE_LOCK_TTL = dt.timedelta(minutes=10)
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

def ts_text(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(
    seq: int,
    ts: dt.datetime,
    actor: str,
    action: str,
    collection: str | None,
    subjects: list[str],
    purpose: str | None,
    decision: str | None,
    score: float | None,
    details: dict[str, Any],
) -> bytes:
    body = [seq, ts_text(ts), actor, action, collection, list(subjects), purpose, decision,
            None if score is None else f"{score:.6f}", details]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _ChainFields(TypedDict, total=False):
    """The AuditReport fields ``verify`` learns on the way and repeats in every report it returns."""

    archived_through: int
    anchor_mac: str | None
    witnessed_seq: int | None


class AuditLog:
    def __init__(self, mac_key: bytes, *, witness_path: Path | None = None) -> None:
        self._key = mac_key
        self.witness = Witness(witness_path, mac_key) if witness_path is not None else None

    def mac(self, prev_mac: str, body: bytes) -> str:
        return hmac.new(self._key, prev_mac.encode() + b"|" + body, hashlib.sha256).hexdigest()

    def key_id(self) -> str:
        """A public fingerprint of the audit key (written in archive headers: tells "another
        deployment's archive" from "tampered")."""
        return hmac.new(self._key, b"facegate/audit-key-id", hashlib.sha256).hexdigest()[:16]

    def file_mac(self, header_line: bytes, footer: dict[str, Any]) -> str:
        """MAC over an archive's header line and its footer (without the ``mac`` field)."""
        body = b"facegate/audit-archive/v1|" + header_line.rstrip(b"\n") + b"|" + json_line(footer).rstrip(b"\n")
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def append(
        self,
        tx: StoreTransaction,
        *,
        actor: str,
        action: str,
        now: dt.datetime,
        collection: str | None = None,
        subjects: list[str] | tuple[str, ...] = (),
        purpose: str | None = None,
        decision: str | None = None,
        score: float | None = None,
        details: dict[str, Any] | None = None,
        head: tuple[int, str] | None = None,
    ) -> int:
        """Append one event inside the caller's write transaction; returns its seq. ``head``: the
        audit head the transaction has already read, locked (else it is read here)."""
        seq, prev = tx.audit_head(lock=True) if head is None else head
        seq += 1
        score = None if score is None else round(float(score), 6)
        details = _jsonable(details or {})
        subjects = [str(s) for s in subjects]
        body = canonical(seq, now, actor, action, collection, subjects, purpose, decision, score, details)
        mac = self.mac(prev, body)
        tx.append_audit(
            dict(seq=seq, ts=now, actor=actor, action=action, collection=collection, subjects=subjects, purpose=purpose,
                 decision=decision, score=score, details=details, prev_mac=prev, mac=mac)
        )
        if self.witness is not None:
            witness = self.witness
            tx.on_commit(lambda: witness.record(seq, mac))
        return seq

    def verify(self, store: TemplateStore, *, expect_head: str | None = None) -> AuditReport:
        """Check the stored chain. After an archival it starts at the anchor (the newest
        ``audit_archives`` row), which must be the one the last ``audit.archive`` event in the
        chain recorded: removing events at the boundary, or forging an anchor, is detected."""
        try:
            checkpoint = self.witness.latest() if self.witness is not None else None
        except WitnessTamperedError as exc:
            with store.read() as tx:
                head_seq, head_mac = _head_or_none(tx)
            return AuditReport(False, 0, head_seq, head_mac, None, f"the audit witness file was modified ({exc})")
        witnessed_mac: str | None = None
        with store.read() as tx:
            try:
                head_seq, head_mac = tx.audit_head()
            except AuditTamperedError as exc:
                return AuditReport(False, 0, 0, "", None, exc.message, witnessed_seq=_seq(checkpoint))
            anchor = tx.audit_anchor()
            a_seq, a_mac = (int(anchor.last_seq), str(anchor.last_mac)) if anchor is not None else (0, GENESIS)
            extra: _ChainFields = {"archived_through": a_seq, "anchor_mac": None if anchor is None else a_mac}
            prev, expected_seq, n = a_mac, a_seq + 1, 0
            last_archive: Any = None
            for row in tx.audit_rows(after_seq=0):
                n += 1
                if row.seq != expected_seq:
                    return AuditReport(False, n, head_seq, head_mac, expected_seq,
                                       f"event {expected_seq} is missing (next stored event is {row.seq})", **extra)
                if row.prev_mac != prev:
                    what = (f"event {row.seq} does not chain to the archive anchor" if row.seq == a_seq + 1 and anchor is not None
                            else f"event {row.seq} does not chain to event {row.seq - 1}")
                    return AuditReport(False, n, head_seq, head_mac, row.seq, what, **extra)
                body = canonical(row.seq, row.ts, row.actor, row.action, row.collection, list(row.subjects or []),
                                 row.purpose, row.decision, row.score, row.details or {})
                if not hmac.compare_digest(self.mac(prev, body), row.mac):
                    return AuditReport(False, n, head_seq, head_mac, row.seq, f"event {row.seq} was modified", **extra)
                if row.action == ARCHIVE_ACTION:
                    last_archive = row
                if checkpoint is not None and row.seq == checkpoint.seq:
                    witnessed_mac = row.mac
                prev, expected_seq = row.mac, row.seq + 1
        last_seq = expected_seq - 1
        if last_seq != head_seq or prev != head_mac:
            return AuditReport(
                False,
                n,
                head_seq,
                head_mac,
                last_seq + 1,
                f"the log ends at event {last_seq} but the head says {head_seq}: events were removed or the head edited",
                **extra,
            )
        if anchor is not None or last_archive is not None:
            d = dict(last_archive.details or {}) if last_archive is not None else {}
            if d.get("through_seq") != a_seq or d.get("through_mac") != (a_mac if anchor is not None else None):
                return AuditReport(
                    False,
                    n,
                    head_seq,
                    head_mac,
                    a_seq + 1,
                    "the archive anchor is not the one the last audit.archive event recorded: "
                    "events were removed at the archive boundary or the anchor was edited",
                    **extra,
                )
        extra["witnessed_seq"] = _seq(checkpoint)
        witness_problem = _witness_problem(checkpoint, witnessed_mac, head_seq, a_seq)
        if witness_problem is not None:
            return AuditReport(False, n, head_seq, head_mac, head_seq + 1, witness_problem, **extra)
        if (
            expect_head is not None
            and not hmac.compare_digest(expect_head, head_mac)
            and not _is_earlier_head(expect_head, store)
        ):
            where = (
                ""
                if anchor is None
                else f" (it may be in an archived range, seq <= {a_seq}: check it with verify-archive --expect-head)"
            )
            return AuditReport(
                False,
                n,
                head_seq,
                head_mac,
                None,
                f"the expected head MAC is not in the chain: the log was rewritten{where}",
                **extra,
            )
        if self.witness is not None and head_seq > (extra["witnessed_seq"] or 0):
            self.witness.record(head_seq, head_mac)  # a verified head: also covers other processes' events
            extra["witnessed_seq"] = head_seq
        return AuditReport(True, n, head_seq, head_mac, **extra)


def _seq(checkpoint: Checkpoint | None) -> int | None:
    return None if checkpoint is None else checkpoint.seq


def _head_or_none(tx: StoreTx) -> tuple[int, str]:
    try:
        return tx.audit_head()
    except AuditTamperedError:
        return 0, ""


def _witness_problem(checkpoint: Checkpoint | None, stored_mac: str | None, head_seq: int, archived_through: int) -> str | None:
    """Why the intact-looking chain contradicts the witness (None: it agrees)."""
    if checkpoint is None:
        return None
    if checkpoint.seq > head_seq:
        return (
            f"the log ends at event {head_seq} but event {checkpoint.seq} was witnessed at {checkpoint.at}: "
            f"the newest events were removed and the head rewritten"
        )
    if checkpoint.seq > archived_through and (stored_mac is None or not hmac.compare_digest(stored_mac, checkpoint.mac)):
        return f"event {checkpoint.seq} is not the one witnessed at {checkpoint.at}: the log was rewritten"
    return None


def _is_earlier_head(mac: str, store: TemplateStore) -> bool:
    """An anchor recorded earlier must still be some event's MAC in the (verified) chain."""
    from sqlalchemy import select

    from .schema import AuditRow

    with store.read() as tx:
        return tx.execute(select(AuditRow.seq).where(AuditRow.mac == mac)).first() is not None


def row_to_event(row: Any) -> AuditEvent:
    return AuditEvent(
        seq=row.seq,
        ts=row.ts,
        actor=row.actor,
        action=row.action,
        collection=row.collection,
        subjects=tuple(row.subjects or ()),
        purpose=row.purpose,
        decision=row.decision,
        score=row.score,
        details=dict(row.details or {}),
        mac=row.mac,
    )


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so the MAC is computed over exactly what the database returns."""
    return json.loads(json.dumps(obj, default=str))


def json_line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
