"""Audit archival on real galleries (SQLite and the embedded PostgreSQL): the archive file, the
database chain after archival, tampering with either side, crash safety at every stage (real
processes killed with os._exit), concurrent appends while archiving, erasure tombstones."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cli_support import invoke
from facegate.gallery import ConsentSpec, Gallery, InvalidArgumentError, LockedError, SubjectNotFoundError
from facegate.gallery.audit import ARCHIVE_LOCK, GENESIS

UTC = dt.UTC
ACCESS = ConsentSpec(("access",), evidence_ref="form-1")
EVENT_KEYS = {
    "seq",
    "ts",
    "actor",
    "action",
    "collection",
    "subjects",
    "purpose",
    "decision",
    "score",
    "details",
    "prev_mac",
    "mac",
}


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for var in ("FACEGATE_MASTER_KEY", "FACEGATE_STORE", "FACEGATE_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request):
    if request.param == "sqlite":
        yield None
        return
    import pg_support

    url = pg_support.fresh_database()
    yield url
    pg_support.drop_database(url)


def open_g(data_dir: Path, url: str | None, **kw) -> Gallery:
    if url is None:
        return Gallery.open(data_dir, **kw)
    return Gallery.open(data_dir, store=url, **kw)


def cheap_events(g: Gallery, n: int, tag: str = "t") -> None:
    for i in range(n):
        g.audit_record(
            actor="test",
            action="test.event",
            collection="c",
            subjects=[f"{tag}{i}"],
            decision="ok",
            score=i / 7,
            details={"i": i, "tag": tag, "ü": "é"},
        )


def db_events(g: Gallery) -> list[int]:
    return [e.seq for e in g.audit_list(limit=10_000)]


def tamper(g: Gallery, *sql: str) -> None:
    """What an attacker with database access does: drop/disable the append-only guard, edit."""
    if g.store.dialect == "sqlite":
        db = sqlite3.connect(g.store.path)
        with db:
            db.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
            db.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
            for s in sql:
                db.execute(s)
        db.close()
    else:
        with g.store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
            for s in sql:
                conn.exec_driver_sql(s)
            conn.exec_driver_sql("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")


def read_lines(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]


# --- the happy path, with real enrolments --------------------------------------------------------


def test_archive_real_events_then_verify_file_and_database(tmp_path, store_url, engine, photos):
    g = open_g(tmp_path / "d", store_url, engine=engine)
    g.create_collection("staff", purposes=["access"])
    g.enroll("staff", "E1", photos["obama_1"], consent=ACCESS)
    g.enroll("staff", "E2", photos["biden_1"], consent=ACCESS)
    g.identify("staff", photos["obama_3"], purpose="access")
    g.withdraw_consent("staff", "E2")
    old_head = g.audit_verify().head_mac
    n_old = g.audit_verify().head_seq
    time.sleep(0.01)
    cutoff = now()
    g.identify("staff", photos["obama_2"], purpose="access")
    cheap_events(g, 3)

    rep = g.audit_archive(cutoff, tmp_path / "audit-1.jsonl", actor="ops")
    assert (rep.count, rep.first_seq, rep.last_seq, rep.prev_mac) == (n_old, 1, n_old, GENESIS)
    assert rep.last_mac == old_head and rep.event_seq == n_old + 5

    # The file: header, one line per event (its MACs, no biometric data), footer.
    lines = read_lines(tmp_path / "audit-1.jsonl")
    header, events, footer = lines[0], lines[1:-1], lines[-1]
    assert header["format"] == "facegate.audit-archive" and header["first_seq"] == 1 and header["prev_mac"] == GENESIS
    assert header["store"] == g.store.dialect and header["deployment_id"]
    assert footer["count"] == n_old and footer["last_seq"] == n_old and footer["last_mac"] == old_head and footer["mac"]
    assert [e["seq"] for e in events] == list(range(1, n_old + 1))
    assert all(set(e) == EVENT_KEYS for e in events)
    assert events[0]["prev_mac"] == GENESIS and events[-1]["mac"] == old_head
    assert {e["action"] for e in events} >= {"collection.create", "enroll", "identify", "consent.withdraw"}
    raw = (tmp_path / "audit-1.jsonl").read_bytes()
    assert max(len(line) for line in raw.splitlines()) < 4096  # counts and codes, never templates or pixels
    assert (tmp_path / "audit-1.jsonl").stat().st_mode & 0o077 == 0
    assert not list(tmp_path.glob(".audit-1.jsonl.*"))

    # The database: archived events are gone, the chain starts at the anchor and verifies.
    assert sorted(db_events(g)) == list(range(n_old + 1, n_old + 6))
    v = g.audit_verify()
    assert v.ok and v.archived_through == n_old and v.anchor_mac == old_head and v.events == 5
    last = g.audit_list(limit=1)[0]
    assert last.action == "audit.archive" and last.actor == "ops"
    assert (
        last.details["through_seq"] == n_old
        and last.details["through_mac"] == old_head
        and last.details["sha256"] == rep.file_sha256
    )

    # Together: the whole chain from genesis to the head is proven; an old head is still found.
    check = g.audit_verify_archive([tmp_path / "audit-1.jsonl"], expect_head=old_head)
    assert check.ok and check.complete and check.events == n_old and check.expect_head_found
    assert check.files[0].committed and check.database.ok
    assert not g.audit_verify(expect_head=old_head).ok  # the database alone no longer holds it
    assert g.audit_verify(expect_head=last.mac).ok

    # Nothing older left: count 0, no file; a second archival continues the chain.
    assert g.audit_archive(cutoff, tmp_path / "none.jsonl").count == 0 and not (tmp_path / "none.jsonl").exists()
    rep2 = g.audit_archive(now(), tmp_path / "audit-2.jsonl")
    assert rep2.first_seq == n_old + 1 and rep2.prev_mac == old_head and rep2.last_seq == n_old + 5
    files = [tmp_path / "audit-2.jsonl", tmp_path / "audit-1.jsonl"]  # any order
    check = g.audit_verify_archive(files)
    assert check.ok and check.complete and check.events == n_old + 5
    only_new = g.audit_verify_archive([tmp_path / "audit-2.jsonl"])
    assert only_new.ok and not only_new.complete and only_new.missing == ((1, n_old),)
    assert g.audit_verify_archive(files, with_database=False).complete

    # Bad input.
    with pytest.raises(InvalidArgumentError):
        g.audit_archive(now() + dt.timedelta(days=1), tmp_path / "x.jsonl")
    with pytest.raises(InvalidArgumentError):
        g.audit_archive(dt.datetime.now(), tmp_path / "x.jsonl")  # naive
    with pytest.raises(InvalidArgumentError):  # a committed archive is never overwritten
        g.audit_archive(now(), tmp_path / "audit-1.jsonl")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(InvalidArgumentError):
        g.audit_archive(now(), tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "hello\n"
    with pytest.raises(InvalidArgumentError):
        g.audit_record(actor="x", action="audit.archive")  # reserved
    assert g.audit_verify().ok
    g.close()


# --- tampering ------------------------------------------------------------------------------------


def _edit(p: Path, fn) -> None:
    lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
    p.write_text("".join(fn(lines)), encoding="utf-8")


def _set(i: int, key: str, value):
    def fn(lines):
        rec = json.loads(lines[i])
        rec[key] = value
        lines[i] = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
        return lines

    return fn


TAMPERING = {
    "edit_event": (_set(3, "decision", "no_match"), "modified"),
    "edit_subjects": (_set(2, "subjects", []), "modified"),
    "drop_middle_line": (lambda ls: ls[:4] + ls[5:], "missing"),
    "reorder_lines": (lambda ls: ls[:3] + [ls[4], ls[3]] + ls[5:], "out of order"),
    "drop_last_event": (lambda ls: ls[:-2] + ls[-1:], "removed from the end"),
    "drop_footer": (lambda ls: ls[:-1], "truncated"),
    "drop_first_event": (lambda ls: ls[:1] + ls[2:], "missing"),
    "edit_header": (_set(0, "before", "2999-01-01T00:00:00.000000Z"), "header or footer"),
    "edit_footer_count": (_set(-1, "count", 3), "header or footer"),
    "append_after_footer": (lambda ls: ls + [ls[2]], "after the footer"),
    "not_json": (lambda ls: ls[:2] + ["{oops\n"] + ls[3:], "not JSON"),
}


def test_tampered_archive_files_are_detected(tmp_path, engine):
    g = Gallery.open(tmp_path / "d", engine=engine)
    cheap_events(g, 12)
    cutoff = now()
    cheap_events(g, 2, "new")
    g.audit_archive(cutoff, tmp_path / "a.jsonl")
    good = (tmp_path / "a.jsonl").read_bytes()
    assert g.audit_verify_archive([tmp_path / "a.jsonl"]).ok
    for name, (fn, problem) in TAMPERING.items():
        p = tmp_path / f"{name}.jsonl"
        p.write_bytes(good)
        _edit(p, fn)
        for with_db in (True, False):
            check = g.audit_verify_archive([p], with_database=with_db)
            assert not check.ok and not check.complete, name
            assert problem in check.problem, (name, check.problem)
    # A file whose lines are all intact but that is not the file the archival wrote.
    other = Gallery.open(tmp_path / "other", engine=engine)
    cheap_events(other, 3)
    other.audit_archive(now(), tmp_path / "other.jsonl")
    check = g.audit_verify_archive([tmp_path / "other.jsonl"])
    assert not check.ok and "another audit key" in check.problem
    other.close()
    # The CLI: exit 1 on a tampered archive, 0 on the good one.
    env = {"FACEGATE_DATA_DIR": str(tmp_path / "d"), "COLUMNS": "200"}
    r = invoke("audit", "verify-archive", tmp_path / "reorder_lines.jsonl", env=env)
    assert r.returncode == 1 and "FAILED" in r.stdout
    r = invoke("audit", "verify-archive", tmp_path / "a.jsonl", "--json", "--require-complete", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["complete"] is True
    g.close()


def test_boundary_tampering_in_the_database_is_detected(tmp_path, store_url):
    g = open_g(tmp_path / "d", store_url)
    cheap_events(g, 8)
    cutoff = now()
    cheap_events(g, 4, "new")
    rep = g.audit_archive(cutoff, tmp_path / "a.jsonl")
    k = rep.last_seq
    assert g.audit_verify().ok

    # The application cannot delete events the archive does not cover (triggers).
    from sqlalchemy import delete

    from facegate.gallery.schema import AuditRow

    with pytest.raises(Exception, match="append-only"), g.store.write() as tx:
        tx.execute(delete(AuditRow).where(AuditRow.seq == k + 1))
    assert g.audit_verify().ok

    # An attacker removes the oldest stored event (right after the archive boundary) …
    first = g.audit_list(limit=100)[-1]
    assert first.seq == k + 1
    tamper(g, f"DELETE FROM audit_events WHERE seq = {k + 1}")
    rep_db = g.audit_verify()
    assert not rep_db.ok and rep_db.first_bad_seq == k + 1 and "missing" in rep_db.problem
    check = g.audit_verify_archive([tmp_path / "a.jsonl"])
    assert not check.ok and "database" in check.problem
    # … and moves the anchor forward to cover the gap: the audit.archive event contradicts it.
    tamper(g, f"UPDATE audit_archives SET last_seq = {k + 1}, last_mac = '{first.mac}'")
    rep_db = g.audit_verify()
    assert not rep_db.ok and "anchor" in rep_db.problem
    assert not g.audit_verify_archive([tmp_path / "a.jsonl"]).ok
    g.close()


def test_deleting_the_anchor_row_or_the_archive_event_is_detected(tmp_path):
    g = Gallery.open(tmp_path / "d")
    cheap_events(g, 5)
    rep = g.audit_archive(now(), tmp_path / "a.jsonl")
    cheap_events(g, 2, "new")
    tamper(g, "DELETE FROM audit_archives")
    v = g.audit_verify()
    assert not v.ok and v.first_bad_seq == 1 and "missing" in v.problem
    g.close()

    g = Gallery.open(tmp_path / "e")
    cheap_events(g, 5)
    rep = g.audit_archive(now(), tmp_path / "b.jsonl")
    tamper(g, f"DELETE FROM audit_events WHERE seq = {rep.event_seq}")  # the only stored event: the head is now wrong
    assert not g.audit_verify().ok
    g.close()


# --- crash safety: a real process killed at each stage ---------------------------------------------

CRASH_SCRIPT = textwrap.dedent("""
    import datetime as dt, os, sys
    from facegate.gallery import Gallery
    from facegate.gallery import audit_archive
    data, out, stage, cutoff = sys.argv[1], sys.argv[2], sys.argv[3], dt.datetime.fromisoformat(sys.argv[4])
    seen = {"n": 0}
    def hook(name):
        if name == stage:
            seen["n"] += 1
            if stage != "batch" or seen["n"] == 3:
                os._exit(9)
    audit_archive._stage_hook = hook
    g = Gallery.open(data)
    g.audit_archive(cutoff, out, batch=4)
    print("finished")
""")


@pytest.mark.parametrize("stage", ["batch", "written", "renamed", "deleted", "committed"])
def test_killed_at_any_stage_then_rerun(tmp_path, stage):
    data, out = tmp_path / "d", tmp_path / "arch" / "a.jsonl"
    out.parent.mkdir()
    g = Gallery.open(data)
    cheap_events(g, 30)
    head = g.audit_verify()
    cutoff = now()
    cheap_events(g, 2, "new")
    g.close()
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    r = subprocess.run(
        [sys.executable, script, data, out, stage, cutoff.isoformat()], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 9, r.stdout + r.stderr

    g = Gallery.open(data)
    assert g.audit_verify().ok
    committed = stage == "committed"
    if committed:  # the rows are gone and a complete verified file exists
        assert g.audit_verify().archived_through == head.head_seq
        check = g.audit_verify_archive([out])
        assert check.ok and check.complete
    else:  # every event is still in the database; the file is partial, absent or uncommitted
        assert g.audit_verify().archived_through == 0 and len(db_events(g)) == head.head_seq + 2
        if stage in ("batch", "written"):
            assert not out.exists() and list(out.parent.glob(".a.jsonl.*.partial"))
        else:
            check = g.audit_verify_archive([out])
            assert not check.ok and "not committed" in check.problem
    # The rerun (the dead process's lease is taken over at once) finishes the job safely.
    rep = g.audit_archive(cutoff, out)
    if committed:
        assert rep.count == 0
    else:
        assert rep.count == head.head_seq and rep.last_mac == head.head_mac
    assert not list(out.parent.glob(".a.jsonl.*"))
    check = g.audit_verify_archive([out])
    assert check.ok and check.complete and check.events == head.head_seq
    assert g.audit_verify().ok
    g.close()


def test_a_second_archival_waits_for_the_lease(tmp_path):
    g = Gallery.open(tmp_path / "d")
    cheap_events(g, 3)
    with g.store.write() as tx:  # a live holder on another host
        assert tx.acquire_lock(ARCHIVE_LOCK, "elsewhere:1:abc", now(), dt.timedelta(minutes=5))
    with pytest.raises(LockedError):
        g.audit_archive(now(), tmp_path / "a.jsonl")
    with g.store.write() as tx:
        tx.release_lock(ARCHIVE_LOCK, "elsewhere:1:abc")
    assert g.audit_archive(now(), tmp_path / "a.jsonl").count == 3
    g.close()


# --- concurrency ----------------------------------------------------------------------------------


def test_appends_while_archiving_keep_the_chain(tmp_path, store_url):
    g = open_g(tmp_path / "d", store_url)
    cheap_events(g, 40)
    stop, errors, written, wrote = threading.Event(), [], [0], threading.Semaphore(0)

    def writer():
        try:
            while not stop.is_set():
                g.audit_record(actor="writer", action="test.concurrent", details={"n": written[0]})
                written[0] += 1
                wrote.release()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    files = []
    try:
        for i in range(4):
            # archive while the writer appends: wait for a few of its events, not for a time
            assert all(wrote.acquire(timeout=60) for _ in range(5)), errors
            rep = g.audit_archive(now(), tmp_path / f"a{i}.jsonl", batch=7)
            if rep.count:
                files.append(tmp_path / f"a{i}.jsonl")
    finally:
        stop.set()
        t.join(30)
    assert not errors and written[0] > 10 and len(files) >= 3
    v = g.audit_verify()
    assert v.ok
    check = g.audit_verify_archive(files)
    assert check.ok and check.complete, check.problem
    assert check.events + v.events == v.head_seq == 40 + written[0] + len(files)
    g.close()


# --- erasure tombstones and migrations --------------------------------------------------------------


def test_archived_erasure_tombstones_do_not_affect_erasure_or_reenrolment(tmp_path, engine, photos):
    g = Gallery.open(tmp_path / "d", engine=engine)
    g.create_collection("staff", purposes=["access"])
    g.enroll("staff", "E1", photos["obama_1"], consent=ACCESS)
    g.enroll("staff", "E2", photos["biden_1"], consent=ACCESS)
    g.delete_subject("staff", "E1", reason="gdpr-art17")
    assert g.audit_list(action="subject.erase")
    g.audit_archive(now(), tmp_path / "a.jsonl")
    assert not g.audit_list(action="subject.erase")  # the tombstone now lives in the archive …
    assert any(json.loads(x).get("action") == "subject.erase" for x in (tmp_path / "a.jsonl").read_text().splitlines())
    with pytest.raises(SubjectNotFoundError):  # … and the erasure stands
        g.get_subject("staff", "E1")
    assert not [c for c in g.identify("staff", photos["obama_3"], purpose="access").candidates if c.subject == "E1"]
    g.enroll("staff", "E1", photos["obama_2"], consent=ACCESS)  # the same id may be enrolled again
    assert g.identify("staff", photos["obama_3"], purpose="access").candidates[0].subject == "E1"
    g.delete_subject("staff", "E1")
    g.purge()
    assert g.audit_verify().ok and g.audit_verify_archive([tmp_path / "a.jsonl"]).complete
    g.close()


def test_existing_store_upgrades_to_the_archive_schema(tmp_path):
    from alembic import command
    from alembic.config import Config

    g = Gallery.open(tmp_path / "d")
    cheap_events(g, 4)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(sys.modules["facegate.gallery.store"].__file__).with_name("migrations")))
    with g.store.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    g.close()
    db = sqlite3.connect(tmp_path / "d" / "gallery.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"), db:  # the 0001 trigger is back
        db.execute("DELETE FROM audit_events WHERE seq = 1")
    db.close()
    g = Gallery.open(tmp_path / "d")  # upgrades to 0004 and on to the head
    from facegate.gallery.store import SCHEMA_HEAD

    assert g.store.schema_version() == SCHEMA_HEAD >= "0004" and g.audit_verify().ok
    assert g.audit_archive(now(), tmp_path / "a.jsonl").count == 4
    assert g.audit_verify().ok and g.audit_verify_archive([tmp_path / "a.jsonl"]).complete
    g.close()
