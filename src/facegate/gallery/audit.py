"""Append-only audit log with a keyed hash chain.

Each event's ``mac`` is HMAC-SHA256(audit key, prev_mac || canonical(event)), where the audit
key is a random secret wrapped by the master key (so it is never in the database in clear).
Someone who can write the database but does not hold the master key cannot edit, delete,
insert or reorder events without ``verify`` noticing: an edited row's MAC no longer matches, a
deleted row breaks the next row's ``prev_mac`` and the sequence, and a truncated tail no longer
matches the ``audit_head`` row. (Deleting the tail *and* rewriting the head is detectable only
against a head recorded elsewhere: ``verify(expect_head=...)``, e.g. from a daily cron that
prints ``facegate audit verify --json``.)

Events never contain pixels or templates: actor, action, collection, subject external ids,
purpose, decision, score and small details (counts, reason codes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any

from .store import Store, StoreTx
from .types import AuditEvent, AuditReport

GENESIS = "0" * 64


def _ts(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    body = [seq, _ts(ts), actor, action, collection, list(subjects), purpose, decision,
            None if score is None else f"{score:.6f}", details]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class AuditLog:
    def __init__(self, mac_key: bytes) -> None:
        self._key = mac_key

    def mac(self, prev_mac: str, body: bytes) -> str:
        return hmac.new(self._key, prev_mac.encode() + b"|" + body, hashlib.sha256).hexdigest()

    def append(
        self,
        tx: StoreTx,
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
    ) -> int:
        """Append one event inside the caller's write transaction; returns its seq."""
        seq, prev = tx.audit_head(lock=True)
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
        return seq

    def verify(self, store: Store, *, expect_head: str | None = None) -> AuditReport:
        with store.read() as tx:
            head_seq, head_mac = tx.audit_head()
            prev, expected_seq, n = GENESIS, 1, 0
            for row in tx.audit_rows():
                n += 1
                if row.seq != expected_seq:
                    return AuditReport(False, n, head_seq, head_mac, expected_seq,
                                       f"event {expected_seq} is missing (next stored event is {row.seq})")
                if row.prev_mac != prev:
                    return AuditReport(False, n, head_seq, head_mac, row.seq, f"event {row.seq} does not chain to event {row.seq - 1}")
                body = canonical(row.seq, row.ts, row.actor, row.action, row.collection, list(row.subjects or []),
                                 row.purpose, row.decision, row.score, row.details or {})
                if not hmac.compare_digest(self.mac(prev, body), row.mac):
                    return AuditReport(False, n, head_seq, head_mac, row.seq, f"event {row.seq} was modified")
                prev, expected_seq = row.mac, row.seq + 1
        last_seq = expected_seq - 1
        if last_seq != head_seq or prev != head_mac:
            return AuditReport(False, n, head_seq, head_mac, last_seq + 1,
                               f"the log ends at event {last_seq} but the head says {head_seq}: events were removed or the head edited")
        if expect_head is not None and not hmac.compare_digest(expect_head, head_mac) and not _is_earlier_head(expect_head, store):
            return AuditReport(False, n, head_seq, head_mac, None, "the expected head MAC is not in the chain: the log was rewritten")
        return AuditReport(True, n, head_seq, head_mac)


def _is_earlier_head(mac: str, store: Store) -> bool:
    """An anchor recorded earlier must still be some event's MAC in the (verified) chain."""
    from sqlalchemy import select

    from .schema import AuditRow

    with store.read() as tx:
        return tx.execute(select(AuditRow.seq).where(AuditRow.mac == mac)).first() is not None


def row_to_event(row: Any) -> AuditEvent:
    return AuditEvent(
        seq=row.seq, ts=row.ts, actor=row.actor, action=row.action, collection=row.collection,
        subjects=tuple(row.subjects or ()), purpose=row.purpose, decision=row.decision, score=row.score,
        details=dict(row.details or {}), mac=row.mac,
    )


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so the MAC is computed over exactly what the database returns."""
    return json.loads(json.dumps(obj, default=str))
