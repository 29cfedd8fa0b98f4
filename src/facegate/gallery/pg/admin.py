"""Operations on a PostgreSQL gallery: rotate a collection's vector key, and move a whole
gallery from another backend (SQLite) without re-enrolment."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, select, text

from ...liveness import schema as _liveness_schema  # noqa: F401  (its tables join Base.metadata)
from ..crypto import SubjectCipher
from ..errors import CollectionNotFoundError, InvalidArgumentError, StoreError
from ..index import IndexConfig
from ..schema import Base
from ..types import utcnow
from .memory import PgGalleryMemoryIndex
from .rotation import keyring_name
from .store import PgStore, PgStoreTx
from .vectors import copy_rows, vec_table

log = logging.getLogger("facegate.gallery.pg.admin")


def _pg(gallery: Any) -> PgStore:
    if not isinstance(gallery.store, PgStore):
        raise InvalidArgumentError("this operation needs a PostgreSQL gallery (--store postgresql://… or embedded-postgres)")
    return gallery.store


# --- vector key rotation --------------------------------------------------------------------------


def rotate_key(gallery: Any, collection: str, *, actor: str = "library") -> dict[str, Any]:
    """Draw a new rotation for ``collection`` and re-transform every stored search vector in
    place (``R_new · R_oldᵀ``), in one transaction: no re-enrolment, no decryption. The old
    seed is deleted with it. Indexes in memory hold unrotated vectors and are not affected."""
    store = _pg(gallery)
    t0 = time.perf_counter()
    now = utcnow()
    with store.write() as tx:
        col = tx.collection_by_name(collection)
        if col is None:
            raise CollectionNotFoundError(f"no collection named {collection!r}", collection=collection)
        st = tx.vector_state(col.id)
        old_v, new_v = int(st.rotation_version), int(st.rotation_version) + 1
        R_old = tx.rotation(col.id, old_v, st.dim)
        tx.new_rotation_key(col.id, new_v, now)
        R_new = tx.rotation(col.id, new_v, st.dim)
        M_T = (R_new.astype(np.float64) @ R_old.T.astype(np.float64)).T.astype(np.float32)  # rows: V_new = V_old · Mᵀ
        tx.conn.exec_driver_sql(f"CREATE TEMP TABLE fg_rot (LIKE {vec_table(col.id)}) ON COMMIT DROP")
        n = 0
        for tids, sids, V in tx.stream_vectors(col.id):
            tx.copy_in(
                "COPY fg_rot (template_id, subject_id, embedding) FROM STDIN (FORMAT BINARY)", copy_rows(tids, sids, V @ M_T)
            )
            n += len(tids)
        tx.conn.exec_driver_sql(
            f"UPDATE {vec_table(col.id)} v SET embedding = r.embedding FROM fg_rot r WHERE v.template_id = r.template_id"
        )
        tx.update_vector_state(col.id, rotation_version=new_v)
        tx.execute(
            delete(Base.metadata.tables["keyring"]).where(Base.metadata.tables["keyring"].c.name == keyring_name(col.id, old_v))
        )
        gallery.audit.append(
            tx,
            actor=actor,
            action="collection.vector_key_rotate",
            now=now,
            collection=collection,
            decision="rotated",
            details={"version": new_v, "vectors": n},
        )
    store.rotations.forget(col.id)
    store.schedule_vacuum([vec_table(col.id)])  # the old coordinates' dead tuples
    return {"collection": collection, "version": new_v, "vectors": n, "seconds": round(time.perf_counter() - t0, 3)}


# --- moving a gallery between backends ------------------------------------------------------------


def migrate_gallery(
    source: Any,
    dest_url: str,
    *,
    data_dir: str | Path,
    sample: int = 200,
    batch: int = 5000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Copy the gallery ``source`` (an open :class:`Gallery`, e.g. the embedded SQLite one)
    into an empty PostgreSQL database, row for row, in one transaction: same ids, same wrapped
    keys and ciphertexts (the master key does not change), the audit chain unchanged, API keys
    included; then build each collection's rotated search copy by decrypting the templates
    once. Verifies table counts, then opens the destination's in-memory index the way a serving
    process does (cold load from the search copy) and checks that it holds every template and
    that, on ``sample`` probes per collection (stored templates plus noise), its exact search
    finds the same best score as a brute-force search over the source's decrypted templates of
    the subjects with an active consent. Raises on any mismatch. Nothing is re-enrolled and no
    image is needed."""
    from . import resolve_url

    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    dest = PgStore(resolve_url(dest_url, data_dir))
    dest.crypto = source.crypto
    try:
        dest.migrate()
        with dest.read() as tx:
            if tx.collections() or tx.get_meta("master_key_id") is not None:
                raise InvalidArgumentError("the destination database already holds a gallery; migrate into an empty one")
        tables = [t for t in Base.metadata.sorted_tables]
        counts: dict[str, int] = {}
        rng = np.random.default_rng(1234)
        now = utcnow()  # the instant whose consents the verification searches under
        probes: dict[int, dict[str, Any]] = {}
        with source.store.read() as stx, dest.write() as dtx:
            for table in tables:
                if table.name == "audit_head":
                    dtx.execute(delete(table))
                skip_keys: set[str] = set()
                if table.name == "meta":
                    skip_keys = {r[0] for r in dtx.execute(select(table.c.key))}
                n = 0
                buf: list[dict[str, Any]] = []
                for row in stx.execute(select(table).execution_options(yield_per=batch)):
                    d = dict(row._mapping)
                    if table.name == "meta" and d["key"] in skip_keys:
                        continue
                    buf.append(d)
                    if len(buf) >= batch:
                        dtx.execute(insert(table), buf)
                        n += len(buf)
                        buf = []
                if buf:
                    dtx.execute(insert(table), buf)
                    n += len(buf)
                counts[table.name] = n
                say(f"copied {n} rows of {table.name}")
            for table in tables:
                pk = list(table.primary_key.columns)
                if len(pk) == 1 and pk[0].autoincrement is True and table.name != "audit_events":
                    dtx.conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{pk[0].name}'), "
                            f"GREATEST((SELECT max({pk[0].name}) FROM {table.name}), 1))"
                        )
                    )
            # Search copies: decrypt each template once, rotate, COPY.
            for col in dtx.collections():
                dtx.create_vector_table(col.id)
                dtx.conn.execute(
                    text("INSERT INTO fg_vector_collections (collection_id, dim, rotation_version) VALUES (:c, :d, 1)"),
                    {"c": col.id, "d": col.embedding_dim},
                )
                dtx.new_rotation_key(col.id, 1, now)
                probes[col.id] = _copy_vectors(source, stx, dtx, col, rng, sample, batch, now)
                say(f"collection {col.name}: {probes[col.id]['vectors']} search vectors")
        # Verification on committed data.
        report = _verify(source, dest, probes, now)
        report.update(counts=counts, seconds=round(time.perf_counter() - t0, 3))
        say(f"verified: {report['probes']} probes, max score difference {report['max_score_diff']:.2e}")
        return report
    finally:
        dest.close()


def _copy_vectors(
    source: Any, stx: Any, dtx: PgStoreTx, col: Any, rng: np.random.Generator, sample: int, batch: int, now: dt.datetime
) -> dict[str, Any]:
    subjects = {r.id: r for r in stx.collection_subjects(col.id)}
    n_tpl = stx.collection_counts(col.id)[1]
    pick = set(rng.choice(n_tpl, min(sample, n_tpl), replace=False).tolist()) if n_tpl else set()
    Q: list[np.ndarray] = []
    noise_rng = np.random.default_rng(99)
    tids: list[int] = []
    sids: list[int] = []
    vecs: list[np.ndarray] = []
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    i = 0
    for tid, sid, v in _plaintexts(source, stx, col, subjects):
        if i in pick:
            q = v + noise_rng.standard_normal(v.shape).astype(np.float32) / np.sqrt(len(v))
            Q.append(q / np.linalg.norm(q))
        i += 1
        tids.append(tid)
        sids.append(sid)
        vecs.append(v)
        if len(tids) >= batch:
            pending.append((np.array(tids), np.array(sids), np.stack(vecs)))
            tids, sids, vecs = [], [], []
        if len(pending) >= 4:
            _flush(dtx, col.id, pending)
    if tids:
        pending.append((np.array(tids), np.array(sids), np.stack(vecs)))
    _flush(dtx, col.id, pending)
    info: dict[str, Any] = {"vectors": i, "Q": np.stack(Q) if Q else np.zeros((0, col.embedding_dim), np.float32)}
    # Exact reference over the source's plaintext of the subjects a search may return (streamed
    # again; nothing kept in memory).
    ids = sorted(subjects)
    allowed: set[int] = set()
    for start in range(0, len(ids), 10_000):
        allowed |= stx.active_consent_subjects(ids[start : start + 10_000], None, now)
    Qa = info["Q"]
    best = np.full(len(Qa), -np.inf, np.float32)
    chunk: list[np.ndarray] = []

    def score() -> None:
        np.maximum(best, (Qa @ np.stack(chunk).T).max(1), out=best)
        chunk.clear()

    if len(Qa):
        for _tid, sid, v in _plaintexts(source, stx, col, subjects):
            if sid in allowed:
                chunk.append(v)
            if len(chunk) >= 50_000:
                score()
        if chunk:
            score()
    info["best"] = best
    return info


def _plaintexts(source: Any, stx: Any, col: Any, subjects: dict[int, Any]) -> Iterator[tuple[int, int, np.ndarray]]:
    """(template id, subject id, decrypted vector) of the collection's templates for its pinned
    model, streamed from the source store; each subject's key is unwrapped once."""
    cipher: SubjectCipher | None = None
    cipher_sid = None
    for tid, sid, mid, nonce, ct in stx.collection_templates(col.id):
        if mid != col.model_id or sid not in subjects:
            continue
        if cipher is None or sid != cipher_sid:
            s = subjects[sid]
            cipher, cipher_sid = source.crypto.subject_key(s.wrapped_key, col.id, s.external_id), sid
        yield tid, sid, cipher.decrypt(nonce, ct, mid)


def _flush(dtx: PgStoreTx, cid: int, pending: list) -> None:
    for tids, sids, V in pending:
        dtx.insert_vectors(cid, tids, sids, V)
    pending.clear()


def _verify(source: Any, dest: PgStore, probes: dict[int, dict[str, Any]], now: dt.datetime) -> dict[str, Any]:
    """Table counts, then each collection as a serving process sees it: cold-loaded from the
    search copy into the in-memory index, searched exactly under the consents in force at
    ``now``, against the reference computed from the source."""
    problems: list[str] = []
    with source.store.read() as stx, dest.read() as dtx:
        for table in Base.metadata.sorted_tables:
            if table.name == "meta":
                continue  # the destination adds its own keys
            a = stx.execute(select(func.count()).select_from(table)).scalar()
            q = select(func.count()).select_from(table)
            if table.name == "keyring":  # plus the destination's rotation seeds
                q = q.where(~table.c.name.like("vecrot:%"))
            b = dtx.execute(q).scalar()
            if a != b:
                problems.append(f"{table.name}: {a} rows in the source, {b} in the destination")
        cols = {c.id: c for c in dtx.collections()}
    # Exact search only: the check compares stored vectors, not an approximate index's recall.
    index = PgGalleryMemoryIndex(dest, source.crypto, IndexConfig(exact_max_rows=2**62, background_build=False))
    max_diff = 0.0
    n_probes = 0
    for cid, info in probes.items():
        col = cols[cid]
        idx = index.get(cid, col.embedding_dim, col.model_id)
        if idx.n != info["vectors"]:
            problems.append(f"collection {col.name}: {info['vectors']} templates but {idx.n} loaded from the search copy")
        results = idx.search_many(info["Q"], 1, None, now.timestamp())
        for hits, ref in zip(results, info["best"].tolist()):
            n_probes += 1
            if not hits:
                if ref > -np.inf:
                    problems.append(f"collection {col.name}: a probe found nothing on PostgreSQL")
                continue
            diff = abs(hits[0].score - ref)
            max_diff = max(max_diff, diff)
            if diff > 1e-4:
                problems.append(f"collection {col.name}: best score {hits[0].score:.6f} on PostgreSQL vs {ref:.6f} exact")
        index.drop(cid)
    src_audit = source.audit_verify()
    if problems:
        raise StoreError("migration verification failed: " + "; ".join(problems[:10]))
    return {"ok": True, "probes": n_probes, "max_score_diff": max_diff, "source_audit_head": src_audit.head_mac}
