"""PostgreSQL store: the gallery's relational data plus each collection's rotated search copy.

Every process searches its in-memory index (``gallery/index.py``, the SQLite design), fed by
the ``changes`` feed; the search copy is what that index cold-loads from (``memory.py``: one
binary COPY, no per-template decryption). Nothing is searched inside the database.

(Long by design: ``PgStore`` opens every transaction under the writers' advisory lock and
``PgStoreTx`` keeps the search copy in step inside it, two halves of one contract that read
best side by side.)

Same tables and Alembic migrations as the SQLite store (``gallery/migrations``), plus the
PostgreSQL-only objects of ``schema.py`` (the search copies ``fg_vectors_<collection id>``
with ``ON DELETE CASCADE`` to templates and subjects, their rotation versions, a consent
index), created and upgraded by :meth:`PgStore.migrate`. No extension is needed.

Writers are serialised with a transaction-level advisory lock, as SQLite's ``BEGIN IMMEDIATE``
serialises them, so every gallery operation keeps its embedded-store semantics (check then
insert, hash-chained audit appends) across any number of processes and hosts.

Connection loss, a stopped server or a server in recovery raise ``StoreUnavailableError``
(HTTP 503); a pooled connection the server closed is replaced at checkout (``_closed_by_server``),
so the next call after the server is back just works.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from select import POLLIN, poll
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, bindparam, event, exists, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import create_engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from ..crypto import Crypto, SubjectCipher
from ..driver import DriverStatement
from ..errors import StoreError, StoreUnavailableError
from ..index import IndexConfig
from ..ports import IdentificationReads, VectorIndex
from ..store import Store
from ..transaction import (
    APPEND_AUDIT,
    COLLECTION_BY_ID_RAW,
    HEAD_LOCKED_RAW,
    MOVE_HEAD,
    C,
    K,
    S,
    StoreTx,
    T,
    active_consent,
    audit_params,
)
from . import schema
from .memory import PgGalleryMemoryIndex
from .rotation import RotationCache, keyring_name, orthogonal_from_seed, wrap_context
from .vectors import copy_rows, parse_copy_rows, vec_table

log = logging.getLogger("facegate.gallery.pg")

WRITE_LOCK_KEY = 4242002  # pg_advisory_xact_lock: one writer at a time, like SQLite
_TAKE_WRITE_LOCK = f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"

# The consent re-check of StoreTx.identification_reads in one statement: the hits in rank order,
# the first b_limit with an active consent, and the update of their last_seen_at as a CTE.
_RANKED = func.unnest(bindparam("b_sids", type_=ARRAY(BigInteger))).table_valued("sid", with_ordinality="n").render_derived()
_SEEN = (
    select(_RANKED.c.sid, _RANKED.c.n)
    .where(exists().where(K.c.subject_id == _RANKED.c.sid, *active_consent(bindparam("b_purpose"), bindparam("b_now"))))
    .order_by(_RANKED.c.n)
    .limit(bindparam("b_limit"))
    .cte("seen")
)
_TOUCHED = update(S).where(S.c.id.in_(select(_SEEN.c.sid))).values(last_seen_at=bindparam("b_now")).cte("touched")
_CONSENTED_SEEN = select(_SEEN.c.sid).order_by(_SEEN.c.n).add_cte(_TOUCHED)
# StoreTx.append_audit in one statement: the event and the head it becomes (SQLite has no
# INSERT inside WITH, so its transactions send the two apart).
_APPEND_AND_MOVE_HEAD = MOVE_HEAD.add_cte(APPEND_AUDIT.cte("appended"))


def _unavailable(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None) or ""
    if isinstance(exc, (OperationalError, InterfaceError)):
        # 08: connection exceptions, 57: operator intervention (shutdown, cancel), 53: resources,
        # 40: serialisation/deadlock (transient); no SQLSTATE: the client lost the connection.
        return state == "" or state[:2] in ("08", "57", "53", "40")
    return state[:2] in ("08", "57")


def _closed_by_server(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout check, in place of a pre-ping round trip on every transaction: an idle
    connection has nothing to read unless the server closed it or said why it is about to
    (shutdown, restart, idle timeout). Such a connection is replaced (the pool retries the
    checkout). A peer gone without a word (a host lost with its network) is found by the
    first statement instead: that call raises StoreUnavailableError and the pool drops its
    connections, so the next call reconnects."""
    if dbapi_conn.closed or dbapi_conn.broken:
        raise DisconnectionError("the connection is closed")
    readable = poll()
    readable.register(dbapi_conn.pgconn.socket, POLLIN)
    if readable.poll(0):
        raise DisconnectionError("the server closed the connection")


def _connection_broke(exc: Exception, raw: Any) -> bool:
    """Whether psycopg error ``exc`` left the driver connection ``raw`` unusable."""
    import psycopg

    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) or raw is None or raw.closed


def _driver_error(exc: Exception, raw: Any) -> StoreError:
    """A psycopg error raised outside SQLAlchemy as the store's error: StoreUnavailableError
    where the connection broke (or the server is shutting down, out of resources, or the
    transaction must be retried), else StoreError."""
    broken = _connection_broke(exc, raw)
    state = getattr(exc, "sqlstate", None) or ""
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if broken and (state == "" or state[:2] in ("08", "57", "53", "40")):
        return StoreUnavailableError(f"the gallery database is unavailable: {msg}")
    return StoreError(f"database error: {msg}")


_CONSENTED_SEEN_RAW = DriverStatement(_CONSENTED_SEEN)
_APPEND_AND_MOVE_HEAD_RAW = DriverStatement(_APPEND_AND_MOVE_HEAD)


@contextmanager
def pg_errors() -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        msg = str(exc.orig) if exc.orig is not None else str(exc)
        msg = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
        if _unavailable(exc):
            raise StoreUnavailableError(f"the gallery database is unavailable: {msg}") from exc
        raise StoreError(f"database error: {msg}") from exc


def normalise_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` → SQLAlchemy's psycopg 3 driver, with a connect timeout."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    u = make_url(url)
    if u.get_backend_name() != "postgresql":
        raise StoreError(f"not a PostgreSQL URL: {u.render_as_string(hide_password=True)}")
    if u.drivername in ("postgresql", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+psycopg")
    query = dict(u.query)
    query.setdefault("connect_timeout", "10")
    query.setdefault("application_name", "facegate")
    return u.set(query=query).render_as_string(hide_password=False)


class PgStore(Store):
    """:class:`Store` on PostgreSQL with the rotated search copy. Thread-safe; one per process."""

    def __init__(self, url: str, *, durability: str = "normal", pool_size: int = 8) -> None:
        super().__init__(normalise_url(url), durability=durability, pool_size=pool_size)
        # Same engine as the base class but for bulk inserts: psycopg's pipelined executemany
        # beats SQLAlchemy's multi-VALUES rewriting here (the driver re-parses every huge
        # statement); template ids come from the sequence instead of RETURNING.
        self.engine.dispose()
        self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=16, use_insertmanyvalues=False)
        event.listen(self.engine, "checkout", _closed_by_server)
        self.write_engine = self.engine
        self.read_engine = self.engine.execution_options(isolation_level="REPEATABLE READ")
        self.crypto: Crypto | None = None  # set by make_index(); needed to write vectors
        # The change feed's head, read before every search: one autocommit statement, no
        # SQLAlchemy transaction, no pre-ping (see max_seq).
        self.search_engine = create_engine(self.url, pool_size=pool_size, max_overflow=16, isolation_level="AUTOCOMMIT")

        self.rotations = RotationCache()
        self._vacuum_lock = threading.Lock()
        self._vacuum_due: set[str] = set()
        self._vacuum_thread: threading.Thread | None = None
        self.vacuum_delay_s = 2.0
        self._closed = False

    # --- transactions -----------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[PgStoreTx]:
        with pg_errors(), self.read_engine.begin() as conn:
            tx = PgStoreTx(conn, self)
            yield tx
            tx.commit_deferred()  # nothing, unless a write was deferred here after all

    @contextmanager
    def write(self) -> Iterator[PgStoreTx]:
        with pg_errors(), self.write_engine.begin() as conn:
            tx = PgStoreTx(conn, self, write_lock=True)
            yield tx
            tx.commit_deferred()  # then SQLAlchemy's commit finds the transaction ended
        tx.committed()

    @contextmanager
    def search_conn(self) -> Iterator[Any]:
        """A pooled autocommit psycopg connection for single statements on the search path (no
        SQLAlchemy layer: it cost more than the query). A connection that failed is discarded,
        not returned to the pool."""
        import psycopg

        with pg_errors():
            conn = self.search_engine.raw_connection()
        try:
            yield conn
        except psycopg.Error as exc:
            raw = conn.dbapi_connection
            error = _driver_error(exc, raw)
            if _connection_broke(exc, raw):
                conn.invalidate()
            raise error from exc
        finally:
            if conn.dbapi_connection is not None:
                conn.close()

    @contextmanager
    def autocommit(self) -> Iterator[Any]:
        """A connection outside any transaction (VACUUM)."""
        with pg_errors(), self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    def max_seq(self) -> int:
        """The change feed's head, read before every search: one autocommit statement on a
        search connection (no transaction, no pool pre-ping), so every index sees each commit
        that returned before its search began."""
        try:
            return self._head()
        except StoreUnavailableError:
            # No pre-ping on these connections: after a server restart the pooled ones are all
            # dead. Drop them and ask once more on a new connection.
            self.search_engine.dispose(close=False)
            return self._head()

    def _head(self) -> int:
        with self.search_conn() as conn, conn.cursor() as cur:
            row = cur.execute("SELECT max(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    # --- index factory -----------------------------------------------------

    def make_index(self, crypto: Crypto, config: IndexConfig | None = None) -> VectorIndex:
        """The in-memory index of ``gallery/index.py`` (as for SQLite), fed by the change feed and
        cold-loaded from the search copy."""
        self.crypto = crypto
        return PgGalleryMemoryIndex(self, crypto, config)

    # --- migrations ---------------------------------------------------------------------------

    def migrate(self) -> None:
        with pg_errors():
            super().migrate()
            with self.engine.connect() as conn:
                have = conn.exec_driver_sql("SELECT value FROM meta WHERE key = 'pg_schema'").scalar()
                conn.rollback()
            if have == schema.PG_SCHEMA:
                return
            with self.write_engine.begin() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({schema.MIGRATE_LOCK_KEY})")
                have = conn.exec_driver_sql("SELECT value FROM meta WHERE key = 'pg_schema'").scalar()
                if have == schema.PG_SCHEMA:
                    return
                schema.apply(conn)
                if have is None:
                    conn.exec_driver_sql("INSERT INTO meta (key, value) VALUES ('pg_schema', %(v)s)", {"v": schema.PG_SCHEMA})
                else:
                    conn.exec_driver_sql("UPDATE meta SET value = %(v)s WHERE key = 'pg_schema'", {"v": schema.PG_SCHEMA})

    # --- housekeeping -------------------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Called by the gallery after erasures: schedule a VACUUM of the erased data's tables
        (debounced, off the request path): VACUUM makes the erased rows' space reusable."""
        self.schedule_vacuum(["templates", "subjects", "consents", *self._vector_tables()])
        return True

    def _vector_tables(self) -> list[str]:
        try:
            with self.read() as tx:
                return [vec_table(c) for c in tx.vector_collection_ids()]
        except StoreError:
            return []

    def schedule_vacuum(self, tables: Sequence[str]) -> None:
        with self._vacuum_lock:
            self._vacuum_due.update(tables)
            if self._vacuum_thread is None or not self._vacuum_thread.is_alive():
                self._vacuum_thread = threading.Thread(target=self._vacuum_worker, name="facegate-pg-vacuum", daemon=True)
                self._vacuum_thread.start()

    def _vacuum_worker(self) -> None:
        deadline = time.monotonic() + self.vacuum_delay_s
        while time.monotonic() < deadline and not self._closed:
            time.sleep(0.05)
        with self._vacuum_lock:
            tables, self._vacuum_due = sorted(self._vacuum_due), set()
        if self._closed:
            return
        try:
            self.vacuum(tables)
        except StoreUnavailableError as exc:
            log.info("background VACUUM skipped: %s (autovacuum will catch up)", exc)
        except Exception:  # noqa: BLE001 - autovacuum remains the fallback
            log.warning("background VACUUM failed (autovacuum will catch up)", exc_info=True)

    def vacuum(self, tables: Sequence[str] | None = None) -> float:
        """VACUUM now (blocking); returns seconds taken."""
        if tables is None:
            tables = ["templates", "subjects", "consents", *self._vector_tables()]
        t0 = time.perf_counter()
        with self.autocommit() as conn:
            for t in tables:
                if t.replace("_", "").isalnum():
                    conn.exec_driver_sql(f"VACUUM {t}")
        return time.perf_counter() - t0

    def wait_vacuum(self, timeout: float = 60.0) -> None:
        t = self._vacuum_thread
        if t is not None:
            t.join(timeout)

    def close(self) -> None:
        self._closed = True
        self.wait_vacuum(5.0)
        self.search_engine.dispose()
        super().close()


class PgStoreTx(StoreTx):
    """:class:`StoreTx` that also maintains each collection's search copy."""

    store: PgStore

    def __init__(self, conn: Any, store: PgStore, *, write_lock: bool = False) -> None:
        # Statements sent with the next one (or with COMMIT), bound: BEGIN rides with the writers'
        # lock, and a deferred write (the audit append) with whatever follows it.
        self._pending: list[tuple[str, dict[str, Any] | None]] = [(_TAKE_WRITE_LOCK, None)] if write_lock else []
        super().__init__(conn, store)
        self._ciphers: dict[int, SubjectCipher] = {}

    # --- the writers' lock, and pipelined statements on the raw driver connection -------------

    @property
    def conn(self) -> Any:
        if self._pending:
            self._pipeline()  # e.g. BEGIN and the lock in one round trip
        return self._conn

    @conn.setter
    def conn(self, value: Any) -> None:
        self._conn = value

    def _pipeline(self, *statements: tuple[DriverStatement, dict[str, Any]], commit: bool = False) -> list[list[Any]]:
        """Send what is pending, ``statements`` and, with ``commit``, COMMIT in one round trip
        (psycopg pipeline mode); the rows of each statement. The server still runs them one
        after the other, each on a snapshot taken when it starts: after the lock, as if sent
        apart. A failing statement aborts the transaction, COMMIT included."""
        import psycopg

        raw = self._conn.connection.driver_connection
        dialect = self._conn.dialect
        first = len(self._pending)
        queued = self._pending + [s.bind(dialect, p) for s, p in statements] + ([("COMMIT", None)] if commit else [])
        self._pending = []
        cursors = [raw.cursor() for _ in queued]
        try:
            with raw.pipeline():
                for cur, (sql, params) in zip(cursors, queued):
                    cur.execute(sql, params)
            return [st.rows(dialect, cur)
                    for (st, _p), cur in zip(statements, cursors[first : first + len(statements)])]
        except psycopg.Error as exc:
            raise _driver_error(exc, raw) from exc
        finally:
            for cur in cursors:
                cur.close()

    def defer(self, stmt: DriverStatement, params: dict[str, Any]) -> None:
        """Send ``stmt``, a write whose outcome nothing in this transaction reads, with the next
        statement or with COMMIT (one round trip less); its error, if any, fails the commit."""
        self._pending.append(stmt.bind(self._conn.dialect, params))

    def commit_deferred(self) -> None:
        """COMMIT together with the deferred writes, if there are any (else SQLAlchemy's commit
        sends COMMIT alone, or nothing for a transaction that sent nothing)."""
        if any(sql != _TAKE_WRITE_LOCK for sql, _p in self._pending):
            self._pipeline(commit=True)

    def _cursor(self) -> Any:
        raw = self.conn.connection.dbapi_connection
        assert raw is not None  # the transaction holds a live, checked-out connection
        return raw.cursor()

    def copy_in(self, sql: str, payload: bytes) -> None:
        with self._cursor() as cur, cur.copy(sql) as cp:
            for start in range(0, len(payload), 8 << 20):
                cp.write(payload[start : start + (8 << 20)])

    def copy_out(self, sql: str) -> bytes:
        buf = bytearray()
        with self._cursor() as cur, cur.copy(sql) as cp:
            for chunk in cp:
                buf += chunk
        return bytes(buf)

    # --- vector collections -------------------------------------------------------------------

    def vector_state(self, cid: int) -> Any:
        return self.conn.execute(text("SELECT * FROM fg_vector_collections WHERE collection_id = :c"), {"c": cid}).first()

    def vector_collection_ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute(text("SELECT collection_id FROM fg_vector_collections"))]

    def update_vector_state(self, cid: int, **values: Any) -> None:
        sets = ", ".join(f"{k} = :{k}" for k in values)
        self.conn.execute(text(f"UPDATE fg_vector_collections SET {sets} WHERE collection_id = :cid"), {**values, "cid": cid})

    def rotation(self, cid: int, version: int, dim: int) -> np.ndarray:
        cached = self.store.rotations.get((cid, version))
        if cached is not None:
            return cached
        entry = self.get_keyring(keyring_name(cid, version))
        if entry is None:
            raise StoreError(f"the rotation key {version} of collection {cid} is missing from the keyring")
        seed = self._crypto().unwrap(entry.wrapped, wrap_context(cid, version))
        return self.store.rotations.put((cid, version), orthogonal_from_seed(seed, dim))

    def current_rotation(self, cid: int) -> tuple[np.ndarray, Any]:
        st = self.vector_state(cid)
        if st is None:
            raise StoreError(f"collection {cid} has no vector table")
        return self.rotation(cid, st.rotation_version, st.dim), st

    def new_rotation_key(self, cid: int, version: int, now: dt.datetime) -> None:
        crypto = self._crypto()
        self.put_keyring(
            keyring_name(cid, version),
            crypto.master_key_id,
            crypto.wrap(secrets.token_bytes(32), wrap_context(cid, version)),
            now,
        )

    def create_vector_table(self, cid: int) -> None:
        for stmt in schema.vector_table_ddl(cid):
            self.conn.exec_driver_sql(stmt)

    def _crypto(self) -> Crypto:
        if self.store.crypto is None:
            raise StoreError("the PostgreSQL store needs the master key to write search vectors: open it with Gallery.open")
        return self.store.crypto

    # --- overrides: collections ---------------------------------------------------------------

    def insert_collection(self, **values: Any) -> int:
        cid = super().insert_collection(**values)
        dim = int(values["embedding_dim"])
        self.create_vector_table(cid)
        self.conn.execute(
            text("INSERT INTO fg_vector_collections (collection_id, dim, rotation_version) VALUES (:c, :d, 1)"),
            {"c": cid, "d": dim},
        )
        self.new_rotation_key(cid, 1, values.get("created_at") or dt.datetime.now(dt.UTC))
        return cid

    def identification_reads(self, cid: int, sids: Sequence[int], purpose: str, now: dt.datetime,
                             limit: int) -> IdentificationReads:
        params = {"b_sids": list(sids), "b_purpose": purpose, "b_now": now, "b_limit": limit}
        col, seen, head = self._pipeline((COLLECTION_BY_ID_RAW, {"b_cid": cid}), (_CONSENTED_SEEN_RAW, params),
                                         (HEAD_LOCKED_RAW, {}))
        if not head:
            super().audit_head(lock=True)  # raises AuditTamperedError
        return IdentificationReads(col[0] if col else None, [r[0] for r in seen], (int(head[0][0]), str(head[0][1])))

    def append_audit(self, row: dict[str, Any]) -> None:
        self.defer(_APPEND_AND_MOVE_HEAD_RAW, audit_params(row))  # usually an operation's last write

    # --- erasure and withdrawal: visible on synchronous standbys before the commit returns ----

    def _apply_on_standbys(self) -> None:
        """With read replicas as synchronous standbys, ``remote_apply`` makes COMMIT wait until
        they have applied it: a replica serving searches can then never return an erased or
        withdrawn subject after the erasure returned. Without standbys it is an ordinary commit."""
        self.conn.exec_driver_sql("SET LOCAL synchronous_commit = 'remote_apply'")

    def delete_subject(self, sid: int) -> tuple[int, int]:
        self._apply_on_standbys()
        return super().delete_subject(sid)

    def withdraw_consents(self, sid: int, purposes: Sequence[str] | None, now: dt.datetime) -> int:
        self._apply_on_standbys()
        return super().withdraw_consents(sid, purposes, now)

    def delete_collection(self, cid: int) -> None:
        self._apply_on_standbys()
        self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {vec_table(cid)}")
        super().delete_collection(cid)  # fg_vector_collections cascades
        self.conn.execute(text("DELETE FROM keyring WHERE name LIKE :p"), {"p": f"vecrot:{int(cid)}:%"})
        self.store.rotations.forget(cid)

    # --- overrides: templates -----------------------------------------------------------------

    def _cipher(self, sid: int, cid: int) -> Any:
        c = self._ciphers.get(sid)
        if c is None:
            row = self.conn.execute(select(S.c.wrapped_key, S.c.external_id).where(S.c.id == sid)).one()
            c = self._ciphers[sid] = self._crypto().subject_key(row.wrapped_key, cid, row.external_id)
        return c

    def _prefetch_ciphers(self, pairs: set[tuple[int, int]]) -> None:
        need = {sid: cid for sid, cid in pairs if sid not in self._ciphers}
        ids = sorted(need)
        if not ids:
            return
        crypto = self._crypto()
        for start in range(0, len(ids), 5000):
            q = select(S.c.id, S.c.wrapped_key, S.c.external_id).where(S.c.id.in_(ids[start : start + 5000]))
            for sid, wrapped, ext in self.conn.execute(q):
                self._ciphers[sid] = crypto.subject_key(wrapped, need[sid], ext)

    def _plain(self, values: dict[str, Any]) -> np.ndarray:
        cipher = self._cipher(int(values["subject_id"]), int(values["collection_id"]))
        return cipher.decrypt(values["nonce"], values["ciphertext"], values["model_id"])

    def insert_template(self, **values: Any) -> int:
        tid = super().insert_template(**values)
        self.insert_vectors(
            int(values["collection_id"]), np.array([tid]), np.array([int(values["subject_id"])]), self._plain(values)[None, :]
        )
        return tid

    def insert_templates_many(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self._prefetch_ciphers({(int(r["subject_id"]), int(r["collection_id"])) for r in rows})
        tids = np.array(
            [
                r[0]
                for r in self.conn.execute(
                    text("SELECT nextval(pg_get_serial_sequence('templates', 'id')) FROM generate_series(1, :n)"),
                    {"n": len(rows)},
                )
            ],
            np.int64,
        )
        self.conn.execute(insert(T), [{**r, "id": int(t)} for r, t in zip(rows, tids)])
        by_col: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            by_col.setdefault(int(r["collection_id"]), []).append(i)
        for cid, idx in by_col.items():
            V = np.stack([self._plain(rows[i]) for i in idx])
            self.insert_vectors(cid, tids[idx], np.array([int(rows[i]["subject_id"]) for i in idx], np.int64), V)

    def insert_vectors(self, cid: int, tids: np.ndarray, sids: np.ndarray, V: np.ndarray, *, rotated: bool = False) -> None:
        """Insert plaintext (or already ``rotated``) unit vectors into the collection's search copy."""
        if not len(tids):
            return
        if not rotated:
            R, _st = self.current_rotation(cid)
            V = np.asarray(V, np.float32) @ R.T
        self.copy_in(
            f"COPY {vec_table(cid)} (template_id, subject_id, embedding) FROM STDIN (FORMAT BINARY)",
            copy_rows(np.asarray(tids, np.int64), np.asarray(sids, np.int64), np.asarray(V, np.float32)),
        )

    def stream_vectors(self, cid: int, *, chunk: int = 100_000) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """All (rotated) search vectors of a collection in template-id chunks via binary COPY."""
        st = self.vector_state(cid)
        last = 0
        while True:
            data = self.copy_out(
                f"COPY (SELECT template_id, subject_id, embedding FROM {vec_table(cid)} WHERE template_id > {int(last)} "
                f"ORDER BY template_id LIMIT {int(chunk)}) TO STDOUT (FORMAT BINARY)"
            )
            tids, sids, V = parse_copy_rows(data, st.dim)
            if not len(tids):
                return
            yield tids, sids, V
            last = int(tids[-1])
            if len(tids) < chunk:
                return

    def foreign_template_ids(self, cid: int, model_id: str) -> np.ndarray:
        """Ids of the collection's templates made by another model than ``model_id``."""
        q = select(T.c.id).where(T.c.collection_id == cid, T.c.model_id != model_id)
        return np.asarray([r[0] for r in self.conn.execute(q)], np.int64)

    def count_vectors(self, cid: int) -> int:
        return int(self.conn.exec_driver_sql(f"SELECT count(*) FROM {vec_table(cid)}").scalar() or 0)

    def collection_ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute(select(C.c.id))]
