"""A liveness ``SessionStore`` in the gallery's database (SQLite or PostgreSQL, SQLAlchemy 2).

Every process that opens the same database shares the sessions: a session created by one
``facegate serve`` worker can be submitted to another, single use holds across processes and
restarts, and replay digests survive a restart for their 24 hours.

Atomicity: each state change is one conditional ``UPDATE`` (e.g. ``SET state='checking' WHERE
id=? AND state='pending' AND expires_at > now``) whose row count says who won, so of two
concurrent submissions — threads or processes — exactly one claims the session. Digests are
inserted with ``ON CONFLICT`` (both backends): the first session to submit a frame owns it for
the replay window, an expired digest is taken over by the new session.

What is stored: the session (id, nonce, owner, challenges, state, times) and, once checked, the
audit-safe decision (reason codes, challenge statuses, counts — the same record the audit log
gets); SHA-256 digests of submitted frames for 24 h. **No frame, image, crop or template is
written to the database.** A passed session's best frame (face-centred crop) and template stay
in the memory of the process that ran the check (``LocalResults``), until verify/enrol takes
them once or 120 s pass. A verify/enrol that reaches another process, or the same process after
a restart, gets ``liveness_result_unavailable`` (409) and the session is *not* used up; route
the verify/enrol to the process that answered the frames, or run a new check.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from .challenge import (
    DEFAULT_REPLAY_TTL_S,
    Challenge,
    LivenessSession,
    SessionOutcome,
    SessionStore,
)
from .errors import (
    SessionExpiredError,
    SessionNotFoundError,
    SessionNotLiveError,
    SessionResultUnavailableError,
    SessionUsedError,
)

# How long a session row is kept after it (or its result) expired: late submissions then get
# "used"/"expired" instead of "not found". Same horizon as the in-memory store.
KEEP_AFTER_S = 3600.0


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def _sec(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class LocalResults:
    """Passed sessions' best frames and templates, in this process's memory only.

    Thread-safe, bounded (``max_items``, oldest first) and time-limited: an entry is dropped at
    its deadline (the session's result TTL). Shared by every ``DatabaseSessionStore`` of one
    process (e.g. after the service reopened its database)."""

    def __init__(self, max_items: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[np.ndarray | None, np.ndarray | None, float]] = OrderedDict()
        self.max_items = max_items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put(self, session_id: str, image: np.ndarray | None, embedding: np.ndarray | None, deadline: float) -> None:
        with self._lock:
            self._items[session_id] = (image, embedding, deadline)
            self._items.move_to_end(session_id)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def has(self, session_id: str, now: float) -> bool:
        with self._lock:
            item = self._items.get(session_id)
            return item is not None and now < item[2]

    def pop(self, session_id: str) -> tuple[np.ndarray | None, np.ndarray | None] | None:
        with self._lock:
            item = self._items.pop(session_id, None)
        return None if item is None else (item[0], item[1])

    def drop_expired(self, now: float) -> int:
        with self._lock:
            stale = [k for k, (_, _, deadline) in self._items.items() if now >= deadline]
            for k in stale:
                del self._items[k]
        return len(stale)


class DatabaseSessionStore(SessionStore):
    """Liveness sessions in the gallery database. Thread- and process-safe.

    ``store``: a gallery ``Store`` (``gallery.store``; its tables come from the gallery's
    migrations, revision 0002) — or use :meth:`open` with a database URL. ``results``: the
    process's in-memory holder of passed sessions' best frames (one per process; a new one by
    default). ``purge_every_s``: expired rows are deleted at most this often, on ``add``.
    """

    def __init__(
        self,
        store: Any,
        *,
        results: LocalResults | None = None,
        replay_ttl_s: float = DEFAULT_REPLAY_TTL_S,
        purge_every_s: float = 60.0,
    ) -> None:
        from ..gallery.liveness_schema import LivenessFrameDigestRow, LivenessSessionRow

        self.store = store
        self.dialect: str = getattr(store, "dialect", None) or store.engine.dialect.name
        # SQLite: writes open with BEGIN IMMEDIATE (the gallery's write engine) so two writers queue
        # on the lock instead of failing a read→write upgrade. PostgreSQL: plain READ COMMITTED;
        # a conditional UPDATE re-checks its WHERE on the row it waited for.
        self._write: Engine = store.write_engine if self.dialect == "sqlite" else store.engine
        self._read: Engine = store.engine
        self.S = LivenessSessionRow.__table__
        self.D = LivenessFrameDigestRow.__table__
        self.results = results or LocalResults()
        self.replay_ttl_s = replay_ttl_s
        self.purge_every_s = purge_every_s
        self._last_purge = 0.0
        self._purge_lock = threading.Lock()
        self._owns_store = False

    @classmethod
    def open(cls, url: str, *, data_dir: str | None = None, **kwargs: Any) -> "DatabaseSessionStore":
        """Open (and migrate) the gallery database at ``url`` (``sqlite:///…/gallery.db``,
        ``postgresql://…``, or ``embedded-postgres`` with ``data_dir``) for liveness sessions."""
        from ..gallery.store import Store, default_data_dir

        if url.startswith("sqlite"):
            st: Any = Store(url)
        else:
            from ..gallery.pg import open_store

            st = open_store(url, data_dir=data_dir or default_data_dir())
        try:
            st.migrate()
        except BaseException:
            st.close()
            raise
        out = cls(st, **kwargs)
        out._owns_store = True
        return out

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    # --- helpers ------------------------------------------------------------------------------

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Connection]:
        from ..gallery.store import _translate_errors

        engine = self._write if write else self._read
        if self.dialect == "postgresql":
            from ..gallery.pg.store import pg_errors

            guard = pg_errors()
        else:
            guard = _translate_errors()
        with guard, engine.begin() as conn:
            yield conn

    def _row(self, conn: Connection, session_id: str) -> Any:
        if not isinstance(session_id, str) or not session_id or len(session_id) > 64:
            return None
        return conn.execute(select(self.S).where(self.S.c.id == session_id)).first()

    @staticmethod
    def _visible(row: Any, owner: str | None) -> bool:
        return row is not None and (row.owner is None or row.owner == owner)

    def _not_found(self, session_id: Any) -> SessionNotFoundError:
        return SessionNotFoundError("no such liveness session", session_id=str(session_id)[:64])

    def _session(self, row: Any) -> LivenessSession:
        outcome = None
        if row.live is not None and row.completed_at is not None:
            outcome = SessionOutcome(live=bool(row.live), decision=dict(row.decision or {}),
                                     completed_at=_sec(row.completed_at) or 0.0, model=row.model)
        return LivenessSession(
            id=row.id, nonce=row.nonce, challenges=tuple(Challenge(c) for c in row.challenges),
            created_at=_sec(row.created_at) or 0.0, expires_at=_sec(row.expires_at) or 0.0, owner=row.owner,
            state=row.state, outcome=outcome, result_ttl_s=float(row.result_ttl_s),
        )

    def _owner_match(self, owner: str | None) -> Any:
        return or_(self.S.c.owner.is_(None), self.S.c.owner == owner) if owner is not None else self.S.c.owner.is_(None)

    # --- interface ----------------------------------------------------------------------------

    def add(self, session: LivenessSession) -> None:
        now = time.time()
        if now - self._last_purge > self.purge_every_s:
            self._maybe_purge(now)
        values = dict(
            id=session.id, nonce=session.nonce, owner=session.owner, challenges=[c.value for c in session.challenges],
            state=session.state, created_at=_ts(session.created_at), expires_at=_ts(session.expires_at),
            result_ttl_s=float(session.result_ttl_s), purge_after=_ts(session.expires_at + KEEP_AFTER_S),
        )
        with self._tx() as conn:
            try:
                conn.execute(insert(self.S).values(**values))
            except IntegrityError:
                raise ValueError("duplicate session id") from None  # rolls the transaction back

    def get(self, session_id: str, owner: str | None = None, now: float | None = None) -> LivenessSession:
        with self._tx(write=False) as conn:
            row = self._row(conn, session_id)
        if not self._visible(row, owner):
            raise self._not_found(session_id)
        return self._session(row)

    def claim(self, session_id: str, owner: str | None = None, now: float | None = None) -> LivenessSession:
        now = time.time() if now is None else now
        with self._tx() as conn:
            won = conn.execute(
                update(self.S)
                .where(self.S.c.id == session_id, self.S.c.state == "pending", self.S.c.expires_at > _ts(now),
                       self._owner_match(owner))
                .values(state="checking", claimed_at=_ts(now))
            ).rowcount
            row = self._row(conn, session_id)
        if not self._visible(row, owner):
            raise self._not_found(session_id)
        if won == 1:
            return self._session(row)
        if row.state != "pending":
            raise SessionUsedError("frames were already submitted for this liveness session", session_id=row.id)
        raise SessionExpiredError("this liveness session has expired; start a new one", session_id=row.id)

    def finish(self, session_id: str, outcome: SessionOutcome) -> None:
        live = bool(outcome.live)
        with self._tx() as conn:
            row = self._row(conn, session_id)
            if row is None:
                return  # purged meanwhile: nothing to keep
            result_expires = outcome.completed_at + float(row.result_ttl_s)
            done = conn.execute(
                update(self.S)
                .where(self.S.c.id == session_id, self.S.c.state == "checking")
                .values(state="passed" if live else "failed", live=live, decision=_json_safe(outcome.decision),
                        completed_at=_ts(outcome.completed_at), result_expires_at=_ts(result_expires), model=outcome.model,
                        purge_after=_ts(max(_sec(row.expires_at) or 0.0, result_expires) + KEEP_AFTER_S))
            ).rowcount
        if done != 1:
            raise SessionUsedError("liveness session is not being checked", session_id=session_id)
        if live and (outcome.best_image is not None or outcome.best_embedding is not None):
            # In this process's memory only; never written to the database.
            self.results.put(session_id, outcome.best_image, outcome.best_embedding, result_expires)
        outcome.best_image = None
        outcome.best_embedding = None

    def consume(self, session_id: str, owner: str | None = None, now: float | None = None) -> SessionOutcome:
        now = time.time() if now is None else now
        local = self.results.has(session_id, now)
        won = 0
        with self._tx() as conn:
            if local:
                won = conn.execute(
                    update(self.S)
                    .where(self.S.c.id == session_id, self.S.c.state == "passed", self.S.c.result_expires_at > _ts(now),
                           self._owner_match(owner))
                    .values(state="consumed", consumed_at=_ts(now))
                ).rowcount
            row = self._row(conn, session_id)
        if not self._visible(row, owner):
            raise self._not_found(session_id)
        if won == 1:
            taken = self.results.pop(session_id)  # the UPDATE made this thread the only taker
            session = self._session(row)
            assert session.outcome is not None
            out = session.outcome
            if taken is not None:
                out.best_image, out.best_embedding = taken
            return out
        if row.state == "consumed":
            raise SessionUsedError("this liveness session was already used", session_id=row.id)
        if row.state != "passed":
            raise SessionNotLiveError("this liveness session has not passed a liveness check", session_id=row.id, state=row.state)
        if row.result_expires_at is None or now >= (_sec(row.result_expires_at) or 0.0):
            self.results.pop(session_id)
            raise SessionExpiredError("this liveness result has expired; run a new liveness check", session_id=row.id)
        raise SessionResultUnavailableError(
            "this liveness session passed in another facegate process (or before a restart); its best frame is kept "
            "only in that process's memory. Send verify/enrol to the same process, or run a new liveness check",
            session_id=row.id,
        )

    def remember_frames(self, session_id: str, digests: Iterable[str], now: float | None = None) -> set[str]:
        now = time.time() if now is None else now
        unique = list(dict.fromkeys(str(d) for d in digests))
        if not unique:
            return set()
        cutoff = _ts(now - self.replay_ttl_s)
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        seen: set[str] = set()
        with self._tx() as conn:
            for start in range(0, len(unique), 400):
                chunk = unique[start:start + 400]
                stmt = dialect_insert(self.D).values([{"digest": d, "session_id": session_id, "seen_at": _ts(now)} for d in chunk])
                # An expired digest (not purged yet) is taken over by this session, as if new.
                stmt = stmt.on_conflict_do_update(
                    index_elements=[self.D.c.digest],
                    set_={"session_id": stmt.excluded.session_id, "seen_at": stmt.excluded.seen_at},
                    where=self.D.c.seen_at <= cutoff,
                )
                conn.execute(stmt)
                owners = conn.execute(
                    select(self.D.c.digest).where(self.D.c.digest.in_(chunk), self.D.c.session_id != session_id)
                ).scalars()
                seen.update(owners)
        return seen

    def purge(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        self.results.drop_expired(now)
        with self._tx() as conn:
            dropped = conn.execute(delete(self.S).where(self.S.c.purge_after <= _ts(now))).rowcount
            conn.execute(delete(self.D).where(self.D.c.seen_at <= _ts(now - self.replay_ttl_s)))
        return int(dropped or 0)

    def _maybe_purge(self, now: float) -> None:
        if not self._purge_lock.acquire(blocking=False):
            return
        try:
            self._last_purge = now
            self.purge(now)
        except Exception:  # noqa: BLE001 - housekeeping never fails a request
            import logging

            logging.getLogger("facegate.liveness").exception("liveness purge failed")
        finally:
            self._purge_lock.release()

    # --- inspection (tests, ops) --------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows per session state, digests, and best frames held in this process."""
        from sqlalchemy import func

        with self._tx(write=False) as conn:
            states = dict(conn.execute(select(self.S.c.state, func.count()).group_by(self.S.c.state)).all())
            digests = conn.execute(select(func.count()).select_from(self.D)).scalar() or 0
        return {**{str(k): int(v) for k, v in states.items()}, "digests": int(digests), "local_results": len(self.results)}


def _json_safe(value: Any) -> Any:
    """The decision record as plain JSON types (numpy scalars from the checker become floats)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


__all__ = ["DatabaseSessionStore", "LocalResults"]
