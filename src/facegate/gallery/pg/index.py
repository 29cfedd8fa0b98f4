"""Vector search inside PostgreSQL (pgvector), with consent filtering in the same query.

(Long by design: a collection's plan choice, background IVFFlat build and probe tuning read and
write one cached vector state, and keeping them in one class keeps the rule that a search never
uses a half-built or untuned index in one place.)

Not the serving path: a PostgreSQL gallery is searched by the same in-memory index as SQLite
(``gallery/index.py``, loaded by ``memory.py``), 40x faster per search at 1M templates
(docs/scale-out.md). This index is used only when asked for with a :class:`PgIndexConfig`:
by the migration's verification (exact search over the copied vectors), by ``facegate pg
reindex`` (an IVFFlat index for ad-hoc SQL over the search copy) and for comparison in the
benchmarks. Nothing is loaded into the process, so it answers at once from a cold start.

Per collection (``fg_vectors_<id>``, rotated vectors, see ``store.py``):

* **Exact** (sequential scan, or index lookups on the allowed subjects) while the collection
  has no IVFFlat index, and whenever the subjects allowed for the purpose are few
  (``small_subset_subjects``): a purpose granted by 1 % of a million subjects scans those
  ~10k templates exactly instead of walking an approximate index that mostly returns
  filtered-out rows.
* **IVFFlat** over ``halfvec(dim)`` (half the size of float32; lists ≈ rows/1000, √rows beyond
  1M; ``index_type="vector"`` for float32) once the collection
  passes ``ann_min_rows``: built with ``CREATE INDEX CONCURRENTLY`` in the background (one
  builder across replicas: an advisory lock), rebuilt when the collection grew
  ``rebuild_growth``-fold. ``ivfflat.probes`` is tuned right after the build until recall@1
  against exact search on self-test probes reaches ``target_recall``. Chosen over HNSW by
  measurement (``../shared/notes/vector-search.md``): HNSW lost rank-1 at 1M with defaults and
  its VACUUM after erasures took minutes; IVFFlat's took about a second.
* **Filtering never costs a result slot**: the consent check is a per-row filter of the same
  query, with ``ivfflat.iterative_scan = relaxed_order`` so the scan continues past filtered-out
  rows until ``LIMIT`` rows pass. Candidates are re-scored with the exact float32 cosine
  (``embedding <=> q``) and de-duplicated per subject, so thresholds apply to true scores.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sqlalchemy import text

from ..errors import StoreError, StoreUnavailableError
from ..index import IndexConfig
from ..ports import Hit
from .vectors import vec_table, vector_literal


class VectorTx(Protocol):
    """What the index reads in one PostgreSQL transaction (``PgStoreTx``)."""

    def execute(self, stmt: Any, *args: Any) -> Any: ...
    def vector_state(self, cid: int) -> Any: ...
    def update_vector_state(self, cid: int, **values: Any) -> None: ...
    def current_rotation(self, cid: int) -> tuple[np.ndarray, Any]: ...
    def subject_search_vectors(self, cid: int, sid: int) -> np.ndarray: ...
    def stream_vectors(self, cid: int, *, chunk: int = 100_000) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]: ...
    def count_vectors(self, cid: int) -> int: ...
    def estimate_vectors(self, cid: int) -> int: ...
    def active_consent_subjects(self, sids: Sequence[int], purpose: str | None, now: dt.datetime) -> set[int]: ...


class VectorStore(Protocol):
    """What the index needs from the PostgreSQL store (``PgStore``, which creates the index)."""

    def read(self) -> AbstractContextManager[VectorTx]: ...
    def write(self) -> AbstractContextManager[VectorTx]: ...
    def search_conn(self) -> AbstractContextManager[Any]: ...
    def autocommit(self) -> AbstractContextManager[Any]: ...

log = logging.getLogger("facegate.gallery.pg.index")


@dataclass(frozen=True)
class PgIndexConfig:
    ann_min_rows: int = 50_000  # below this many templates: exact scans, no IVFFlat index
    index_type: str = "halfvec"  # IVFFlat over halfvec(dim) (half the size) or "vector" (float32)
    small_subset_subjects: int = 10_000  # filtered searches over at most this many subjects run exact
    target_recall: float = 0.99  # recall@1 vs exact on hold-one-out probes (pessimistic: one target each)
    probes: tuple[int, ...] = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
    rescore: int = 64  # candidate templates fetched (then de-duplicated per subject)
    rebuild_growth: float = 4.0  # rebuild (new lists) once the collection grew this much
    self_test_queries: int = 200
    auto_build: bool = True  # build/rebuild in a background thread when a search notices the need
    count_ttl_s: float = 30.0  # cache of allowed-subject counts (plan choice and audit figure)
    seed: int = 1234


def _active_sql(alias: str, purpose: bool, style: str = "named") -> str:
    """SQL for "this consent row is active [for the purpose]" (``style``: SQLAlchemy ``:now``
    or psycopg ``%(now)s`` parameters)."""
    now, p = (":now", ":purpose") if style == "named" else ("%(now)s", "%(purpose)s")
    cond = (f"{alias}.withdrawn_at IS NULL AND {alias}.granted_at <= {now} "
            f"AND ({alias}.expires_at IS NULL OR {alias}.expires_at > {now})")
    return cond + (f" AND {alias}.purpose = {p}" if purpose else "")


def lists_for(rows: int) -> int:
    """pgvector's advice: rows/1000 up to 1M rows, √rows beyond."""
    if rows <= 1_000_000:
        return max(1, rows // 1000)
    return int(math.sqrt(rows))


class PgCollectionIndex:
    """One collection's search in the database. Thread-safe (stateless but for caches)."""

    def __init__(self, parent: PgGalleryIndex, cid: int, dim: int, model_id: str) -> None:
        self.parent = parent
        self.store: VectorStore = parent.store
        self.config: PgIndexConfig = parent.config
        self.collection_id = cid
        self.dim = dim
        self.model_id = model_id
        self.applied_seq = 0
        self._counts: dict[str | None, tuple[float, int]] = {}
        self._counts_lock = threading.Lock()
        self._refreshing: set[str | None] = set()
        self._build_thread: threading.Thread | None = None
        self._checked_at = 0.0
        self._st: tuple[float, Any, np.ndarray] | None = None
        self.last_plan = ""

    # --- allowed-subject counts (plan choice) ---------------------------------------------

    def _count_allowed(self, purpose: str | None, now: dt.datetime) -> int:
        with self.store.read() as tx:
            sql = (f"SELECT count(*) FROM subjects s WHERE s.collection_id = :cid AND EXISTS "
                   f"(SELECT 1 FROM consents k WHERE k.subject_id = s.id AND {_active_sql('k', purpose is not None)})")
            return int(tx.execute(text(sql), {"cid": self.collection_id, "now": now, "purpose": purpose}).scalar() or 0)

    def allowed_subjects(self, purpose: str | None, now: float | dt.datetime) -> int:
        """Subjects whose consent covers ``purpose`` (cached ``count_ttl_s``, refreshed in the
        background once known: a stale figure only affects the plan choice, never the result)."""
        when = now if isinstance(now, dt.datetime) else dt.datetime.fromtimestamp(now, dt.UTC)
        hit = self._counts.get(purpose)
        t = time.monotonic()
        if hit is None:
            n = self._count_allowed(purpose, when)
            self._counts[purpose] = (t, n)
            return n
        if t - hit[0] > self.config.count_ttl_s:
            with self._counts_lock:
                if purpose not in self._refreshing:
                    self._refreshing.add(purpose)
                    threading.Thread(target=self._refresh, args=(purpose, when), daemon=True).start()
        return hit[1]

    def _refresh(self, purpose: str | None, when: dt.datetime) -> None:
        try:
            self._counts[purpose] = (time.monotonic(), self._count_allowed(purpose, when))
        except Exception:  # noqa: BLE001 - keep the old figure
            log.debug("refreshing the allowed count failed", exc_info=True)
        finally:
            with self._counts_lock:
                self._refreshing.discard(purpose)

    def invalidate_counts(self) -> None:
        self._counts.clear()

    # --- search -------------------------------------------------------------------------------

    def _state(self, *, fresh: bool = False) -> Any:
        """The collection's vector state (rotation version, index), cached for a few seconds:
        every search checks the rotation version inside its own statement anyway."""
        t = time.monotonic()
        if fresh or self._st is None or t - self._st[0] > 5.0:
            with self.store.read() as tx:
                R, st = tx.current_rotation(self.collection_id)
            self._st = (t, st, R)
        return self._st[1], self._st[2]

    def search(self, q: np.ndarray, k: int, purpose: str | None, now: float, *,
               exclude_subject: int | None = None, nprobe: int | None = None, mode: str | None = None) -> tuple[list[Hit], int]:
        """Best ``k`` subjects (best template each) whose consent covers ``purpose`` at ``now``
        (epoch seconds; None = any active consent). Returns (hits, allowed subjects).
        ``mode``: force "exact" or "ann" (benchmarks, tests).

        The allowed-subject figure is exact when the allowed set is small (counted by the
        same statement); for large sets it is a count at most ``count_ttl_s`` old."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1)
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        want = k + (1 if exclude_subject is not None else 0)
        for attempt in range(3):
            try:
                st, R = self._state(fresh=attempt > 0)
                hit = self._counts.get(purpose)
                if hit is None:
                    self.allowed_subjects(purpose, when)  # the plan choice needs the figure once
                    hit = self._counts.get(purpose)
                small = hit is None or hit[1] <= self.config.small_subset_subjects
                plan = "exact-small" if small else ("ann" if st.index_name is not None else "exact-large")
                if mode == "exact":
                    plan = "exact-small" if small else "exact-large"
                elif mode == "ann" and st.index_name is not None:
                    plan = "ann"
                probes = int(nprobe or st.probes or 8)
                qr = vector_literal(R @ q)
                n = max(self.config.rescore, 4 * want)
                with self.store.search_conn() as conn:
                    while True:
                        rows, n_allowed, version_ok = self._query(conn, plan, qr, n, purpose, when, exclude_subject, probes,
                                                                  st.rotation_version, st.index_type or "vector", st.dim)
                        best: dict[int, tuple[float, int, str, str | None]] = {}
                        for tid, sid, ext, label, dist in rows:
                            if sid not in best:
                                best[sid] = (1.0 - float(dist), int(tid), ext, label)
                        if len(best) >= want or len(rows) < n or n >= 4096:
                            break
                        n *= 4
                if not version_ok:  # the key was rotated since the state was cached
                    continue
                break
            except StoreUnavailableError:
                if attempt:  # a pooled connection from before a server restart fails once
                    raise
        if n_allowed is None:
            n_allowed = self.allowed_subjects(purpose, when)
        elif plan == "exact-small":
            self._counts[purpose] = (time.monotonic(), n_allowed)
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
        hits = [Hit(sid, ext, label, score, tid) for sid, (score, tid, ext, label) in ranked]
        self._maybe_build(st)
        return hits, n_allowed

    def _query(self, conn: Any, plan: str, qr: str, n: int, purpose: str | None, when: dt.datetime, exclude: int | None,
               probes: int, version: int, index_type: str = "vector", dim: int = 0) -> tuple[list[Any], int | None, bool]:
        """One statement. Returns (rows of template id, subject id, external id, label, cosine
        distance; allowed subjects or None when this plan does not count them; whether the
        rotation version still matched)."""
        t = vec_table(self.collection_id)
        params: dict[str, Any] = {"q": qr, "n": n, "now": when, "purpose": purpose, "cid": self.collection_id,
                                  "ex": exclude, "ver": version}
        excl = " AND v.subject_id <> %(ex)s" if exclude is not None else ""
        guard = "(SELECT rotation_version FROM fg_vector_collections WHERE collection_id = %(cid)s) AS ver"
        active = _active_sql("k", purpose is not None, "pyformat")
        if plan == "ann":
            self.last_plan = f"ivfflat(probes={probes})"
            if conn.info.get("probes") != probes:
                with conn.cursor() as cur:
                    cur.execute(f"SET ivfflat.probes = {int(probes)}")
                conn.info["probes"] = probes
            # A scalar sub-query with LIMIT stays a per-row filter of the index scan (a semi-join
            # would make the planner sort the whole table instead); iterative_scan continues the
            # scan past filtered-out rows.
            # Candidates by the index's own distance (half precision for a halfvec index), then
            # re-scored with the exact float32 cosine, so thresholds apply to true scores.
            order = ("v.embedding <=> CAST(%(q)s AS vector)" if index_type == "vector"
                     else f"CAST(v.embedding AS halfvec({int(dim)})) <=> CAST(%(q)s AS halfvec({int(dim)}))")
            sql = (f"SELECT c.template_id, c.subject_id, s.external_id, s.label, c.embedding <=> CAST(%(q)s AS vector) AS d, "
                   f"NULL AS allowed, {guard} FROM (SELECT v.template_id, v.subject_id, v.embedding FROM {t} v "
                   f"WHERE (SELECT true FROM consents k WHERE k.subject_id = v.subject_id AND {active} LIMIT 1){excl} "
                   f"ORDER BY {order} LIMIT %(n)s OFFSET 0) c JOIN subjects s ON s.id = c.subject_id ORDER BY d")
        elif plan == "exact-large":
            self.last_plan = "exact"
            sql = (f"SELECT c.template_id, c.subject_id, s.external_id, s.label, c.d, NULL AS allowed, {guard} FROM "
                   f"(SELECT v.template_id, v.subject_id, v.embedding <=> CAST(%(q)s AS vector) AS d FROM {t} v "
                   f"WHERE EXISTS (SELECT 1 FROM consents k WHERE k.subject_id = v.subject_id AND {active}){excl} "
                   f"ORDER BY (v.embedding <=> CAST(%(q)s AS vector)) + 0 LIMIT %(n)s) c "
                   f"JOIN subjects s ON s.id = c.subject_id ORDER BY c.d")
        else:
            self.last_plan = "exact"
            # The allowed subjects first (few: an index range of consents by purpose), then their
            # templates by subject id, scored exactly; the count comes with the rows (subjects
            # of other collections with the same purpose drop out at the join).
            sql = (
                f"WITH allowed AS MATERIALIZED (SELECT DISTINCT k.subject_id FROM consents k WHERE {active}), "
                f"r AS MATERIALIZED (SELECT v.template_id, v.subject_id, v.embedding <=> CAST(%(q)s AS vector) AS d FROM {t} v "
                f"WHERE v.subject_id = ANY(ARRAY(SELECT subject_id FROM allowed))) "
                f"SELECT c.template_id, c.subject_id, s.external_id, s.label, c.d, "
                f"(SELECT count(DISTINCT subject_id) FROM r), {guard} "
                f"FROM (SELECT * FROM r v WHERE true{excl} ORDER BY d LIMIT %(n)s) c "
                f"JOIN subjects s ON s.id = c.subject_id ORDER BY c.d"
            )
        with conn.cursor() as cur:
            rows = cur.execute(sql, params).fetchall()
        if rows:
            ok = rows[0][6] == version
            return [tuple(r[:5]) for r in rows], (int(rows[0][5]) if rows[0][5] is not None else None), ok
        with conn.cursor() as cur:
            row = cur.execute(
                f"SELECT (SELECT count(DISTINCT k.subject_id) FROM consents k JOIN subjects s ON s.id = k.subject_id "
                f"WHERE s.collection_id = %(cid)s AND {active}), {guard}",
                params,
            ).fetchone()
        return [], int(row[0] or 0), row[1] == version

    # --- other queries used by Gallery ---------------------------------------------------------

    def search_many(self, queries: np.ndarray, k: int, purpose: str | None, now: float, *,
                    exclude_subjects: Sequence[int | None] | None = None) -> list[list[Hit]]:
        Q = np.asarray(queries, np.float32).reshape(-1, self.dim)
        excl = exclude_subjects if exclude_subjects is not None else [None] * len(Q)
        if len(excl) != len(Q):
            raise ValueError(f"exclude_subjects has {len(excl)} entries for {len(Q)} queries")
        return [self.search(q, k, purpose, now, exclude_subject=e)[0] for q, e in zip(Q, excl)]

    def allowed_subject_ids(self, purpose: str | None, now: float) -> np.ndarray:
        sql = (f"SELECT s.id FROM subjects s WHERE s.collection_id = :cid AND EXISTS "
               f"(SELECT 1 FROM consents k WHERE k.subject_id = s.id AND {_active_sql('k', purpose is not None)}) ORDER BY s.id")
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        with self.store.read() as tx:
            ids = [r[0] for r in tx.execute(text(sql), {"cid": self.collection_id, "now": when, "purpose": purpose})]
        return np.asarray(ids, np.int64)

    def subject_vectors(self, sid: int) -> np.ndarray:
        with self.store.read() as tx:
            return tx.subject_search_vectors(self.collection_id, sid)

    def has_template(self, tid: int) -> bool:
        with self.store.read() as tx:
            return (
                tx.execute(text(f"SELECT 1 FROM {vec_table(self.collection_id)} WHERE template_id = :t"), {"t": tid}).first()
                is not None
            )

    def allowed(self, sid: int, purpose: str | None, now: float) -> bool:
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        with self.store.read() as tx:
            return bool(tx.active_consent_subjects([sid], purpose, when))

    # --- IVFFlat lifecycle --------------------------------------------------------------------

    def _maybe_build(self, st: Any) -> None:
        if not self.config.auto_build:
            return
        t = time.monotonic()
        if t - self._checked_at < 10.0:
            return
        self._checked_at = t
        if self._build_thread is not None and self._build_thread.is_alive():
            return
        try:
            with self.store.read() as tx:
                rows = tx.estimate_vectors(self.collection_id)
        except StoreError:
            return
        need = (st.index_name is None and rows >= self.config.ann_min_rows) or (
            st.index_name is not None and st.index_rows and rows > self.config.rebuild_growth * st.index_rows
        )
        if need:
            self._build_thread = threading.Thread(
                target=self._safe_build, name=f"facegate-ivfflat-{self.collection_id}", daemon=True
            )
            self._build_thread.start()

    def _safe_build(self) -> None:
        try:
            self.build()
        except Exception:  # noqa: BLE001 - exact search keeps working
            log.exception("building the IVFFlat index of collection %s failed; exact search continues", self.collection_id)

    def wait_for_build(self, timeout: float | None = None) -> None:
        t = self._build_thread
        if t is not None:
            t.join(timeout)

    def build(self, *, lists: int | None = None, tune: bool = True, probes: int | None = None) -> dict[str, Any]:
        """(Re)build the IVFFlat index concurrently (searches and writes continue), swap it in,
        then tune ``probes``. Returns build facts. Only one builder per collection across all
        processes (advisory lock); a second caller returns {"skipped": True}."""
        cid = self.collection_id
        t = vec_table(cid)
        lock_key = 4242100 + (zlib.crc32(t.encode()) % 1_000_000)
        with self.store.autocommit() as conn:
            if not conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({lock_key})").scalar():
                return {"skipped": True}
            try:
                rows = int(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() or 0)
                L = int(lists or lists_for(rows))
                old = conn.exec_driver_sql(
                    "SELECT index_name FROM fg_vector_collections WHERE collection_id = %(c)s", {"c": cid}
                ).scalar()
                name = f"{t}_ivf_{int(time.time() * 1000) % 10**10}"
                t0 = time.perf_counter()
                conn.exec_driver_sql("SET maintenance_work_mem = '512MB'")
                kind = self.config.index_type
                dim = int(
                    conn.exec_driver_sql("SELECT dim FROM fg_vector_collections WHERE collection_id = %(c)s", {"c": cid}).scalar()
                )
                expr = (
                    "embedding vector_cosine_ops"
                    if kind == "vector"
                    else f"(CAST(embedding AS halfvec({dim}))) halfvec_cosine_ops"
                )
                conn.exec_driver_sql(f"CREATE INDEX CONCURRENTLY {name} ON {t} USING ivfflat ({expr}) WITH (lists = {L})")
                build_s = time.perf_counter() - t0
                conn.exec_driver_sql(
                    "UPDATE fg_vector_collections SET index_name = %(n)s, index_type = %(k)s, index_lists = %(l)s, "
                    "index_rows = %(r)s, "
                    "built_at = now(), build_seconds = %(b)s, probes = COALESCE(%(p)s, probes, 8) WHERE collection_id = %(c)s",
                    {"n": name, "k": kind, "l": L, "r": rows, "b": build_s, "p": probes, "c": cid},
                )
                if old and old != name:
                    conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {old}")
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({lock_key})")
        facts: dict[str, Any] = {"index": name, "type": kind, "lists": L, "rows": rows, "build_seconds": round(build_s, 3)}
        if tune and probes is None and rows:
            facts.update(self.tune())
        log.info("collection %s: IVFFlat %s", cid, facts)
        return facts

    def drop_index(self) -> None:
        with self.store.autocommit() as conn:
            old = conn.exec_driver_sql(
                "SELECT index_name FROM fg_vector_collections WHERE collection_id = %(c)s", {"c": self.collection_id}
            ).scalar()
            conn.exec_driver_sql(
                "UPDATE fg_vector_collections SET index_name = NULL, index_lists = NULL, index_rows = NULL, "
                "probes = NULL, recall = NULL WHERE collection_id = %(c)s",
                {"c": self.collection_id},
            )
            if old:
                conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {old}")

    def self_test_probes(self, nq: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Hold-one-out probes: (rotated probes, their own template ids to leave out, exact best
        subject ids, exact best scores). A probe is a stored template of a subject that has
        another one — a second photo of an enrolled person, exactly the searches the index must
        serve — and the exact answer is the best of all *other* templates (streamed pass,
        numpy). Collections with one template per subject fall back to a template plus noise
        to cosine ≈ 0.8."""
        nq = nq or self.config.self_test_queries
        rng = np.random.default_rng(self.config.seed)
        t = vec_table(self.collection_id)
        with self.store.read() as tx:
            _R, st = tx.current_rotation(self.collection_id)
            tx.execute(text(f"SELECT setseed({(self.config.seed % 1000) / 1000.0})"))
            src = tx.execute(
                text(
                    f"SELECT v.template_id, v.embedding::real[] FROM {t} v "
                    f"JOIN (SELECT subject_id, min(template_id) AS t0 FROM {t} "
                    f"GROUP BY subject_id HAVING count(*) >= 2 ORDER BY random() LIMIT :n) p ON v.template_id = p.t0"
                ),
                {"n": int(nq)},
            ).all()
            if len(src) >= min(nq, 50):
                own = np.asarray([r[0] for r in src], np.int64)
                Qr = np.asarray([r[1] for r in src], np.float32).reshape(-1, st.dim)
            else:
                src = tx.execute(text(f"SELECT embedding::real[] FROM {t} ORDER BY random() LIMIT :n"), {"n": int(nq)}).all()
                Qr = np.asarray([r[0] for r in src], np.float32).reshape(-1, st.dim)
                Qr += rng.standard_normal(Qr.shape).astype(np.float32) * (0.75 / math.sqrt(st.dim))
                Qr /= np.maximum(np.linalg.norm(Qr, axis=1, keepdims=True), 1e-12)
                own = np.full(len(Qr), -1, np.int64)
            best_s = np.full(len(Qr), -np.inf, np.float32)
            best_sid = np.zeros(len(Qr), np.int64)
            for tids, sids, V in tx.stream_vectors(self.collection_id):
                S = Qr @ V.T
                S[own[:, None] == tids[None, :]] = -np.inf  # leave the probe's own template out
                j = S.argmax(1)
                s = S[np.arange(len(Qr)), j]
                better = s > best_s
                best_s[better], best_sid[better] = s[better], sids[j[better]]
        return Qr, own, best_sid, best_s

    def _ann_best(
        self, conn: Any, qr: np.ndarray, probes: int, leave_out: int, index_type: str, dim: int
    ) -> tuple[int, float] | None:
        """Best (subject, exact score) from the IVFFlat candidates, all subjects, one template left out."""
        t = vec_table(self.collection_id)
        order = (
            "v.embedding <=> CAST(%(q)s AS vector)"
            if index_type == "vector"
            else f"CAST(v.embedding AS halfvec({int(dim)})) <=> CAST(%(q)s AS halfvec({int(dim)}))"
        )
        if conn.info.get("probes") != probes:
            with conn.cursor() as cur:
                cur.execute(f"SET ivfflat.probes = {int(probes)}")
            conn.info["probes"] = probes
        with conn.cursor() as cur:
            row = cur.execute(
                f"SELECT c.subject_id, 1 - (c.embedding <=> CAST(%(q)s AS vector)) AS s "
                f"FROM (SELECT v.subject_id, v.embedding FROM {t} v "
                f"WHERE v.template_id <> %(t)s ORDER BY {order} LIMIT %(n)s OFFSET 0) c ORDER BY s DESC LIMIT 1",
                {"q": vector_literal(qr), "t": int(leave_out), "n": self.config.rescore},
            ).fetchone()
        return None if row is None else (int(row[0]), float(row[1]))

    def tune(self, target: float | None = None) -> dict[str, Any]:
        """Smallest ``probes`` whose recall@1 vs exact — the exact best subject, or its score —
        reaches ``target`` on hold-one-out self-test probes."""
        target = target or self.config.target_recall
        t0 = time.perf_counter()
        Q, own, best_sid, best_s = self.self_test_probes()
        with self.store.read() as tx:
            st = tx.vector_state(self.collection_id)
        lists = int(st.index_lists or 1)
        chosen, recall = lists, 1.0
        with self.store.search_conn() as conn:
            for p in [p for p in self.config.probes if p < lists] + [lists]:
                hit = 0
                for i in range(len(Q)):
                    got = self._ann_best(conn, Q[i], p, int(own[i]), st.index_type or "vector", st.dim)
                    # Identification needs the right subject with its true best score (rank-1
                    # and the threshold), not a particular template of it.
                    hit += int(got is not None and (got[0] == best_sid[i] or got[1] >= best_s[i] - 1e-5))
                recall = hit / max(len(Q), 1)
                chosen = p
                if recall >= target:
                    break
        tune_s = time.perf_counter() - t0
        with self.store.write() as tx:
            tx.update_vector_state(self.collection_id, probes=chosen, recall=recall, tune_seconds=tune_s)
        return {"probes": chosen, "self_test_recall_at_1": recall, "tune_seconds": round(tune_s, 3)}

    def stats(self) -> dict[str, Any]:
        with self.store.read() as tx:
            st = tx.vector_state(self.collection_id)
            t = vec_table(self.collection_id)
            n = tx.count_vectors(self.collection_id)
            subjects = int(tx.execute(text(f"SELECT count(DISTINCT subject_id) FROM {t}")).scalar() or 0)
            table_bytes = int(tx.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": t}).scalar() or 0)
            index_bytes = 0
            if st.index_name:
                index_bytes = int(
                    tx.execute(text("SELECT pg_relation_size(CAST(:t AS regclass))"), {"t": st.index_name}).scalar() or 0
                )
        return {
            "templates": n,
            "subjects": subjects,
            "mode": f"ivfflat-{st.index_type or 'vector'}" if st.index_name else "exact",
            "backend": "postgresql",
            "nlist": st.index_lists,
            "nprobe": st.probes,
            "self_test_recall_at_1": st.recall if st.index_name else 1.0,
            "trained_rows": st.index_rows,
            "rotation_version": st.rotation_version,
            "memory_bytes": 0,
            "table_bytes": table_bytes,
            "index_bytes": index_bytes,
            "ann_build_seconds": st.build_seconds,
            "tune_seconds": st.tune_seconds,
            "load_seconds": 0.0,
            "applied_seq": 0,
        }


class PgGalleryIndex:
    """Drop-in for ``GalleryIndex``: ``get()``, ``sync()`` (a no-op), ``drop()``, ``loaded()``."""

    def __init__(self, store: VectorStore, config: IndexConfig | PgIndexConfig | None = None) -> None:
        self.store = store
        if isinstance(config, PgIndexConfig):
            self.config = config
        elif config is not None:  # the in-memory IndexConfig: keep what applies
            self.config = PgIndexConfig(rescore=config.rescore, auto_build=config.background_build)
        else:
            self.config = PgIndexConfig()
        self._cols: dict[int, PgCollectionIndex] = {}
        self._lock = threading.Lock()

    def get(self, collection_id: int, dim: int, model_id: str) -> PgCollectionIndex:
        idx = self._cols.get(collection_id)
        if idx is None:
            with self._lock:
                idx = self._cols.setdefault(collection_id, PgCollectionIndex(self, collection_id, dim, model_id))
        return idx

    def loaded(self) -> list[PgCollectionIndex]:
        return list(self._cols.values())

    def drop(self, collection_id: int) -> None:
        with self._lock:
            self._cols.pop(collection_id, None)

    def sync(self) -> None:
        """Nothing to do: the database is the index. Plan-choice counts are refreshed so a
        process's own consent changes pick the right plan at once."""
        for c in list(self._cols.values()):
            c.invalidate_counts()
