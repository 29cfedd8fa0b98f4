"""Audit archival: the oldest events move to a MAC'd JSON Lines file and leave the database in
one transaction that records the chain's new anchor (``archive``); ``verify_file`` and
``verify_archive`` check files, and files and database together. The chain itself is
``audit.py``."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .audit import (
    ARCHIVE_ACTION,
    ARCHIVE_FORMAT,
    ARCHIVE_LOCK,
    ARCHIVE_LOCK_TTL,
    ARCHIVE_VERSION,
    GENESIS,
    TS_FORMAT,
    AuditLog,
    canonical,
    json_line,
    ts_text,
)
from .errors import ConflictError, InvalidArgumentError, LockedError, StoreError
from .fsync import fsync_dir
from .ports import TemplateStore
from .transaction import StoreTx
from .types import AuditArchiveCheck, AuditArchiveFile, AuditArchiveReport, AuditReport

# Tests set this to kill the process at a named stage of ``archive`` ("batch", "written",
# "renamed", "deleted", "committed") and prove every stage crash-safe.
_stage_hook: Callable[[str], None] | None = None


def _stage(name: str) -> None:
    if _stage_hook is not None:
        _stage_hook(name)


def _parse_ts(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, TS_FORMAT).replace(tzinfo=dt.UTC)


def event_record(row: Any) -> dict[str, Any]:
    """One archive line: the event exactly as MAC'd, with its ``prev_mac`` and ``mac``."""
    return {"seq": int(row.seq), "ts": ts_text(row.ts), "actor": row.actor, "action": row.action, "collection": row.collection,
            "subjects": list(row.subjects or []), "purpose": row.purpose, "decision": row.decision, "score": row.score,
            "details": dict(row.details or {}), "prev_mac": row.prev_mac, "mac": row.mac}


def _record_body(rec: dict[str, Any]) -> bytes:
    if not isinstance(rec.get("subjects"), list) or not isinstance(rec.get("details"), dict):
        raise TypeError("subjects/details")
    score = rec["score"]
    if score is not None and not isinstance(score, (int, float)):
        raise TypeError("score")
    return canonical(int(rec["seq"]), _parse_ts(rec["ts"]), rec["actor"], rec["action"], rec["collection"], rec["subjects"],
                     rec["purpose"], rec["decision"], score, rec["details"])


def read_archive_ends(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(header, footer) of an archive file without reading it all (None where unparseable)."""
    def parse(raw: bytes) -> dict[str, Any] | None:
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        return obj if isinstance(obj, dict) else None

    with open(path, "rb") as f:
        header = parse(f.readline())
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        tail = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return header, parse(tail)


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_dead(holder: str) -> bool:
    """A lease held by a process of this host that no longer exists (killed mid-archival)."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _acquire(store: TemplateStore, holder: str) -> None:
    from sqlalchemy import select

    from .schema import LockRow

    with store.write() as tx:
        if tx.acquire_lock(ARCHIVE_LOCK, holder, dt.datetime.now(dt.UTC), ARCHIVE_LOCK_TTL):
            return
        row = tx.execute(select(LockRow.holder).where(LockRow.name == ARCHIVE_LOCK)).first()
        if row is not None and _holder_dead(row[0]):
            tx.release_lock(ARCHIVE_LOCK, row[0])
            if tx.acquire_lock(ARCHIVE_LOCK, holder, dt.datetime.now(dt.UTC), ARCHIVE_LOCK_TTL):
                return
    raise LockedError("another audit archival is running; try again later")


def _check_target(path: Path, anchor_seq: int, deployment_id: str | None) -> None:
    """Refuse to replace anything but an archive file left by an interrupted archival of this
    deployment (its events still in the database: first seq above the anchor)."""
    if not path.exists():
        return
    if not path.is_file():
        raise InvalidArgumentError(f"{path} exists and is not a file")
    header, _ = read_archive_ends(path)
    if header is None or header.get("format") != ARCHIVE_FORMAT:
        raise InvalidArgumentError(f"{path} exists and is not a facegate audit archive; choose another file name")
    if deployment_id is not None and header.get("deployment_id") != deployment_id:
        raise InvalidArgumentError(f"{path} is another deployment's audit archive; choose another file name")
    first = header.get("first_seq")
    if not isinstance(first, int) or first <= anchor_seq:
        raise InvalidArgumentError(f"{path} holds a committed archive (events from #{first}); choose another file name")


def archive(log: AuditLog, store: TemplateStore, *, before: dt.datetime, path: str | os.PathLike[str], actor: str,
            deployment_id: str | None, batch: int = 5000,
            progress: Callable[[int, int | None], None] | None = None) -> AuditArchiveReport:
    """Move every event older than ``before`` (the longest prefix of the chain whose events all
    are) to ``path`` and delete them from the database. Crash-safe at every point:

    1. lease ``audit-archive`` (one archival at a time; a lease left by a killed process of
       this host is taken over);
    2. stream the events to a temporary file beside ``path``, checking each row's chain and
       MAC first (a tampered range is never archived), then fsync;
    3. re-read the file from disk and verify it against the database rows (same range, count,
       first ``prev_mac`` = current anchor, last MAC = the database row's);
    4. atomic rename to ``path`` + directory fsync: from here a complete, verified file exists;
    5. one durable transaction: lock the audit head (serialises with appenders and archivals),
       re-check the anchor and the rows, append the ``audit.archive`` event, record the new
       anchor in ``audit_archives``, delete the range (the triggers refuse anything above the
       anchor), commit.

    Killed before 5 commits: every event is still in the database; the file (partial temp or
    complete uncommitted file) is replaced by the rerun. Killed after: the rows are gone and
    the complete verified file is on disk.

    ``progress(done, total)``: the events written to the file so far, after each batch."""
    t0 = time.perf_counter()
    if before.tzinfo is None:
        raise InvalidArgumentError("before must be timezone-aware (UTC)")
    now = dt.datetime.now(dt.UTC)
    if before > now:
        raise InvalidArgumentError("before must not be in the future")
    if batch < 1:
        raise InvalidArgumentError("batch must be >= 1")
    path = Path(path).absolute()
    if not path.parent.is_dir():
        raise InvalidArgumentError(f"directory {path.parent} does not exist")
    holder = _holder()
    _acquire(store, holder)
    tmp: Path | None = None
    try:
        with store.read() as tx:
            anchor = tx.audit_anchor()
            a_seq, a_mac = (int(anchor.last_seq), str(anchor.last_mac)) if anchor is not None else (0, GENESIS)
            last = tx.audit_archive_cut(a_seq, before)
        if last <= a_seq:
            return AuditArchiveReport(None, 0, None, None, a_mac, a_mac, None, None, before, None, 0, None,
                                      round(time.perf_counter() - t0, 3))
        _check_target(path, a_seq, deployment_id)
        for stale in path.parent.glob(f".{path.name}.*.partial"):  # left by killed runs (we hold the lease)
            stale.unlink(missing_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
        header = {"format": ARCHIVE_FORMAT, "version": ARCHIVE_VERSION, "deployment_id": deployment_id,
                  "audit_key_id": log.key_id(), "store": store.dialect, "first_seq": a_seq + 1, "prev_mac": a_mac,
                  "before": ts_text(before), "created_at": ts_text(now), "created_by": actor}
        header_line = json_line(header)
        digest = hashlib.sha256()
        first_ts: dt.datetime | None = None
        last_ts: dt.datetime | None = None
        prev, expect, count = a_mac, a_seq + 1, 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if progress is not None:
            progress(0, last - a_seq)
        with os.fdopen(fd, "wb") as f:
            f.write(header_line)
            cursor, batches = a_seq, 0
            while cursor < last:
                with store.read() as tx:
                    rows = [r for r in _rows_upto(tx, cursor, last, batch)]
                if not rows:
                    break
                for row in rows:
                    if row.seq != expect or row.prev_mac != prev:
                        raise StoreError(f"refusing to archive: the chain breaks at event {expect} (run 'facegate audit verify')")
                    body = canonical(row.seq, row.ts, row.actor, row.action, row.collection, list(row.subjects or []),
                                     row.purpose, row.decision, row.score, row.details or {})
                    if not hmac.compare_digest(log.mac(prev, body), row.mac):
                        raise StoreError(f"refusing to archive: event {row.seq} was modified (run 'facegate audit verify')")
                    data = json_line(event_record(row))
                    f.write(data)
                    digest.update(data)
                    first_ts = first_ts or row.ts
                    prev, expect, count, last_ts = row.mac, row.seq + 1, count + 1, row.ts
                cursor = rows[-1].seq
                batches += 1
                if progress is not None:
                    progress(count, last - a_seq)
                _stage("batch")
                if batches % 20 == 0:  # keep the lease while a large range is written
                    with store.write() as tx:
                        tx.acquire_lock(ARCHIVE_LOCK, holder, dt.datetime.now(dt.UTC), ARCHIVE_LOCK_TTL)
            if expect != last + 1:
                raise StoreError(f"refusing to archive: event {expect} is missing (run 'facegate audit verify')")
            assert first_ts is not None and last_ts is not None  # last > a_seq: at least one event was written
            footer = {"format": ARCHIVE_FORMAT + "/end", "count": count, "last_seq": last, "last_mac": prev,
                      "first_ts": ts_text(first_ts), "last_ts": ts_text(last_ts), "events_sha256": digest.hexdigest()}
            footer["mac"] = log.file_mac(header_line, footer)
            f.write(json_line(footer))
            f.flush()
            os.fsync(f.fileno())
        _stage("written")
        check = verify_file(log, tmp, deployment_id=deployment_id)
        if not (check.ok and check.first_seq == a_seq + 1 and check.prev_mac == a_mac and check.last_seq == last
                and check.last_mac == prev and check.count == count):
            raise StoreError(f"the written archive did not verify ({check.problem or 'range mismatch'}); nothing was deleted")
        _check_target(path, a_seq, deployment_id)
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
        _stage("renamed")
        with store.durable_write() as tx:
            tx.audit_head(lock=True)
            now_anchor = tx.audit_anchor()
            if (now_anchor.last_seq if now_anchor is not None else 0) != a_seq:
                raise ConflictError("the audit log was archived by another process meanwhile; nothing was deleted "
                                    f"({path} is not committed: delete it)")
            n, first_row, last_row = tx.audit_range_summary(a_seq + 1, last)
            if n != count or first_row is None or last_row is None or first_row.prev_mac != a_mac or last_row.mac != prev:
                raise StoreError("the database rows changed under the archival; nothing was deleted")
            at = dt.datetime.now(dt.UTC)
            details = {"first_seq": a_seq + 1, "through_seq": last, "through_mac": prev, "count": count,
                       "first_ts": ts_text(first_ts), "last_ts": ts_text(last_ts), "before": ts_text(before),
                       "file": path.name, "sha256": check.sha256}
            ev = log.append(tx, actor=actor, action=ARCHIVE_ACTION, now=at, decision="archived", details=details)
            tx.insert_audit_archive(first_seq=a_seq + 1, last_seq=last, count=count, prev_mac=a_mac, last_mac=prev,
                                    first_ts=first_ts, last_ts=last_ts, cutoff=before, archived_at=at, actor=actor,
                                    file_name=path.name[:512], file_sha256=check.sha256, event_seq=ev)
            deleted = tx.delete_audit_through(a_seq + 1, last)
            if deleted != count:
                raise StoreError(f"deleted {deleted} rows, expected {count}; rolled back")
            _stage("deleted")
        _stage("committed")
        size = path.stat().st_size
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        try:
            with store.write() as tx:
                tx.release_lock(ARCHIVE_LOCK, holder)
        except Exception:  # noqa: BLE001 - the lease expires by itself
            pass
    store.checkpoint()
    return AuditArchiveReport(str(path), count, a_seq + 1, last, a_mac, prev, first_ts, last_ts, before, check.sha256, size, ev,
                              round(time.perf_counter() - t0, 3))


def _rows_upto(tx: StoreTx, after: int, last: int, batch: int) -> Iterator[Any]:
    for i, row in enumerate(tx.audit_rows(after_seq=after, batch=batch)):
        if row.seq > last or i >= batch:
            return
        yield row


def verify_file(log: AuditLog, path: str | Path, *, deployment_id: str | None = None,
                expect_mac: str | None = None, found: list[bool] | None = None) -> AuditArchiveFile:
    """Check one archive file on its own: header, every event's MAC and chain from the
    header's ``prev_mac``, consecutive seqs, footer (count, last seq/MAC, events digest, MAC
    over header + footer), nothing after the footer. Reads it once, streaming."""
    path = Path(path)
    sha = hashlib.sha256()
    events = hashlib.sha256()
    info: dict[str, Any] = {"path": str(path), "count": 0}

    def bad(problem: str, seq: int | None = None) -> AuditArchiveFile:
        return AuditArchiveFile(ok=False, first_bad_seq=seq, problem=problem, **info)

    try:
        f = open(path, "rb")  # noqa: SIM115 - only the open is guarded here; `with f` below closes it
    except OSError as exc:
        return bad(f"cannot read the file: {exc.strerror or exc}")
    with f:
        raw = f.readline()
        sha.update(raw)
        try:
            header = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            header = None
        if not isinstance(header, dict) or header.get("format") != ARCHIVE_FORMAT:
            return bad("not a facegate audit archive (no header)")
        if header.get("version") != ARCHIVE_VERSION:
            return bad(f"unsupported archive version {header.get('version')!r}")
        if header.get("audit_key_id") != log.key_id():
            return bad("written with another audit key (another deployment's archive?)")
        if deployment_id is not None and header.get("deployment_id") != deployment_id:
            return bad("another deployment's archive")
        header_line = raw
        try:
            prev, expect = str(header["prev_mac"]), int(header["first_seq"])
        except (KeyError, TypeError, ValueError):
            return bad("malformed header")
        info.update(first_seq=expect, prev_mac=prev)
        footer = None
        first_ts = last_ts = None
        n = 0
        for raw in f:
            sha.update(raw)
            if footer is not None:
                return bad("data after the footer", expect)
            try:
                rec = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return bad(f"line {n + 2} is not JSON", expect)
            if not isinstance(rec, dict):
                return bad(f"line {n + 2} is not an event", expect)
            if rec.get("format") == ARCHIVE_FORMAT + "/end":
                footer = rec
                continue
            try:
                seq = int(rec["seq"])
                body = _record_body(rec)
                ts = _parse_ts(rec["ts"])
            except (KeyError, TypeError, ValueError):
                return bad(f"line {n + 2} is not a valid event", expect)
            if seq != expect:
                return bad(f"event {expect} is missing or out of order (found {seq})", expect)
            if rec.get("prev_mac") != prev:
                return bad(f"event {seq} does not chain to event {seq - 1}", seq)
            if not hmac.compare_digest(log.mac(prev, body), str(rec.get("mac"))):
                return bad(f"event {seq} was modified", seq)
            if expect_mac is not None and found is not None and hmac.compare_digest(expect_mac, rec["mac"]):
                found[0] = True
            events.update(raw)
            first_ts = first_ts or ts
            last_ts = ts
            prev, expect, n = rec["mac"], seq + 1, n + 1
            info.update(count=n, last_seq=seq, last_mac=prev, first_ts=first_ts, last_ts=last_ts)
    if footer is None:
        return bad(f"no footer: the file is truncated (after event {expect - 1})", expect)
    claimed = {k: v for k, v in footer.items() if k != "mac"}
    if not hmac.compare_digest(log.file_mac(header_line, claimed), str(footer.get("mac"))):
        return bad("the header or footer was modified")
    if footer.get("count") != n or footer.get("last_seq") != expect - 1 or footer.get("last_mac") != prev:
        return bad(f"events were removed from the end (the footer says {footer.get('count')} up to #{footer.get('last_seq')}, "
                   f"the file has {n} up to #{expect - 1})", expect)
    if footer.get("events_sha256") != events.hexdigest():
        return bad("the event lines differ from what was written")
    if n == 0:
        return bad("the archive holds no events")
    info.update(last_seq=expect - 1, last_mac=prev)
    return AuditArchiveFile(ok=True, sha256=sha.hexdigest(), **info)


def verify_archive(log: AuditLog, store: TemplateStore | None, paths: Iterable[str | Path], *, deployment_id: str | None = None,
                   expect_head: str | None = None) -> AuditArchiveCheck:
    """Check archive files, and with ``store`` the files and the database together: each file
    must be the archival the database recorded (range, last MAC, SHA-256), files that follow
    each other must join (next ``prev_mac`` = previous last MAC), and the last archived MAC
    must be the database chain's anchor. ``complete`` when genesis → head is covered."""
    found = [False]
    checked = [verify_file(log, p, deployment_id=deployment_id, expect_mac=expect_head, found=found) for p in paths]
    if not checked:
        raise InvalidArgumentError("give at least one archive file")
    problem = next((f"{c.path}: {c.problem}" for c in checked if not c.ok), None)
    files = sorted(checked, key=lambda c: (c.first_seq or 0))
    db_report: AuditReport | None = None
    records: dict[int, Any] = {}
    anchor_seq, anchor_mac = 0, GENESIS
    if store is not None:
        db_report = log.verify(store)
        with store.read() as tx:
            records = {int(r.first_seq): r for r in tx.audit_archives()}
        anchor_seq = db_report.archived_through
        anchor_mac = db_report.anchor_mac or GENESIS
        if problem is None and not db_report.ok:
            problem = f"database: {db_report.problem}"
        out = []
        for c in files:
            if c.ok:
                rec = records.get(c.first_seq or -1)
                committed = rec is not None
                if rec is None and (c.first_seq or 0) > anchor_seq:
                    c = _replace(c, ok=False, committed=False,
                                 problem="not committed: its events are still in the database "
                                         "(an interrupted archival; rerun it)")
                elif rec is None or rec.last_seq != c.last_seq or rec.last_mac != c.last_mac or rec.prev_mac != c.prev_mac:
                    c = _replace(c, ok=False, committed=committed, problem="does not match any archival recorded in the database")
                elif rec.file_sha256 != c.sha256:
                    c = _replace(c, ok=False, committed=True, problem="its bytes differ from the file the archival wrote")
                else:
                    c = _replace(c, committed=True)
                if problem is None and not c.ok:
                    problem = f"{c.path}: {c.problem}"
            out.append(c)
        files = out
    # Joins between the files given, and what is not covered.
    missing: list[tuple[int, int]] = []
    covered_to, covered_mac = 0, GENESIS
    for c in files:
        if c.first_seq is None or c.last_seq is None:
            continue
        if c.first_seq <= covered_to:
            problem = problem or f"{c.path}: overlaps another archive (events from #{c.first_seq})"
            continue
        if c.first_seq == covered_to + 1:
            if c.ok and c.prev_mac != covered_mac:
                problem = problem or f"{c.path}: does not chain to the previous archive (event {c.first_seq})"
        else:
            missing.append((covered_to + 1, c.first_seq - 1))
        covered_to, covered_mac = c.last_seq, c.last_mac or GENESIS
    if store is not None:
        if covered_to < anchor_seq:
            missing.append((covered_to + 1, anchor_seq))
        elif covered_to == anchor_seq and files and covered_mac != anchor_mac:
            problem = problem or "the last archived MAC is not the database chain's anchor"
    complete = problem is None and not missing and (store is not None or bool(files))
    expect_found = None
    if expect_head is not None:
        expect_found = found[0]
        if not expect_found and db_report is not None:
            expect_found = log.verify(store, expect_head=expect_head).ok if store is not None else False
        if not expect_found:
            problem = problem or "the expected head MAC is in neither the archives nor the database chain"
    events = sum(c.count for c in files if c.ok)
    return AuditArchiveCheck(problem is None, complete, tuple(files), events, db_report, tuple(missing), problem, expect_found)


def _replace(c: AuditArchiveFile, **kw: Any) -> AuditArchiveFile:
    import dataclasses

    return dataclasses.replace(c, **kw)
