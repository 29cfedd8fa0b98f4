"""WAL checkpoints for the SQLite store, off the request path.

SQLite's automatic checkpoint runs inside whichever commit pushes the WAL past 1,000 pages: that
one request then copies about 4 MB of pages into random places of the database file and waits
for them (10M templates: identify p99 22-28 ms with it, 8-9 ms with this thread). The store's
connections turn it off (``PRAGMA wal_autocheckpoint = 0``) and this thread checkpoints instead,
once per ``interval`` while the WAL file has changed since its last look. A ``PASSIVE``
checkpoint never waits for readers or writers: what it cannot copy now it copies next time.
Any process's checkpoint serves every process; SQLite checkpoints again when the last
connection closes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import suppress
from pathlib import Path

from sqlalchemy.engine import Engine

log = logging.getLogger("facegate.gallery.checkpointer")


class WalCheckpointer:
    """A daemon thread checkpointing ``engine``'s database whose WAL file is ``wal``."""

    def __init__(self, engine: Engine, wal: Path, interval: float) -> None:
        self.engine = engine
        self.wal = wal
        self.interval = interval
        self.checkpoints = 0  # completed checkpoints (every frame copied)
        self._stop = threading.Event()
        self._seen: tuple[int, int] | None = None  # the WAL's (size, mtime) its last complete checkpoint covered
        self._thread = threading.Thread(target=self._run, name="facegate-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Lowest CPU priority, so copying pages yields the cores to the searches. Linux only: a
        # thread id names just that thread there; elsewhere it could name another process.
        if sys.platform.startswith("linux"):
            with suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not self._stop.wait(self.interval):
            try:
                st = os.stat(self.wal)
            except FileNotFoundError:
                continue  # no WAL yet (or the last connection closed and removed it)
            state = (st.st_size, st.st_mtime_ns)  # before the checkpoint: a commit during it is seen next round
            if state == self._seen:
                continue
            try:
                if self.checkpoint():
                    self._seen = state
            except Exception:  # noqa: BLE001 - best effort: the next round (or the last close) catches up
                log.debug("WAL checkpoint failed", exc_info=True)

    def checkpoint(self) -> bool:
        """One ``PASSIVE`` checkpoint; True when it copied every frame."""
        conn = self.engine.raw_connection()
        try:
            raw = conn.driver_connection
            assert raw is not None  # a pooled connection checked out is live
            busy, frames, copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()
        done = busy == 0 and copied == frames
        if done:
            self.checkpoints += 1
        return bool(done)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
