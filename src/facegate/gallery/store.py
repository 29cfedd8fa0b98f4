"""The storage layer's setup: where the database is, its engine and connections, migrations,
and the transactions it opens.

The gallery talks to two ports (``ports.py``): a template store (this module's :class:`Store`)
and a vector index (``index.py``). ``Store.read()`` / ``Store.write()`` yield a
:class:`~facegate.gallery.transaction.StoreTx` whose methods are the only queries in the
package, so another backend (PostgreSQL + pgvector, ``pg/``) subclasses these two classes
rather than hunting SQL through the code.

SQLite specifics (the embedded default): one file in WAL mode, ``busy_timeout`` 30 s, foreign
keys on, ``secure_delete`` on (erased rows are overwritten, not left in free pages), and write
transactions opened with ``BEGIN IMMEDIATE`` so two writers queue on the lock instead of
deadlocking on a read→write upgrade. Commits never checkpoint the WAL: a background thread
does (``checkpointer.py``). All writes of one operation (e.g. an enrolment: subject,
key, consents, templates, change-feed row, audit event) commit in one transaction, so a process
killed at any point leaves either all of it or none.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, create_engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from . import driver
from .checkpointer import WalCheckpointer
from .crypto import Crypto
from .driver import DriverStatement
from .errors import SchemaError, StoreError, StoreUnavailableError
from .index import GalleryIndex, IndexConfig, SubjectTable
from .ports import VectorIndex
from .snapshot import SnapshotFiles
from .transaction import MAX_SEQ, StoreTx

SCHEMA_HEAD = "0008"  # the newest migration revision shipped with this version (a test pins it to the scripts' head)
BUSY_TIMEOUT_MS = 30_000
_MAX_SEQ_RAW = DriverStatement(MAX_SEQ)
DB_FILE = "gallery.db"
SNAPSHOT_DIR = "index-snapshots"
CHUNK = 100_000  # rows per fetch when a collection's subjects are read for its index

def default_data_dir() -> Path:
    """$FACEGATE_DATA_DIR, else ./.facegate (relative to the working directory)."""
    return Path(os.environ.get("FACEGATE_DATA_DIR") or ".facegate")


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(Path(data_dir) / DB_FILE).resolve()}"


class Store:
    """Connections and transactions. Thread-safe; one per process (``Gallery`` owns one)."""

    def __init__(self, url: str, *, durability: str = "normal", pool_size: int = 8,
                 wal_checkpoint_interval: float = 1.0) -> None:
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        if durability not in ("normal", "full"):
            raise ValueError("durability must be 'normal' or 'full'")
        if self.dialect == "sqlite":
            db = self.url.database
            if not db or db == ":memory:":
                raise StoreError("the SQLite store needs a file (WAL mode and several processes)")
            self.path: Path | None = Path(db)
            if not self.path.exists():  # owner-only, like the master key (WAL/SHM files inherit it)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            engine = create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
                pool_size=pool_size,
                max_overflow=16,
                pool_timeout=BUSY_TIMEOUT_MS / 1000,
            )
            sync = "FULL" if durability == "full" else "NORMAL"
            self._sqlite_sync = sync

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
                cur = dbapi_conn.cursor()
                cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute(f"PRAGMA synchronous = {sync}")
                cur.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's thread copies the WAL back
                cur.execute("PRAGMA foreign_keys = ON")
                cur.execute("PRAGMA secure_delete = ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                mode = conn.get_execution_options().get("facegate_begin", "DEFERRED")
                conn.exec_driver_sql(f"BEGIN {mode}")

            self.engine: Engine = engine
            self.write_engine: Engine = engine.execution_options(facegate_begin="IMMEDIATE")
            self.read_engine: Engine = engine
            self.checkpointer: WalCheckpointer | None = WalCheckpointer(engine, Path(f"{db}-wal"), wal_checkpoint_interval)
        else:
            self.path = None
            self.checkpointer = None
            engine = create_engine(self.url, pool_size=pool_size, max_overflow=16, pool_pre_ping=True)
            self.engine = engine
            self.write_engine = engine
            # Snapshot reads, so the change feed and the rows it points at agree.
            self.read_engine = engine.execution_options(isolation_level="REPEATABLE READ")
        # SQLite: the connection that reads the change feed's head before every search (max_seq).
        self._head_conn: Any = None
        self._head_lock = threading.Lock()
        # The index snapshots in the data directory (SQLite only): erasures scrub them inside
        # their write transaction. Set by make_index, which holds the master key they need.
        self.snapshots: SnapshotFiles | None = None

    # --- transactions -----------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[StoreTx]:
        with translate_errors(), self.read_engine.begin() as conn:
            yield SqliteTx(conn, self)

    @contextmanager
    def write(self) -> Iterator[StoreTx]:
        with translate_errors(), self.write_engine.begin() as conn:
            tx = SqliteTx(conn, self)
            yield tx
        tx.committed()

    @contextmanager
    def durable_write(self) -> Iterator[StoreTx]:
        """``write()`` whose commit is on disk when it returns, whatever ``durability`` the store
        was opened with (a master-key rotation destroys the old key right after its commit).
        SQLite: ``synchronous=FULL`` on this connection for this transaction; PostgreSQL:
        ``synchronous_commit=on`` for it."""
        if self.dialect != "sqlite":
            with self.write() as tx:
                if self.dialect == "postgresql":
                    tx.conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
                yield tx
            return  # write() ran the commit hooks
        with translate_errors(), self.engine.connect() as conn:
            raw = conn.connection.dbapi_connection  # no transaction is open yet: the pragma applies
            assert raw is not None  # a freshly checked-out connection is live
            raw.execute("PRAGMA synchronous = FULL")
            try:
                conn.execution_options(facegate_begin="IMMEDIATE")
                with conn.begin():
                    tx = SqliteTx(conn, self)
                    yield tx
                tx.committed()
            finally:
                with suppress(Exception):  # a broken connection is discarded by the pool
                    raw.execute(f"PRAGMA synchronous = {self._sqlite_sync}")

    def make_index(self, crypto: Crypto, config: IndexConfig | None = None) -> VectorIndex:
        """The in-memory vector index over this store's templates (decrypted with ``crypto``),
        loading from and keeping snapshots in ``<data dir>/index-snapshots`` (SQLite)."""
        if self.path is not None:
            self.snapshots = SnapshotFiles(self.path.parent / SNAPSHOT_DIR, crypto)
        return GalleryIndex(self, crypto, config, self.snapshots, subject_table)

    def max_seq(self) -> int:
        """Newest change-feed sequence number: the cheap check before every search. One
        autocommit statement on a connection kept for it: no pool checkout, no transaction
        around it (0.05 ms p50 instead of 0.18 at 1M), and it sees every commit that returned before it."""
        with translate_errors(), self._head_lock:
            if self._head_conn is None:
                self._head_conn = self.engine.raw_connection()
            rows = driver.run(self.engine.dialect, self._head_conn.driver_connection, _MAX_SEQ_RAW, {})
        return int(rows[0][0] or 0)

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        with self._head_lock:
            if self._head_conn is not None:
                self._head_conn.close()  # back to the pool, which dispose() then closes
                self._head_conn = None
        self.engine.dispose()

    # --- migrations -------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_HEAD with the packaged Alembic migrations.

        Runs in one write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock),
        so processes opening a fresh store at the same time migrate it once.
        """
        current = self.schema_version()
        if current == SCHEMA_HEAD:
            return
        from alembic import command
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        known = {rev.revision for rev in ScriptDirectory.from_config(cfg).walk_revisions()}
        if current is not None and current not in known:
            raise SchemaError(f"the store's schema revision {current!r} is newer than this facegate; upgrade facegate")
        with translate_errors(), self.write_engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def schema_version(self) -> str | None:
        with translate_errors(), self.engine.connect() as conn:
            try:
                value = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            except (OperationalError, DBAPIError):
                value = None
            conn.rollback()
        return value

    # --- SQLite housekeeping ----------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate it (best effort, never blocks long).

        After an erasure this removes the erased rows' old page images from the WAL file;
        ``secure_delete`` already zeroes them in the main file. Returns True when complete.
        """
        if self.dialect != "sqlite":
            return True
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA busy_timeout = 200")
                try:
                    busy, _log, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            return busy == 0
        except (OperationalError, DBAPIError):
            return False


def subject_table(tx: StoreTx, cid: int) -> SubjectTable:
    """Collection ``cid``'s subjects and active grants read through the driver's cursor in
    ``tx``, in chunks: plain tuples and a vectorised date parse instead of a row object and
    three datetimes per consent (5M subjects: seconds instead of minutes)."""
    raw = tx.conn.connection.driver_connection
    assert raw is not None  # a connection inside a transaction is live
    ids: list[np.ndarray] = []
    external: list[str] = []
    labels: dict[int, str] = {}
    cur = raw.execute("SELECT id, external_id, label FROM subjects WHERE collection_id = ?", (cid,))
    while rows := cur.fetchmany(CHUNK):
        ids.append(np.fromiter((r[0] for r in rows), np.int64, count=len(rows)))
        external.extend(r[1] for r in rows)
        labels.update((r[0], r[2]) for r in rows if r[2] is not None)
    grants: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    cur = raw.execute("SELECT k.subject_id, k.purpose, k.expires_at FROM consents k JOIN subjects s ON s.id = k.subject_id "
                      "WHERE s.collection_id = ? AND k.withdrawn_at IS NULL", (cid,))
    while rows := cur.fetchmany(CHUNK):
        g_sids, g_purposes, g_expires = zip(*rows, strict=True)
        sids = np.asarray(g_sids, np.int64)
        when = np.array(g_expires, dtype="datetime64[us]")  # stored as naive UTC text; NULL -> NaT
        expires = np.where(np.isnat(when), np.inf, when.astype(np.int64) / 1e6)
        names = sorted(set(g_purposes))
        code = np.fromiter(map({p: i for i, p in enumerate(names)}.__getitem__, g_purposes), np.int32, count=len(rows))
        for i, p in enumerate(names):
            parts = grants.setdefault(p, ([], []))
            parts[0].append(sids[code == i])
            parts[1].append(expires[code == i])
    return SubjectTable(np.concatenate(ids) if ids else np.empty(0, np.int64), external, labels,
                        {p: (np.concatenate(a), np.concatenate(b)) for p, (a, b) in grants.items()})


class SqliteTx(StoreTx):
    """:class:`StoreTx` whose erasures also blank the erased templates in the data directory's
    index snapshots, inside the erasing transaction before it commits (the write lock
    serialises that with a snapshot being renamed into place)."""

    def __init__(self, conn: Connection, store: Store) -> None:
        super().__init__(conn, store)
        self.snapshots = store.snapshots

    def delete_subject(self, sid: int) -> tuple[int, int]:
        if self.snapshots is not None:
            self.snapshots.erase_subject(self, sid)
        return super().delete_subject(sid)

    def delete_collection(self, cid: int) -> None:
        if self.snapshots is not None:
            self.snapshots.erase_collection(cid)
        super().delete_collection(cid)


@contextmanager
def translate_errors() -> Iterator[None]:
    """SQLite's operational errors as the gallery's: StoreUnavailableError (locked, busy,
    unreachable) or StoreError. (PostgreSQL: ``facegate.gallery.pg.store.pg_errors``.)"""
    try:
        yield
    except OperationalError as exc:
        msg = str(exc.orig) if exc.orig is not None else str(exc)
        if "locked" in msg or "busy" in msg or "could not connect" in msg or "connection" in msg.lower():
            raise StoreUnavailableError(f"the gallery store is unavailable: {msg}") from exc
        raise StoreError(f"store error: {msg}") from exc
