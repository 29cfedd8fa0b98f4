"""SQLite WAL checkpoints run on the store's background thread, never inside a committing call."""

from __future__ import annotations

import os
import time

from facegate.gallery.store import Store, sqlite_url


def _db_state(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _write_pages(store: Store, transactions: int = 30, rows: int = 100) -> None:
    """About 6 MB of new rows (1,500 pages: past SQLite's automatic checkpoint at 1,000)."""
    for t in range(transactions):
        with store.write() as tx:
            tx.conn.exec_driver_sql(
                "INSERT INTO meta (key, value) VALUES " + ", ".join(["(?, ?)"] * rows),
                tuple(v for i in range(rows) for v in (f"k{t * rows + i}", "x" * 2000)),
            )


def test_commits_never_checkpoint_and_the_background_thread_does(tmp_path):
    db = tmp_path / "gallery.db"
    quiet = Store(sqlite_url(tmp_path), wal_checkpoint_interval=3600)  # its thread would wake in an hour
    try:
        quiet.migrate()
        assert quiet.checkpoint()
        before = _db_state(db)
        _write_pages(quiet)
        assert os.path.getsize(f"{db}-wal") > 1000 * 4096
        # Every commit went to the WAL only: no committing call copied pages into the database.
        assert _db_state(db) == before

        busy = Store(sqlite_url(tmp_path), wal_checkpoint_interval=0.05)  # another process, say
        try:
            assert busy.checkpointer is not None
            deadline = time.monotonic() + 10
            while busy.checkpointer.checkpoints == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert busy.checkpointer.checkpoints >= 1  # a complete one: every frame copied
            assert _db_state(db) != before
            with busy.read() as tx:
                assert tx.conn.exec_driver_sql("SELECT count(*) FROM meta WHERE key LIKE 'k%'").scalar() == 3000
        finally:
            busy.close()
    finally:
        quiet.close()
