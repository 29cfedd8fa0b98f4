"""The gallery's audit log as its callers use it: query events, record decisions made outside
the gallery, archive old events and verify archives."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from .audit import ARCHIVE_ACTION, row_to_event
from .audit_archive import archive as archive_events
from .audit_archive import verify_archive as verify_archive_files
from .context import GalleryContext, aware
from .errors import InvalidArgumentError
from .types import AuditArchiveCheck, AuditArchiveReport, AuditEvent

AUDIT_ACTION_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")


def query(ctx: GalleryContext, *, collection: str | None, subject: str | None, action: str | None,
          since: dt.datetime | None, until: dt.datetime | None, limit: int, before_seq: int | None) -> list[AuditEvent]:
    if not (1 <= limit <= 10_000):
        raise InvalidArgumentError("limit must be 1–10000")
    with ctx.store.read() as tx:
        rows = tx.audit_query(collection=collection, subject=subject, action=action, since=aware(since, "since"),
                              until=aware(until, "until"), before_seq=before_seq, limit=limit)
        return [row_to_event(r) for r in rows]


def record(ctx: GalleryContext, *, actor: str, action: str, collection: str | None, subjects: Sequence[str],
           purpose: str | None, decision: str | None, score: float | None, details: dict[str, Any] | None) -> int:
    if not AUDIT_ACTION_RE.match(action or "") or action == ARCHIVE_ACTION:
        raise InvalidArgumentError(f"invalid audit action {action!r}")
    if details and len(repr(details)) > 4096:
        raise InvalidArgumentError("audit details are limited to 4 KiB (counts and codes, not data)")
    with ctx.store.write() as tx:
        return ctx.audit.append(tx, actor=actor, action=action, now=ctx.now(), collection=collection,
                                subjects=list(subjects), purpose=purpose, decision=decision, score=score, details=details)


def _deployment_id(ctx: GalleryContext) -> str | None:
    with ctx.store.read() as tx:
        return tx.get_meta("deployment_id")


def archive(ctx: GalleryContext, before: dt.datetime, path: str | os.PathLike[str], *, actor: str,
            batch: int, progress: Callable[[int, int | None], None] | None = None) -> AuditArchiveReport:
    cutoff = aware(before, "before")
    assert cutoff is not None
    return archive_events(ctx.audit, ctx.store, before=cutoff, path=path, actor=actor,
                          deployment_id=_deployment_id(ctx), batch=batch, progress=progress)


def verify_archive(ctx: GalleryContext, paths: Sequence[str | os.PathLike[str]], *, with_database: bool,
                   expect_head: str | None) -> AuditArchiveCheck:
    return verify_archive_files(ctx.audit, ctx.store if with_database else None, [str(p) for p in paths],
                                deployment_id=_deployment_id(ctx), expect_head=expect_head)
