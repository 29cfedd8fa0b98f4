"""One transaction over the gallery database: every SQL statement the gallery runs, as methods
of :class:`StoreTx` (``store.py`` opens the transactions; PostgreSQL subclasses this class).

(Long by design: one short method per statement, grouped by table, so both stores run the same
SQL and every query the gallery makes is in this one file.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection, CursorResult, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import BindParameter

from . import driver
from .driver import DriverStatement
from .errors import AuditTamperedError
from .ports import IdentificationReads, TemplateStore
from .schema import (
    ApiKeyRow,
    AuditArchiveRow,
    AuditHead,
    AuditRow,
    Base,
    ChangeRow,
    CollectionRow,
    ConsentRow,
    KeyringEntry,
    LockRow,
    Meta,
    SubjectRow,
    TemplateRow,
)


def _table(model: type[Base]) -> Table:
    # Declarative models type ``__table__`` as the wider FromClause; each of ours maps one Table.
    return cast(Table, model.__table__)


C, S, K, T = _table(CollectionRow), _table(SubjectRow), _table(ConsentRow), _table(TemplateRow)
CH, A, AH, KEYS = _table(ChangeRow), _table(AuditRow), _table(AuditHead), _table(ApiKeyRow)
META, KR, LOCKS = _table(Meta), _table(KeyringEntry), _table(LockRow)
AARCH = _table(AuditArchiveRow)


def active_consent(purpose: Any, now: Any) -> list[Any]:
    """THE active-consent condition: granted, not withdrawn, not expired at ``now`` (values or
    bound parameters); for ``purpose`` unless it is None."""
    conds = [K.c.withdrawn_at.is_(None), K.c.granted_at <= now, or_(K.c.expires_at.is_(None), K.c.expires_at > now)]
    if purpose is not None:
        conds.append(K.c.purpose == purpose)
    return [and_(*conds)]


# What every identification runs, built once with bound parameters: SQLAlchemy memoises a built
# statement's cache key, so executing one skips the construction and key generation per call,
# which cost more than SQLite running the statement.
_COLLECTION_BY_NAME = select(C).where(C.c.name == bindparam("b_name"))
COLLECTION_BY_ID = select(C).where(C.c.id == bindparam("b_cid"))
_SIDS: BindParameter[list[int]] = bindparam("b_sids", expanding=True)
_ACTIVE_FOR = select(K.c.subject_id).where(K.c.subject_id.in_(_SIDS), *active_consent(bindparam("b_purpose"), bindparam("b_now")))
_ACTIVE_ANY = select(K.c.subject_id).where(K.c.subject_id.in_(_SIDS), *active_consent(None, bindparam("b_now")))
_TOUCH = update(S).where(S.c.id.in_(_SIDS)).values(last_seen_at=bindparam("b_now"))
# The hits' consent re-check and their last-use mark in one statement (SQLite 3.35+ RETURNING).
_TOUCH_CONSENTED = (update(S).where(S.c.id.in_(_SIDS), exists().where(K.c.subject_id == S.c.id,
                                                                     *active_consent(bindparam("b_purpose"), bindparam("b_now"))))
                    .values(last_seen_at=bindparam("b_now")).returning(S.c.id))
_HEAD = select(AH.c.seq, AH.c.mac).where(AH.c.id == 1)
HEAD_LOCKED = _HEAD.with_for_update()  # SQLite renders no FOR UPDATE: BEGIN IMMEDIATE holds its lock
# An audit event and the head it becomes; parameters from audit_params().
APPEND_AUDIT = insert(A).values({c: bindparam(f"a_{c.name}", type_=c.type) for c in A.c})
MOVE_HEAD = update(AH).where(AH.c.id == 1).values(seq=bindparam("a_seq", type_=A.c.seq.type),
                                                  mac=bindparam("a_mac", type_=A.c.mac.type))
MAX_SEQ = select(func.max(CH.c.seq))
# The identification's write transaction, sent on the driver connection (driver.py; PostgreSQL
# pipelines the collection row and the locked head).
_ACTIVE_FOR_RAW, _ACTIVE_ANY_RAW = DriverStatement(_ACTIVE_FOR), DriverStatement(_ACTIVE_ANY)
_TOUCH_RAW, COLLECTION_BY_ID_RAW = DriverStatement(_TOUCH), DriverStatement(COLLECTION_BY_ID)
_TOUCH_CONSENTED_RAW = DriverStatement(_TOUCH_CONSENTED)
_HEAD_RAW, HEAD_LOCKED_RAW = DriverStatement(_HEAD), DriverStatement(HEAD_LOCKED)
_APPEND_AUDIT_RAW, _MOVE_HEAD_RAW = DriverStatement(APPEND_AUDIT), DriverStatement(MOVE_HEAD)


def audit_params(row: dict[str, Any]) -> dict[str, Any]:
    """The bound parameters of APPEND_AUDIT and MOVE_HEAD for an audit row."""
    return {f"a_{k}": v for k, v in row.items()}


def _inserted_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None  # every table inserted into here has a primary key
    return int(key[0])



class StoreTx:
    """One transaction. Methods return SQLAlchemy rows (attribute access by column name)."""

    def __init__(self, conn: Connection, store: TemplateStore) -> None:
        self.conn = conn
        self.store = store
        self._on_commit: list[Callable[[], None]] = []

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once this transaction has committed (never if it rolls back)."""
        self._on_commit.append(hook)

    def committed(self) -> None:
        hooks, self._on_commit = self._on_commit, []
        for hook in hooks:
            hook()

    def execute(self, stmt: Any, *args: Any) -> Any:
        return self.conn.execute(stmt, *args)

    def driver(self, stmt: DriverStatement, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run ``stmt`` on this transaction's driver connection (``driver.run``)."""
        return driver.run(self.conn.dialect, self.conn.connection.driver_connection, stmt, params)

    # --- meta and keyring -------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        return self.conn.execute(select(META.c.value).where(META.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        if self.get_meta(key) is None:
            self.conn.execute(insert(META).values(key=key, value=value))
        else:
            self.conn.execute(update(META).where(META.c.key == key).values(value=value))

    def delete_meta(self, key: str) -> None:
        self.conn.execute(delete(META).where(META.c.key == key))

    def get_keyring(self, name: str) -> Row | None:
        return self.conn.execute(select(KR).where(KR.c.name == name)).first()

    def put_keyring(self, name: str, master_key_id: str, wrapped: bytes, now: dt.datetime) -> None:
        self.conn.execute(insert(KR).values(name=name, master_key_id=master_key_id, wrapped=wrapped, created_at=now))

    def keyring_entries(self) -> list[Row]:
        return list(self.conn.execute(select(KR).order_by(KR.c.name)))

    def set_keyring_wrapped(self, name: str, master_key_id: str, wrapped: bytes) -> None:
        self.conn.execute(update(KR).where(KR.c.name == name).values(master_key_id=master_key_id, wrapped=wrapped))

    def subject_keys(self, after_id: int, limit: int) -> list[Row]:
        """(id, collection_id, external_id, wrapped_key, master_key_id) of subjects with id >
        ``after_id``, by id (a master-key rotation pages through them)."""
        q = (select(S.c.id, S.c.collection_id, S.c.external_id, S.c.wrapped_key, S.c.master_key_id)
             .where(S.c.id > after_id).order_by(S.c.id).limit(limit))
        return list(self.conn.execute(q).all())

    def count_subject_keys_by_master(self) -> dict[str, int]:
        q = select(S.c.master_key_id, func.count()).group_by(S.c.master_key_id)
        return {str(k): int(n) for k, n in self.conn.execute(q).all()}

    def set_wrapped_keys(self, rows: Sequence[tuple[int, bytes, str]]) -> None:
        """Replace subjects' wrapped data keys: (subject id, wrapped key, master key id)."""
        if rows:
            stmt = (
                update(S).where(S.c.id == bindparam("b_id")).values(wrapped_key=bindparam("b_w"), master_key_id=bindparam("b_k"))
            )
            self.conn.execute(stmt, [{"b_id": i, "b_w": w, "b_k": k} for i, w, k in rows])

    def count_subjects_total(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(S)).scalar() or 0)

    # --- collections ------------------------------------------------------------------------

    def collection_by_name(self, name: str) -> Row | None:
        return self.conn.execute(_COLLECTION_BY_NAME, {"b_name": name}).first()

    def collection_by_id(self, cid: int) -> Row | None:
        return self.conn.execute(COLLECTION_BY_ID, {"b_cid": cid}).first()

    def collections(self) -> list[Row]:
        return list(self.conn.execute(select(C).order_by(C.c.name)))

    def insert_collection(self, **values: Any) -> int:
        try:
            return _inserted_id(self.conn.execute(insert(C).values(**values)))
        except IntegrityError as exc:
            raise DuplicateRow() from exc

    def update_collection(self, cid: int, **values: Any) -> None:
        self.conn.execute(update(C).where(C.c.id == cid).values(**values))

    def collection_counts(self, cid: int) -> tuple[int, int]:
        n_sub = self.conn.execute(select(func.count()).select_from(S).where(S.c.collection_id == cid)).scalar()
        n_tpl = self.conn.execute(select(func.count()).select_from(T).where(T.c.collection_id == cid)).scalar()
        return int(n_sub or 0), int(n_tpl or 0)

    def delete_collection(self, cid: int) -> None:
        """Delete a collection and everything in it (templates, consents, subjects with their keys)."""
        self.conn.execute(delete(T).where(T.c.collection_id == cid))
        self.conn.execute(delete(K).where(K.c.subject_id.in_(select(S.c.id).where(S.c.collection_id == cid))))
        self.conn.execute(delete(S).where(S.c.collection_id == cid))
        self.conn.execute(delete(C).where(C.c.id == cid))

    # --- subjects ---------------------------------------------------------------------------

    def subject(self, cid: int, external_id: str) -> Row | None:
        return self.conn.execute(select(S).where(S.c.collection_id == cid, S.c.external_id == external_id)).first()

    def subjects_by_ids(self, sids: Sequence[int]) -> list[Row]:
        if not sids:
            return []
        return list(self.conn.execute(select(S).where(S.c.id.in_(list(sids)))))

    def subject_ids(self, cid: int) -> list[int]:
        return [r[0] for r in self.conn.execute(select(S.c.id).where(S.c.collection_id == cid))]

    def insert_subject(self, **values: Any) -> int:
        try:
            return _inserted_id(self.conn.execute(insert(S).values(**values)))
        except IntegrityError as exc:
            raise DuplicateRow() from exc

    def insert_subjects_many(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            try:
                self.conn.execute(insert(S), rows)
            except IntegrityError as exc:
                raise DuplicateRow() from exc

    def subjects_by_external(self, cid: int, external_ids: Sequence[str]) -> dict[str, Row]:
        out: dict[str, Row] = {}
        ids = list(external_ids)
        for start in range(0, len(ids), 500):
            q = select(S).where(S.c.collection_id == cid, S.c.external_id.in_(ids[start : start + 500]))
            out.update({r.external_id: r for r in self.conn.execute(q)})
        return out

    def update_subject(self, sid: int, **values: Any) -> None:
        self.conn.execute(update(S).where(S.c.id == sid).values(**values))

    def touch_subjects(self, sids: Iterable[int], now: dt.datetime) -> None:
        ids = sorted(set(sids))
        if ids:
            self.driver(_TOUCH_RAW, {"b_sids": ids, "b_now": now})

    def delete_subject(self, sid: int) -> tuple[int, int]:
        """Delete the subject, its templates, consents and wrapped key. Returns (templates, consents)."""
        n_t = self.conn.execute(delete(T).where(T.c.subject_id == sid)).rowcount
        n_c = self.conn.execute(delete(K).where(K.c.subject_id == sid)).rowcount
        self.conn.execute(delete(S).where(S.c.id == sid))
        return int(n_t or 0), int(n_c or 0)

    def list_subjects(
        self, cid: int, *, limit: int, offset: int, purpose: str | None, now: dt.datetime, after: str | None = None
    ) -> list[Row]:
        q = select(S).where(S.c.collection_id == cid)
        if purpose is not None:
            q = q.where(exists().where(K.c.subject_id == S.c.id, *active_consent(purpose, now)))
        if after is not None:
            q = q.where(S.c.external_id > after)
        return list(self.conn.execute(q.order_by(S.c.external_id).limit(limit).offset(offset)))

    def count_subjects(self, cid: int, purpose: str | None, now: dt.datetime) -> int:
        q = select(func.count()).select_from(S).where(S.c.collection_id == cid)
        if purpose is not None:
            q = q.where(exists().where(K.c.subject_id == S.c.id, *active_consent(purpose, now)))
        return int(self.conn.execute(q).scalar() or 0)

    def purge_candidates(self, cid: int, retention_days: int, now: dt.datetime) -> list[tuple[int, str, str]]:
        """(subject id, external id, reason) for subjects past retention or without active consent."""
        cutoff = now - dt.timedelta(days=retention_days)
        out: list[tuple[int, str, str]] = []
        for sid, ext in self.conn.execute(
            select(S.c.id, S.c.external_id).where(S.c.collection_id == cid, S.c.last_seen_at < cutoff)
        ):
            out.append((sid, ext, "retention"))
        seen = {o[0] for o in out}
        no_consent = select(S.c.id, S.c.external_id).where(
            S.c.collection_id == cid, ~exists().where(K.c.subject_id == S.c.id, *active_consent(None, now))
        )
        for sid, ext in self.conn.execute(no_consent):
            if sid not in seen:
                out.append((sid, ext, "no_active_consent"))
        return out

    def purge_reason(self, sid: int, retention_days: int, now: dt.datetime) -> str | None:
        """Re-check (inside the erasing transaction) why a subject is due, or None if no longer."""
        row = self.conn.execute(select(S.c.last_seen_at).where(S.c.id == sid)).first()
        if row is None:
            return None
        if row.last_seen_at < now - dt.timedelta(days=retention_days):
            return "retention"
        active = self.conn.execute(select(exists().where(K.c.subject_id == sid, *active_consent(None, now)))).scalar()
        return None if active else "no_active_consent"

    # --- consents ---------------------------------------------------------------------------

    def insert_consents(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(insert(K), rows)

    def consents_of(self, sids: Sequence[int]) -> list[Row]:
        if not sids:
            return []
        return list(self.conn.execute(select(K).where(K.c.subject_id.in_(list(sids))).order_by(K.c.id)))

    def collection_consents(self, cid: int) -> list[Row]:
        q = (
            select(K.c.subject_id, K.c.purpose, K.c.granted_at, K.c.expires_at, K.c.withdrawn_at)
            .join(S, S.c.id == K.c.subject_id)
            .where(S.c.collection_id == cid)
        )
        return list(self.conn.execute(q).all())

    def withdraw_consents(self, sid: int, purposes: Sequence[str] | None, now: dt.datetime) -> int:
        q = update(K).where(K.c.subject_id == sid, K.c.withdrawn_at.is_(None))
        if purposes is not None:
            q = q.where(K.c.purpose.in_(list(purposes)))
        return int(self.conn.execute(q.values(withdrawn_at=now)).rowcount or 0)

    def identification_reads(self, cid: int, sids: Sequence[int], purpose: str, now: dt.datetime,
                             limit: int) -> IdentificationReads:
        """The stored row of collection ``cid``; of the identification's hits ``sids`` (best
        first), the first ``limit`` whose consent covers ``purpose`` at ``now`` in the database,
        their last_seen_at set to ``now`` (retention counts from the last use); and the audit
        head, locked (:meth:`audit_head`). A store that can pipelines them: one round trip."""
        first = list(sids[:limit])
        params = {"b_sids": first, "b_now": now, "b_purpose": purpose}
        seen = {r[0] for r in self.driver(_TOUCH_CONSENTED_RAW, params)} if first else set()
        if len(seen) < len(first) and len(sids) > limit:  # a consent lapsed since the search: later hits move up
            ok = self.active_consent_subjects(sids[limit:], purpose, now)
            later = [s for s in sids[limit:] if s in ok][: len(first) - len(seen)]
            self.touch_subjects(later, now)
            seen.update(later)
        col = self.driver(COLLECTION_BY_ID_RAW, {"b_cid": cid})
        return IdentificationReads(col[0] if col else None, [s for s in sids if s in seen], self.audit_head(lock=True))

    def active_consent_subjects(self, sids: Sequence[int], purpose: str | None, now: dt.datetime) -> set[int]:
        """Which of ``sids`` have an active consent for ``purpose`` (None: for any purpose)."""
        if not sids:
            return set()
        q, params = (_ACTIVE_ANY_RAW, {}) if purpose is None else (_ACTIVE_FOR_RAW, {"b_purpose": purpose})
        return {r[0] for r in self.driver(q, {"b_sids": list(sids), "b_now": now, **params})}

    # --- templates --------------------------------------------------------------------------

    def insert_template(self, **values: Any) -> int:
        return _inserted_id(self.conn.execute(insert(T).values(**values)))

    def insert_templates_many(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(insert(T), rows)

    def count_templates(self, sid: int) -> int:
        return int(self.conn.execute(select(func.count()).select_from(T).where(T.c.subject_id == sid)).scalar() or 0)

    def templates_meta(self, sid: int) -> list[Row]:
        q = select(T.c.id, T.c.model_id, T.c.created_at, T.c.quality).where(T.c.subject_id == sid).order_by(T.c.id)
        return list(self.conn.execute(q))

    def template_ids_of(self, sids: Sequence[int]) -> list[tuple[int, int]]:
        """(template id, subject id) pairs."""
        if not sids:
            return []
        return [(r[0], r[1]) for r in self.conn.execute(select(T.c.id, T.c.subject_id).where(T.c.subject_id.in_(list(sids))))]

    def template_ciphertexts(self, tids: Sequence[int]) -> list[Row]:
        if not tids:
            return []
        out: list[Row] = []
        tids = list(tids)
        for start in range(0, len(tids), 500):
            q = select(T.c.id, T.c.subject_id, T.c.model_id, T.c.nonce, T.c.ciphertext).where(
                T.c.id.in_(tids[start : start + 500])
            )
            out.extend(self.conn.execute(q))
        return out

    def collection_templates(self, cid: int) -> Iterator[tuple[int, int, str, bytes, bytes]]:
        """Every template of a collection as (id, subject id, model id, nonce, ciphertext),
        ordered by subject (streamed: a million rows never sit in memory twice)."""
        for part in self.collection_template_chunks(cid):
            yield from part

    def collection_template_chunks(self, cid: int, chunk: int = 20_000) -> Iterator[list[tuple[int, int, str, bytes, bytes]]]:
        """``collection_templates`` in lists of up to ``chunk`` rows (faster bulk loading)."""
        q = (
            select(T.c.id, T.c.subject_id, T.c.model_id, T.c.nonce, T.c.ciphertext)
            .where(T.c.collection_id == cid)
            .order_by(T.c.subject_id, T.c.id)
            .execution_options(yield_per=chunk)
        )
        for part in self.conn.execute(q).partitions(chunk):
            yield [tuple(r) for r in part]

    def collection_subjects(self, cid: int) -> list[Row]:
        q = select(S.c.id, S.c.external_id, S.c.label, S.c.wrapped_key).where(S.c.collection_id == cid)
        return list(self.conn.execute(q).all())

    # --- change feed ------------------------------------------------------------------------

    def add_change(self, cid: int, sid: int | None, op: str, now: dt.datetime) -> None:
        self.conn.execute(insert(CH).values(collection_id=cid, subject_id=sid, op=op, at=now))

    def add_changes_many(self, cid: int, sids: Sequence[int], op: str, now: dt.datetime) -> None:
        if sids:
            self.conn.execute(insert(CH), [dict(collection_id=cid, subject_id=s, op=op, at=now) for s in sids])

    def max_seq(self) -> int:
        return int(self.conn.execute(MAX_SEQ).scalar() or 0)

    def changes_since(self, seq: int, upto: int) -> list[Row]:
        q = select(CH.c.seq, CH.c.collection_id, CH.c.subject_id, CH.c.op).where(CH.c.seq > seq, CH.c.seq <= upto)
        return list(self.conn.execute(q.order_by(CH.c.seq)))

    def prune_changes(self, before: dt.datetime) -> int:
        """Drop feed rows older than ``before``; processes further behind rebuild their index."""
        last = self.conn.execute(select(func.max(CH.c.seq)).where(CH.c.at < before)).scalar()
        if not last:
            return 0
        n = self.conn.execute(delete(CH).where(CH.c.seq <= last)).rowcount
        mark = int(self.get_meta("changes_pruned_through") or 0)
        self.set_meta("changes_pruned_through", str(max(mark, int(last))))
        return int(n or 0)

    def pruned_through(self) -> int:
        return int(self.get_meta("changes_pruned_through") or 0)

    # --- audit ------------------------------------------------------------------------------

    def audit_head(self, *, lock: bool = False) -> tuple[int, str]:
        rows = self.driver(HEAD_LOCKED_RAW if lock else _HEAD_RAW, {})
        if not rows:
            raise AuditTamperedError(
                "the audit log's head row is missing: the audit table was tampered with; audited "
                "operations are refused until the database is restored (run 'facegate audit verify')"
            )
        return int(rows[0][0]), str(rows[0][1])

    def append_audit(self, row: dict[str, Any]) -> None:
        params = audit_params(row)
        self.driver(_APPEND_AUDIT_RAW, params)
        self.driver(_MOVE_HEAD_RAW, params)

    def audit_rows(self, *, after_seq: int = 0, batch: int = 5000) -> Iterator[Row]:
        last = after_seq
        while True:
            rows = list(self.conn.execute(select(A).where(A.c.seq > last).order_by(A.c.seq).limit(batch)))
            if not rows:
                return
            yield from rows
            last = rows[-1].seq

    # --- audit archival (the oldest events moved out to files; see audit.py) -------------------

    def audit_anchor(self) -> Row | None:
        """The newest ``audit_archives`` row (the chain's anchor), or None if nothing was archived."""
        return self.conn.execute(select(AARCH).order_by(AARCH.c.last_seq.desc()).limit(1)).first()

    def audit_archives(self) -> list[Row]:
        return list(self.conn.execute(select(AARCH).order_by(AARCH.c.last_seq)))

    def audit_archive_cut(self, after_seq: int, before: dt.datetime) -> int:
        """The last seq of the longest run of events after ``after_seq`` that are all older than
        ``before`` (a contiguous prefix of the chain; ``after_seq`` when there is none)."""
        first_new = self.conn.execute(select(func.min(A.c.seq)).where(A.c.seq > after_seq, A.c.ts >= before)).scalar()
        if first_new is not None:
            return int(first_new) - 1
        return max(after_seq, int(self.conn.execute(select(func.max(A.c.seq))).scalar() or 0))

    def audit_range_summary(self, first_seq: int, last_seq: int) -> tuple[int, Row | None, Row | None]:
        """(count, first row, last row) of the stored events with ``first_seq <= seq <= last_seq``."""
        n = self.conn.execute(select(func.count()).select_from(A).where(A.c.seq >= first_seq, A.c.seq <= last_seq)).scalar()
        first = self.conn.execute(select(A).where(A.c.seq == first_seq)).first()
        last = self.conn.execute(select(A).where(A.c.seq == last_seq)).first()
        return int(n or 0), first, last

    def insert_audit_archive(self, **values: Any) -> None:
        self.conn.execute(insert(AARCH).values(**values))

    def delete_audit_through(self, first_seq: int, last_seq: int) -> int:
        """Delete archived events (the triggers refuse any seq above the newest anchor row)."""
        return int(self.conn.execute(delete(A).where(A.c.seq >= first_seq, A.c.seq <= last_seq)).rowcount or 0)

    def audit_query(
        self,
        *,
        collection: str | None,
        subject: str | None,
        action: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Row]:
        q = select(A)
        if collection is not None:
            q = q.where(A.c.collection == collection)
        if action is not None:
            q = q.where(or_(A.c.action == action, A.c.action.like(f"{action}.%")))
        if since is not None:
            q = q.where(A.c.ts >= since)
        if until is not None:
            q = q.where(A.c.ts < until)
        if before_seq is not None:
            q = q.where(A.c.seq < before_seq)
        q = q.order_by(A.c.seq.desc())
        if subject is None:
            return list(self.conn.execute(q.limit(limit)))
        # Subjects are a JSON list: filter in Python (portable), scanning newest first.
        out: list[Row] = []
        for row in self.conn.execute(q.execution_options(yield_per=2000)):
            if subject in (row.subjects or []):
                out.append(row)
                if len(out) >= limit:
                    break
        return out

    # --- API keys ---------------------------------------------------------------------------

    def insert_api_key(self, **values: Any) -> int:
        try:
            return _inserted_id(self.conn.execute(insert(KEYS).values(**values)))
        except IntegrityError as exc:
            raise DuplicateRow() from exc

    def api_key_by_prefix(self, prefix: str) -> Row | None:
        return self.conn.execute(select(KEYS).where(KEYS.c.prefix == prefix)).first()

    def api_key_by_name(self, name: str) -> Row | None:
        return self.conn.execute(select(KEYS).where(KEYS.c.name == name)).first()

    def api_keys(self, include_revoked: bool) -> list[Row]:
        q = select(KEYS).order_by(KEYS.c.id)
        if not include_revoked:
            q = q.where(KEYS.c.revoked_at.is_(None))
        return list(self.conn.execute(q))

    def update_api_key(self, kid: int, **values: Any) -> None:
        self.conn.execute(update(KEYS).where(KEYS.c.id == kid).values(**values))

    # --- lease locks ------------------------------------------------------------------------

    def acquire_lock(self, name: str, holder: str, now: dt.datetime, ttl: dt.timedelta) -> bool:
        row = self.conn.execute(select(LOCKS).where(LOCKS.c.name == name)).first()
        if row is None:
            try:
                self.conn.execute(insert(LOCKS).values(name=name, holder=holder, expires_at=now + ttl))
            except IntegrityError:
                return False
            return True
        if row.holder != holder and row.expires_at > now:
            return False
        self.conn.execute(update(LOCKS).where(LOCKS.c.name == name).values(holder=holder, expires_at=now + ttl))
        return True

    def release_lock(self, name: str, holder: str) -> None:
        self.conn.execute(delete(LOCKS).where(LOCKS.c.name == name, LOCKS.c.holder == holder))


class DuplicateRow(Exception):
    """A unique constraint fired (translated by the caller into a specific error)."""

