"""Erasure and retention: erase one subject, and the purge that erases subjects past their
collection's retention or left without an active consent."""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable

from .context import GalleryContext, aware, collection_in, subject_in
from .errors import LockedError
from .ports import CollectionRow, StoreTransaction, SubjectRow
from .types import PurgeItem

PURGE_LOCK_TTL = dt.timedelta(minutes=15)
CHANGE_FEED_KEEP = dt.timedelta(days=1)


def erase(ctx: GalleryContext, tx: StoreTransaction, col: CollectionRow, row: SubjectRow, *, actor: str, reason: str,
          now: dt.datetime) -> None:
    n_t, n_c = tx.delete_subject(row.id)
    tx.add_change(col.id, row.id, "subject", now)
    ctx.audit.append(tx, actor=actor, action="subject.erase", now=now, collection=col.name, subjects=[row.external_id],
                     decision="erased", details={"reason": reason, "templates": n_t, "consents": n_c})


def delete_subject(ctx: GalleryContext, collection: str, subject: str, *, actor: str, reason: str) -> None:
    now = ctx.now()
    with ctx.store.write() as tx:
        col = collection_in(tx, collection)
        erase(ctx, tx, col, subject_in(tx, col, subject), actor=actor, reason=reason, now=now)
    ctx.index.sync()
    ctx.store.checkpoint()


def purge(ctx: GalleryContext, *, dry_run: bool, actor: str, now: dt.datetime | None,
          progress: Callable[[int, int | None], None] | None = None) -> tuple[tuple[PurgeItem, ...], dt.datetime]:
    """The erasures (or, with ``dry_run``, what would be erased) and the time they were judged at.
    ``progress(done, total)``: called with the candidates judged so far, after each one."""
    now = aware(now, "now") or ctx.now()
    if dry_run:
        with ctx.store.read() as tx:
            return tuple(PurgeItem(c.name, ext, reason) for c in tx.collections()
                         for _sid, ext, reason in tx.purge_candidates(c.id, c.retention_days, now)), now
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with ctx.store.write() as tx:
        if not tx.acquire_lock("purge", holder, ctx.now(), PURGE_LOCK_TTL):
            raise LockedError("another purge is running; try again later")
    try:
        erased = _erase_due(ctx, holder, actor, now, progress)
        with ctx.store.write() as tx:
            tx.prune_changes(ctx.now() - CHANGE_FEED_KEEP)
            ctx.audit.append(tx, actor=actor, action="purge.run", now=ctx.now(), decision="done",
                             details={"erased": len(erased)})
    finally:
        with ctx.store.write() as tx:
            tx.release_lock("purge", holder)
    if erased:
        ctx.index.sync()
        ctx.store.checkpoint()
    return tuple(erased), now


def _erase_due(ctx: GalleryContext, holder: str, actor: str, now: dt.datetime,
               progress: Callable[[int, int | None], None] | None) -> list[PurgeItem]:
    """Erase each subject due at ``now``, one transaction each, re-checking it inside (a consent
    granted meanwhile saves it); renews the purge lease as it goes."""
    erased: list[PurgeItem] = []
    with ctx.store.read() as tx:
        plan = [(c, tx.purge_candidates(c.id, c.retention_days, now)) for c in tx.collections()]
    total, done = sum(len(candidates) for _c, candidates in plan), 0
    if progress is not None:
        progress(0, total)
    for col, candidates in plan:
        for n, (sid, ext, _reason) in enumerate(candidates):
            with ctx.store.write() as tx:
                if n % 200 == 199:
                    tx.acquire_lock("purge", holder, ctx.now(), PURGE_LOCK_TTL)
                why = tx.purge_reason(sid, col.retention_days, now)
                row = tx.subject(col.id, ext)
                if why is not None and row is not None and row.id == sid:
                    erase(ctx, tx, col, row, actor=actor, reason=why, now=ctx.now())
                    erased.append(PurgeItem(col.name, ext, why))
            done += 1
            if progress is not None:
                progress(done, total)
    return erased
