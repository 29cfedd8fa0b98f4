"""A liveness ``SessionStore`` in the gallery's database (SQLite or PostgreSQL, SQLAlchemy 2).

Every process that opens the same database shares the sessions: a session created by one
``facegate serve`` worker can be submitted to another, its passed result used through a third,
single use holds across processes and restarts, and replay digests survive a restart for their
24 hours.

Atomicity: each state change is one conditional ``UPDATE`` (e.g. ``SET state='checking' WHERE
id=? AND state='pending' AND expires_at > now``) whose row count says who won, so of two
concurrent submissions — threads or processes — exactly one claims the session. Consuming a
passed session is ``SET state='consumed' WHERE state='passed' AND result_expires_at > now`` and,
in the same transaction, the read and ``DELETE`` of its encrypted result: of two processes
racing to use one session exactly one gets the crop, and the ciphertext is gone when it commits.
Digests are inserted with ``ON CONFLICT`` (both backends): the first session to submit a frame
owns it for the replay window, an expired digest is taken over by the new session.

What is stored: the session (id, nonce, owner, challenges, state, times) and, once checked, the
audit-safe decision (reason codes, challenge statuses, counts — the same record the audit log
gets); SHA-256 digests of submitted frames for 24 h; and for a **passed** session only, until it
is used or its result expires (120 s), the face-centred crop of its best frame — the image that
verify/enrol run on, exactly as the in-memory store hands it out — losslessly PNG-encoded and
**encrypted** (table ``liveness_results``, see :class:`ResultCipher`): AES-256-GCM under a key
derived with HKDF from the gallery's master key, the session id as associated data. No frame,
template or landmark is written, and nothing about the face in plaintext. A master-key rotation
between the check and its use makes the result unreadable: the use fails closed with
``liveness_result_unavailable`` ("run a new liveness check").
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from ..clock import SYSTEM, Clock
from ..gallery.store import translate_errors
from .challenge import (
    DEFAULT_REPLAY_TTL_S,
    Challenge,
    LivenessSession,
    SessionOutcome,
)
from .errors import (
    SessionExpiredError,
    SessionNotFoundError,
    SessionNotLiveError,
    SessionResultUnavailableError,
    SessionUsedError,
)
from .result_cipher import MasterKeyCrypto, ResultCipher, ResultUnreadable
from .schema import LivenessFrameDigestRow, LivenessResultRow, LivenessSessionRow

log = logging.getLogger("facegate.liveness")

# How long a session row is kept after it (or its result) expired: late submissions then get
# "used"/"expired" instead of "not found". Same horizon as the in-memory store.
KEEP_AFTER_S = 3600.0


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _sec(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class DatabaseSessionStore:
    """Liveness sessions in the gallery database (a ``SessionStore``). Thread- and process-safe.

    ``store``: a gallery ``Store`` (``gallery.store``; its tables come from the gallery's
    migrations, revision 0003) — or use :meth:`open` with a database URL. ``crypto``: the
    gallery's ``Crypto`` (``gallery.crypto``: its master key; a passed session's result is
    encrypted under a key derived from it). ``purge_every_s``: expired rows are deleted at most
    this often, on ``add`` (and :meth:`purge_results` deletes expired results alone, cheaply).
    ``clock``: "now" where a call is not given one.
    """

    def __init__(
        self,
        store: Any,
        crypto: MasterKeyCrypto,
        *,
        replay_ttl_s: float = DEFAULT_REPLAY_TTL_S,
        purge_every_s: float = 60.0,
        clock: Clock = SYSTEM,
    ) -> None:
        if crypto is None:
            raise TypeError("DatabaseSessionStore needs the gallery's Crypto (gallery.crypto): passed results are encrypted")

        self.store = store
        self.dialect: str = getattr(store, "dialect", None) or store.engine.dialect.name
        # SQLite: writes open with BEGIN IMMEDIATE (the gallery's write engine) so two writers queue
        # on the lock instead of failing a read→write upgrade. PostgreSQL: plain READ COMMITTED;
        # a conditional UPDATE re-checks its WHERE on the row it waited for.
        self._write: Engine = store.write_engine if self.dialect == "sqlite" else store.engine
        self._read: Engine = store.engine
        # The ORM types __table__ as a FromClause; these are the mapped Tables.
        self.S = cast(Table, LivenessSessionRow.__table__)
        self.D = cast(Table, LivenessFrameDigestRow.__table__)
        self.R = cast(Table, LivenessResultRow.__table__)
        self.cipher = ResultCipher(crypto)
        self.replay_ttl_s = replay_ttl_s
        self.purge_every_s = purge_every_s
        self._last_purge = 0.0
        self._purge_lock = threading.Lock()
        self._owns_store = False
        self._clock = clock

    @classmethod
    def open(cls, url: str, *, data_dir: str | None = None, master_key: bytes | str | None = None,
             crypto: Any = None, **kwargs: Any) -> DatabaseSessionStore:
        """Open (and migrate) the gallery database at ``url`` (``sqlite:///…/gallery.db``,
        ``postgresql://…``, or ``embedded-postgres`` with ``data_dir``) for liveness sessions.

        The master key is found as ``Gallery.open`` finds it: ``master_key`` (32 bytes or
        base64), else $FACEGATE_MASTER_KEY, else ``<data_dir>/master.key`` — for SQLite the
        directory of the database file unless ``data_dir`` or $FACEGATE_DATA_DIR says otherwise
        — created for a new database, checked against the database's key id otherwise."""
        from ..gallery.opening import open_database, open_master_key

        st, ddir = open_database(data_dir, store=url)
        try:
            if crypto is None:
                crypto = open_master_key(st, ddir, master_key)
        except BaseException:
            st.close()
            raise
        out = cls(st, crypto, **kwargs)
        out._owns_store = True
        return out

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    # --- helpers ------------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock.now().timestamp()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Connection]:
        engine = self._write if write else self._read
        if self.dialect == "postgresql":
            from ..gallery.pg.store import pg_errors

            guard = pg_errors()
        else:
            guard = translate_errors()
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
        now = self._now()
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
        now = self._now() if now is None else now
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
        sealed: tuple[str, bytes] | None = None
        if live and outcome.best_image is not None:
            try:
                sealed = self.cipher.seal(session_id, outcome.best_image)
            except Exception:  # noqa: BLE001 - e.g. this process holds a retired master key
                # The decision is still recorded; using the session fails closed (no result stored).
                log.exception("could not encrypt the result of liveness session %s; it cannot be used", session_id)
        outcome.best_image = None
        outcome.best_embedding = None  # never stored: verify/enrol compute their own template from the crop
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
            if done == 1 and sealed is not None:
                # Same transaction as the decision: a passed row never exists without its result.
                conn.execute(insert(self.R).values(session_id=session_id, key_id=sealed[0], ciphertext=sealed[1],
                                                   created_at=_ts(outcome.completed_at), expires_at=_ts(result_expires)))
        sealed = None
        if done != 1:
            raise SessionUsedError("liveness session is not being checked", session_id=session_id)

    def consume(self, session_id: str, owner: str | None = None, now: float | None = None) -> SessionOutcome:
        """passed → consumed and the encrypted result read and deleted, in one transaction: of
        any number of threads or processes racing, exactly one gets the crop. A result that
        cannot be decrypted (master key rotated since the check, altered or moved row) fails
        closed: the session is used up and ``liveness_result_unavailable`` says to run a new
        check. ``best_embedding`` is always None (not stored)."""
        now = self._now() if now is None else now
        payload: Any = None
        deleted = 0
        with self._tx() as conn:
            won = conn.execute(
                update(self.S)
                .where(self.S.c.id == session_id, self.S.c.state == "passed", self.S.c.result_expires_at > _ts(now),
                       self._owner_match(owner))
                .values(state="consumed", consumed_at=_ts(now))
            ).rowcount
            row = self._row(conn, session_id)
            if won == 1:
                payload = conn.execute(select(self.R.c.key_id, self.R.c.ciphertext)
                                       .where(self.R.c.session_id == session_id)).first()
                deleted = conn.execute(delete(self.R).where(self.R.c.session_id == session_id)).rowcount
            elif self._visible(row, owner) and row.state == "passed":
                deleted = conn.execute(delete(self.R).where(self.R.c.session_id == session_id,
                                                            self.R.c.expires_at <= _ts(now))).rowcount  # expired: goes now
        if deleted:
            self._vacuum_later()
        if not self._visible(row, owner):
            raise self._not_found(session_id)
        if won == 1:
            session = self._session(row)
            assert session.outcome is not None
            out = session.outcome
            if payload is None:
                raise SessionResultUnavailableError(
                    "this liveness session passed, but no result was stored for it (it could not be encrypted); "
                    "run a new liveness check", session_id=row.id, reason="not_stored")
            try:
                out.best_image = self.cipher.open(row.id, payload.key_id, payload.ciphertext)
            except ResultUnreadable as exc:
                if exc.reason == "integrity":
                    log.warning("liveness session %s: stored result failed authentication; refused", row.id)
                raise SessionResultUnavailableError(
                    f"this liveness session's result cannot be used: {exc}; the session is used up — run a new liveness check",
                    session_id=row.id, reason=exc.reason) from None
            finally:
                payload = None
            return out
        if row.state == "consumed":
            raise SessionUsedError("this liveness session was already used", session_id=row.id)
        if row.state != "passed":
            raise SessionNotLiveError("this liveness session has not passed a liveness check", session_id=row.id, state=row.state)
        raise SessionExpiredError("this liveness result has expired; run a new liveness check", session_id=row.id)

    def remember_frames(self, session_id: str, digests: Iterable[str], now: float | None = None) -> set[str]:
        now = self._now() if now is None else now
        unique = list(dict.fromkeys(str(d) for d in digests))
        if not unique:
            return set()
        cutoff = _ts(now - self.replay_ttl_s)
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        seen: set[str] = set()
        with self._tx() as conn:
            for start in range(0, len(unique), 400):
                chunk = unique[start:start + 400]
                rows = [{"digest": d, "session_id": session_id, "seen_at": _ts(now)} for d in chunk]
                stmt = dialect_insert(self.D).values(rows)
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
        now = self._now() if now is None else now
        with self._tx() as conn:
            results = conn.execute(delete(self.R).where(self.R.c.expires_at <= _ts(now))).rowcount
            # A session's result goes with it (explicitly: SQLite enforces the cascade only with
            # foreign keys on, which the gallery's connections have, a foreign connection may not).
            gone = select(self.S.c.id).where(self.S.c.purge_after <= _ts(now))
            results += conn.execute(delete(self.R).where(self.R.c.session_id.in_(gone))).rowcount
            dropped = conn.execute(delete(self.S).where(self.S.c.purge_after <= _ts(now))).rowcount
            conn.execute(delete(self.D).where(self.D.c.seen_at <= _ts(now - self.replay_ttl_s)))
        if results:
            self._vacuum_later()
        return int(dropped or 0)

    def purge_results(self, now: float | None = None) -> int:
        """Delete every stored result whose lifetime is over (one indexed DELETE); returns how
        many. ``facegate serve`` runs it every few seconds (``service.liveness``)."""
        now = self._now() if now is None else now
        with self._tx() as conn:
            n = int(conn.execute(delete(self.R).where(self.R.c.expires_at <= _ts(now))).rowcount or 0)
        if n:
            self._vacuum_later()
        return n

    def _vacuum_later(self) -> None:
        """PostgreSQL keeps a deleted row's bytes until VACUUM: ask the store for one soon (its
        debounced background VACUUM). SQLite's ``secure_delete`` (on for the gallery) zeroes them."""
        schedule = getattr(self.store, "schedule_vacuum", None)
        if schedule is not None:
            try:
                schedule(["liveness_results"])
            except Exception:  # noqa: BLE001 - autovacuum remains the fallback
                log.debug("could not schedule VACUUM of liveness_results", exc_info=True)

    def _maybe_purge(self, now: float) -> None:
        if not self._purge_lock.acquire(blocking=False):
            return
        try:
            self._last_purge = now
            self.purge(now)
        except Exception:  # noqa: BLE001 - housekeeping never fails a request
            log.exception("liveness purge failed")
        finally:
            self._purge_lock.release()

    # --- inspection (tests, ops) --------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows per session state, digests, and stored (encrypted) results."""
        from sqlalchemy import func

        with self._tx(write=False) as conn:
            states: dict[str, int] = dict(conn.execute(select(self.S.c.state, func.count()).group_by(self.S.c.state)).all())
            digests = conn.execute(select(func.count()).select_from(self.D)).scalar() or 0
            results = conn.execute(select(func.count()).select_from(self.R)).scalar() or 0
        return {**{str(k): int(v) for k, v in states.items()}, "digests": int(digests), "results": int(results)}


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


__all__ = ["DatabaseSessionStore"]
