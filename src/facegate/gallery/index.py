"""In-memory vector index over each collection's decrypted templates.

(Long by design: ``CollectionIndex``'s exact path, approximate path and change-feed updates
share one set of row arrays under one lock, and keeping them in one file keeps those
invariants in one place.)

Design
------
* **One index for both stores.** SQLite and PostgreSQL are searched by this code in every
  process; only the cold load differs (PostgreSQL: ``pg/memory.py`` reads the rotated search
  copy instead of decrypting).
* **Source of truth is the store.** A collection's index is built from the database the first
  time it is searched (decrypting every template), then kept current through the store's
  change feed: before each search, ``GalleryIndex.sync()`` reads ``max(changes.seq)`` (one
  indexed query) and, if another process (or thread) wrote since, reconciles exactly the
  subjects that changed with what the database says now. Every write path (enrol, erase,
  consent, purge) goes through the same feed, so one code path serves this process's own writes
  and the writes of a CLI running beside ``facegate serve``.
* **Exact search** (float32 matrix × probe, numpy) while a collection has at most
  ``exact_max_rows`` templates, or when the rows allowed for the purpose are few.
* **Approximate search** above that: faiss IVF with 4-bit product-quantised fast-scan codes
  (``IVF√n,PQ(d/4)x4fs``, 16 bytes per 128-d template) over template ids, each template filed
  in two lists (its nearest centroid's and a SOAR spill list, ``IvfIndex.assign``), built
  automatically in the background (exact search serves meanwhile). ``nprobe`` and the number
  of candidates re-scored are tuned at build time: the cheapest pair whose recall@1 against
  exact search on self-test probes reaches ``target_recall`` (if none does, the collection
  stays on exact search). The candidates are re-scored exactly with the float32 vectors, so
  thresholds always apply to true cosine scores. Retrained in the background when the
  collection has grown ``rebuild_growth``-fold. (Face probes sit at cosine ≈ 0.6 from their
  match, far from "near duplicate": with one list per template IVF needs to scan 20–45 % of the
  lists for recall@1 ≥ 0.995, with two 12–20 %, which 4-bit fast-scan codes make cheap; HNSW
  graphs lose rank-1 on such data at 1M — see ../shared/notes/vector-search.md.)
* **Snapshots (SQLite store).** After each approximate-index build, and again when the feed
  has moved far enough, the collection is written to an erasure-safe snapshot
  (``snapshot.py``: vectors, both IVF list numbers and PQ codes in AES-GCM blocks that every erasure
  scrubs in place). A cold load reads it instead of decrypting template by template and packs
  the stored codes straight into the IVF lists (no coarse assignment), reads the subjects and
  consents from the store meanwhile (``SubjectTable``), and then replays the feed since the
  snapshot as any sync does.
* **Consent filtering is exact and never costs a result slot.** Each subject slot carries, per
  purpose, the time its consent for that purpose ends (−inf: none). The allowed-row mask for a
  (purpose, now) is computed by one vectorised comparison and cached until the next expiry or
  change. Exact search scores only allowed rows; faiss searches with an ``IDSelectorBitmap`` so
  disallowed templates are skipped inside the scan; small allowed sets go to exact search on
  the subset. The gallery re-checks the returned subjects' consent in the database as well.
* **Batches.** ``search_many`` answers many queries at once (faiss batch search on
  ``batch_threads`` threads, or blocked exact products), each with its own excluded subject:
  de-duplication compares a whole collection against itself this way.
* **Memory.** Per-subject state lives in arrays indexed by slot (subject id → slot, template
  ids grouped by slot, external ids per slot): ~50 bytes per subject plus its external id
  and ~24 per template besides the vector, where dicts, tuples and sets cost ~720 per subject.
* **Thread safety.** faiss indexes must not be modified during a search: every index holds a
  readers-writer lock (searches share it, mutations take it exclusively).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..extras import installed
from .crypto import Crypto, SubjectCipher
from .errors import TemplateIntegrityError
from .ports import Hit, TemplateStore
from .snapshot import BLOCK_SLOTS, SnapshotFiles, SnapshotMeta, SnapshotUnusable

log = logging.getLogger("facegate.gallery.index")


# faiss's OpenMP threads spin-wait after each parallel region by default, burning the other core
# for milliseconds after every search split over two threads (1M templates on PostgreSQL: 7.4
# CPU ms per identification instead of 3.5, with the database server on the same cores); waiting
# passively measured no slower (identify p50 3.9 ms against 4.3). Set before faiss, which loads its
# own libgomp, is first imported; a setting of the caller's wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

NEG_INF = -math.inf
_blas_limited = False
_T = TypeVar("_T")


def _limit_blas(threads: int | None) -> None:
    global _blas_limited
    if threads is None or _blas_limited:
        return
    _blas_limited = True
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads, user_api="blas")
    except Exception:  # noqa: BLE001 - an optimisation only
        log.debug("could not limit BLAS threads", exc_info=True)


@dataclass(frozen=True)
class IndexConfig:
    exact_max_rows: int = 50_000  # above this many templates an approximate index is built
    small_subset_rows: int = 20_000  # filtered searches over at most this many rows run exact
    target_recall: float = 0.995  # recall@1 vs exact that the nprobe self-check must reach
    nprobe_fractions: tuple[float, ...] = (0.05, 0.08, 0.1, 0.12, 0.14, 0.16, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7)
    rescore: int = 128  # approximate candidates re-scored exactly, at least
    # The self-test may re-score up to this many (doubling from ``rescore``) where that is cheaper
    # than probing more lists: the more codes a search scans, the more impostors' 4-bit estimates
    # overtake a true match's. 10M templates (two lists each), 16 % of the lists probed, 3,000
    # hold-one-out probes: recall@1 0.993 re-scoring 128, 0.995 re-scoring 256, 0.996 re-scoring
    # 512, 0.997 re-scoring 1,024.
    rescore_max: int = 1024
    # The self-test's cost of a configuration: codes scanned + this × candidates re-scored (10M,
    # both cores, searches at 12-20 % of the lists and 128-1,024 candidates, least squares: a
    # candidate costs 1.5 us in faiss's top-k and the re-scoring, a scanned code 0.87 ns).
    codes_per_candidate: int = 1750
    # IVF lists = this × √templates (at most 8192). 2.0 measured slower to build everywhere and to
    # search at 1M; at 10M, with two lists per template, more lists searched no faster at equal
    # recall than a training's difference (docs/scale-out.md).
    lists_per_sqrt: float = 1.0
    rebuild_growth: float = 2.0  # retrain once the collection has grown this much since training
    # Probes of the nprobe self-test, in each of its two halves (tune, confirm): its recall is a
    # proportion, so with 200 a gallery whose true recall is 0.99 passed a 0.995 target four times
    # in ten (10M templates: 200 probes passed 30 % and 40 % of the lists; 1,000 probes put
    # recall@1 there at 0.989 and 0.993).
    self_test_queries: int = 1000
    background_build: bool = True  # runtime (re)builds off the search path
    seed: int = 1234
    # faiss's OpenMP threads spin while waiting; on a shared or busy host two of them can make
    # training 10x slower than one. Searches are single-query anyway.
    faiss_threads: int = 1
    # Per-query products are small: a multi-threaded BLAS only adds spin-waiting (measured: a
    # 10k x 128 product took 6.7 ms with 2 OpenBLAS threads on a busy host, 0.1 ms with 1).
    # Applied process-wide (threadpoolctl) when the first index is created; None leaves it.
    blas_threads: int | None = 1
    # Batched searches (search_many) split their queries over this many threads.
    batch_threads: int = 2
    # A single-query search that is the only search of the process in flight splits its probed
    # lists over this many OpenMP threads where it scans at least parallel_min_codes PQ codes
    # (2 cores: 10M templates 7.5 -> 4.5 ms p50; 1M, 400k codes scanned, 1.7 -> 1.2 ms, with
    # a local PostgreSQL server on the same cores too). With other searches in flight each keeps
    # to one thread: they already fill the cores, and more threads than cores only spin.
    search_threads: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    parallel_min_codes: int = 250_000
    # Load from and keep an erasure-safe snapshot of each approximate index (SQLite store).
    snapshot: bool = True
    snapshot_after_changes: int = 100_000  # feed entries after which a new snapshot is written
    # ... or this long after the last one if anything changed: well inside the day the purge keeps
    # of the change feed, so a restart can always replay the feed since the snapshot.
    snapshot_max_age_s: float = 6 * 3600.0


class RWLock:
    """Readers-writer lock, writer-preferring (a waiting writer blocks new readers)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


# --- approximate index ----------------------------------------------------------------------


class _SearchesInFlight:
    """Approximate searches running in this process: a single-query search may use several
    OpenMP threads only while it is the only one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0

    @contextmanager
    def threads(self, wanted: int) -> Iterator[int]:
        """Register a search; yields the threads it may use (``wanted`` if alone, else 1)."""
        with self._lock:
            self._running += 1
            alone = self._running == 1
        try:
            yield wanted if alone else 1
        finally:
            with self._lock:
                self._running -= 1


_IN_FLIGHT = _SearchesInFlight()


class IvfIndex:
    """faiss IVF + 4-bit PQ fast-scan (inner product) keyed by template id: a compact candidate
    generator (16 bytes per 128-d template and list) whose top candidates the caller re-scores
    exactly. Each template is in ``LISTS`` lists (:meth:`assign`). Not thread-safe: callers hold
    the collection's lock."""

    LISTS = 2  # lists each template is filed in (its nearest, and a spill list)
    SPILL_CHOICES = 16  # the spill list is one of the template's nearest this many
    SPILL_WEIGHT = 1.0  # SOAR's lambda: how much a residual parallel to the first one counts

    def __init__(self, dim: int, index: Any, *, nprobe: int = 32, recall: float | None = None, trained_rows: int = 0,
                 trained: bytes = b"", rescore: int = 128) -> None:
        import faiss

        self.faiss = faiss
        self.dim = dim
        self.index = index
        self.nlist = int(index.nlist)
        self.m = int(index.M)
        self.nprobe = nprobe
        self.rescore = rescore  # candidates re-scored exactly, at least (tuned with nprobe)
        self.recall = recall
        self.trained_rows = trained_rows
        self.trained = trained  # the trained, empty index (serialized): what a snapshot stores
        self._gram = self._centroid_products() if index.is_trained else None  # for assign

    @classmethod
    def create(cls, dim: int, n_rows: int, seed: int = 1234, lists_per_sqrt: float = 1.0) -> IvfIndex:
        import faiss

        nlist = int(min(8192, max(32, round(lists_per_sqrt * math.sqrt(n_rows)))))
        m = dim // 4 if dim <= 128 else dim // 8
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{m}x4fs", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
        ivf.cp.niter = 12
        return cls(dim, index)

    @classmethod
    def restore(cls, dim: int, trained: bytes, ids: np.ndarray, lists: np.ndarray, codes: np.ndarray, *,
                nprobe: int, recall: float, trained_rows: int, rescore: int) -> IvfIndex:
        """An index as a snapshot stored it: the trained quantizer and codebooks, and per
        template its ``LISTS`` list numbers (``lists``, one row each) and PQ code, packed into
        the lists directly (no coarse assignment, no encoding)."""
        import faiss

        if lists.ndim != 2 or lists.shape[1] != cls.LISTS:
            raise ValueError(f"snapshot files each template in {lists.shape[1:]} lists, not {cls.LISTS}")
        ann = cls(dim, faiss.deserialize_index(np.frombuffer(trained, np.uint8)), nprobe=nprobe, recall=recall,
                  trained_rows=trained_rows, trained=trained, rescore=rescore)
        ann.file(ids, lists, codes)
        return ann

    def file(self, ids: np.ndarray, lists: np.ndarray, codes: np.ndarray) -> None:
        """File templates ``ids`` with their PQ ``codes`` in their ``lists`` (one row of
        ``LISTS`` each, as :meth:`assign` gives). An empty list takes whole packed blocks; a list
        with entries gets each code packed in place after them (faiss's ``add_entries`` copies
        whole blocks wrongly into a list whose size is a multiple of 512)."""
        faiss = self.faiss
        inv = self.index.invlists
        packer = self.index.get_CodePacker()
        bbs, block, cs = int(packer.nvec), int(packer.block_size), int(packer.code_size)
        entry_lists = lists.ravel()  # entry i: template i // LISTS
        order = np.argsort(entry_lists, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(entry_lists, minlength=self.nlist))))
        for lst in np.flatnonzero(np.diff(bounds)).tolist():
            sel = order[bounds[lst] : bounds[lst + 1]] // self.LISTS
            list_ids = np.ascontiguousarray(ids[sel], np.int64)
            held = int(inv.list_size(lst))
            if held:
                inv.resize(lst, held + len(sel))  # zero-filled
                faiss.rev_swig_ptr(inv.get_ids(lst), held + len(sel))[held:] = list_ids
                blocks = inv.get_codes(lst)
                for i, row in enumerate(sel.tolist()):
                    packer.pack_1_c(faiss.swig_ptr(codes[row]), held + i, blocks)
                continue
            count, nb = len(sel), -(-len(sel) // bbs)
            flat = np.zeros((nb * bbs, cs), np.uint8)
            flat[:count] = codes[sel]
            packed = np.zeros(nb * block, np.uint8)
            for b in range(nb):
                packer.pack_all(faiss.swig_ptr(flat[b * bbs :]), faiss.swig_ptr(packed[b * block :]))
            inv.add_entries(lst, count, faiss.swig_ptr(list_ids), faiss.swig_ptr(packed))
        self.index.ntotal += len(entry_lists)

    def train(self, sample: np.ndarray) -> None:
        self.index.train(np.ascontiguousarray(sample, dtype=np.float32))
        self.trained = self.faiss.serialize_index(self.index).tobytes()
        self._gram = self._centroid_products()

    def _centroid_products(self) -> np.ndarray:
        """The centroids' inner products (nlist²: 40 MB at 10M templates), fixed once trained."""
        centroids = self.index.quantizer.reconstruct_n(0, self.nlist)
        return centroids @ centroids.T

    def list_numbers(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids ascending, the ``LISTS`` lists each is in: one row per id, in no set order)."""
        inv = self.index.invlists
        parts = [self.faiss.rev_swig_ptr(inv.get_ids(lst), inv.list_size(lst)).copy()
                 for lst in range(self.nlist) if inv.list_size(lst)]
        ids = np.concatenate(parts) if parts else np.empty(0, np.int64)
        lists = np.repeat(np.arange(self.nlist, dtype=np.int32), [inv.list_size(lst) for lst in range(self.nlist)])
        order = np.argsort(ids, kind="stable")
        by_id = ids[order].reshape(-1, self.LISTS)
        if not (by_id == by_id[:, :1]).all():
            raise AssertionError("an id is not in exactly LISTS lists")
        return by_id[:, 0].copy(), lists[order].reshape(-1, self.LISTS)

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """The ``LISTS`` lists of each vector, one row each: its nearest centroid's, and a spill
        list chosen as SOAR does (Sun et al., "SOAR: improved indexing for approximate nearest
        neighbor search", NeurIPS 2023). A probe misses a template's first list when the
        template's residual from that centroid points towards the probe; the spill list is the
        near centroid whose residual is short and least parallel to the first residual, so one
        probe seldom misses both. 10M synthetic face templates, 4,000 hold-one-out probes: one
        of the template's lists is among the probe's best 12 % for 99.8 % of them, where one list
        each needs 35 % for 99.7 %; with twice the codes per list, a search at recall@1 0.996
        scans 3.2M codes in 3.4 ms instead of 3.5M in 3.9 (docs/scale-out.md)."""
        X = np.ascontiguousarray(vectors, dtype=np.float32)
        lists = np.empty((len(X), self.LISTS), np.int64)
        if not len(X):
            return lists
        assert self._gram is not None, "assign needs a trained index"
        S, top = self.index.quantizer.search(X, min(self.SPILL_CHOICES, self.nlist))
        lists[:, 0] = top[:, 0]
        # With unit centroids, r = x - s1 c1 (s1 = <x,c1>) and another centroid c (s = <x,c>):
        # |x - s c|^2 = |x|^2 - s^2 and <x - s c, r> = |r|^2 - s <c,r>, <c,r> = s - s1 <c,c1>.
        sq_norm = (X * X).sum(1, keepdims=True)
        s1, s = S[:, :1], S[:, 1:]
        r_sq = np.maximum(sq_norm - s1 * s1, 1e-12)
        c_dot_r = s - s1 * self._gram[top[:, :1], top[:, 1:]]
        loss = sq_norm - s * s + self.SPILL_WEIGHT * (r_sq - s * c_dot_r) ** 2 / r_sq
        lists[:, 1] = top[np.arange(len(X)), 1 + loss.argmin(1)]
        return lists

    def encode(self, vectors: np.ndarray, lists: np.ndarray) -> np.ndarray:
        """The PQ codes of ``vectors`` in ``lists`` (as ``add`` would store them; the codes
        encode the template itself, not a residual, so they are the same in every list)."""
        X = np.ascontiguousarray(vectors, dtype=np.float32)
        lst = np.ascontiguousarray(lists, dtype=np.int64)
        codes = np.empty((len(X), self.index.code_size), np.uint8)
        if len(X):
            self.index.encode_vectors(len(X), self.faiss.swig_ptr(X), self.faiss.swig_ptr(lst), self.faiss.swig_ptr(codes), False)
        return codes

    def prepare(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lists, PQ codes) of ``vectors``, for :meth:`file`."""
        lists = self.assign(vectors)
        return lists, self.encode(vectors, lists[:, 0])

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """File each vector in its ``LISTS`` lists (:meth:`assign`)."""
        if len(ids):
            self.file(np.asarray(ids, np.int64), *self.prepare(vectors))

    def remove(self, ids: np.ndarray) -> None:
        """Remove templates for real (not a tombstone) from all their lists: erased codes do
        not linger in memory."""
        if len(ids):
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            self.index.remove_ids(self.faiss.IDSelectorBatch(len(ids), self.faiss.swig_ptr(ids)))

    def scanned_codes(self, nprobe: int | None = None) -> int:
        """About how many PQ codes one search scans."""
        return self.entries * min(nprobe or self.nprobe, self.nlist) // max(self.nlist, 1)

    def search(self, q: np.ndarray, k: int, bitmap: np.ndarray | None, nbits: int, nprobe: int | None = None,
               threads: int = 1) -> np.ndarray:
        """Template ids of the best ``k`` candidates; ``threads`` > 1 splits the probed lists
        over that many OpenMP threads of the calling thread."""
        params = self.faiss.SearchParametersIVF()
        params.nprobe = min(nprobe or self.nprobe, self.nlist)
        if bitmap is not None:
            sel = self.faiss.IDSelectorBitmap(nbits, self.faiss.swig_ptr(bitmap))
            params.sel = sel
        # faiss takes the fast-scan kernel from the index, not the call: 14 parallelises one
        # query over its lists, the default (0) over queries, 2.4x faster for batches. A call
        # starting meanwhile in another thread may take the other kernel: same results.
        self.index.implem = 14 if threads > 1 else 0
        self.faiss.omp_set_num_threads(max(1, threads))  # the calling thread's setting
        _d, ids = self.index.search(q.reshape(1, -1), k, params=params)
        return ids[0][ids[0] >= 0]

    def search_many(self, Q: np.ndarray, k: int, bitmap: np.ndarray | None, nbits: int, threads: int,
                    nprobe: int | None = None) -> np.ndarray:
        """Template ids ``(n, k)`` of a batch (−1 where fewer passed), best first, on ``threads``
        OpenMP threads of the calling thread (faiss parallelises over queries)."""
        params = self.faiss.SearchParametersIVF()
        params.nprobe = min(nprobe or self.nprobe, self.nlist)
        if bitmap is not None:
            params.sel = self.faiss.IDSelectorBitmap(nbits, self.faiss.swig_ptr(bitmap))
        self.index.implem = 0
        before = self.faiss.omp_get_max_threads()
        self.faiss.omp_set_num_threads(max(1, threads))
        try:
            _d, ids = self.index.search(np.ascontiguousarray(Q, dtype=np.float32), k, params=params)
        finally:
            self.faiss.omp_set_num_threads(before)
        return ids

    @property
    def ntotal(self) -> int:
        """Templates in the index."""
        return int(self.index.ntotal) // self.LISTS

    @property
    def entries(self) -> int:
        """Codes in the lists (``LISTS`` per template)."""
        return int(self.index.ntotal)

    def memory_bytes(self) -> int:
        gram = 0 if self._gram is None else self._gram.nbytes  # the centroids' products
        return self.entries * (self.m // 2 + 8) + self.nlist * self.dim * 4 + gram  # codes + ids (per list) + centroids


# --- one collection -------------------------------------------------------------------------


class _IdMap:
    """Database id -> position (template id -> row, subject id -> slot) as a dense int32 array:
    ids are autoincrement and never reused, so this is compact (a dict of a million entries
    cost ~1 ms of cache misses per query and ~100 bytes per entry)."""

    def __init__(self) -> None:
        self.a = np.full(0, -1, np.int32)

    def _grow(self, t: int) -> None:
        if t >= len(self.a):
            b = np.full(max(t + 1, int(len(self.a) * 1.5) + 1024), -1, np.int32)
            b[: len(self.a)] = self.a
            self.a = b

    def set(self, t: int, r: int) -> None:
        self._grow(t)
        self.a[t] = r

    def get(self, t: int, default: int = -1) -> int:
        return int(self.a[t]) if 0 <= t < len(self.a) and self.a[t] >= 0 else default

    def __contains__(self, t: object) -> bool:
        return isinstance(t, (int, np.integer)) and self.get(int(t)) >= 0

    def __getitem__(self, t: int) -> int:
        r = self.get(int(t))
        if r < 0:
            raise KeyError(t)
        return r

    def pop(self, t: int) -> int | None:
        r = self.get(t)
        if r < 0:
            return None
        self.a[t] = -1
        return r

    def rows(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        out = np.full(len(ids), -1, np.int64)
        ok = (ids >= 0) & (ids < len(self.a))
        out[ok] = self.a[ids[ok]]
        return out

    def bulk(self, tids: np.ndarray, rows: np.ndarray) -> None:
        if len(tids):
            self._grow(int(tids.max()))
            self.a[tids] = rows

    @property
    def nbytes(self) -> int:
        return int(self.a.nbytes)



@dataclass
class _Mask:
    version: int
    valid_until: float
    n_rows: int
    n_subjects: int
    all_rows: bool
    row_ok: np.ndarray | None = None
    _rows: np.ndarray | None = None
    _bitmap: np.ndarray | None = None
    _nbits: int = 0

    def rows(self) -> np.ndarray:
        if self._rows is None:
            self._rows = np.flatnonzero(self.row_ok) if self.row_ok is not None else np.empty(0, np.int64)
        return self._rows


@dataclass
class SubjectState:
    """What the database says about one subject now (None info = erased)."""

    subject_id: int
    info: tuple[str, str | None] | None
    template_ids: set[int] = field(default_factory=set)
    new_vectors: dict[int, np.ndarray] = field(default_factory=dict)
    consents: list[tuple[str, float, float, float | None]] = field(default_factory=list)  # purpose, granted, expires, withdrawn


@dataclass
class SubjectTable:
    """A collection's subjects and active consent grants as arrays: what a cold load needs,
    without a Python object per row where millions are read."""

    ids: np.ndarray  # subject ids (int64)
    external: list[str]  # external id per subject
    labels: dict[int, str]  # subject id -> label, for the subjects that have one
    grants: dict[str, tuple[np.ndarray, np.ndarray]]  # purpose -> (subject ids, expiry epoch s; inf: none)

    @classmethod
    def from_dicts(cls, subjects: dict[int, tuple[str, str | None]],
                   consents: dict[int, list[tuple[str, float, float, float | None]]]) -> SubjectTable:
        """From subject id -> (external id, label) and subject id -> [(purpose, granted,
        expires, withdrawn)]."""
        by_purpose: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for sid, cons in consents.items():
            for purpose, _granted, expires, withdrawn in cons:
                if withdrawn is None:
                    by_purpose[purpose][0].append(sid)
                    by_purpose[purpose][1].append(expires)
        return cls(np.fromiter(subjects, np.int64, count=len(subjects)), [info[0] for info in subjects.values()],
                   {sid: info[1] for sid, info in subjects.items() if info[1] is not None},
                   {p: (np.asarray(a, np.int64), np.asarray(b, np.float64)) for p, (a, b) in by_purpose.items()})


class CollectionIndex:
    """Templates of one collection, exact + approximate search with exact consent filtering."""

    def __init__(self, collection_id: int, dim: int, model_id: str, config: IndexConfig) -> None:
        _limit_blas(config.blas_threads)
        self.collection_id = collection_id
        self.dim = dim
        self.model_id = model_id
        self.config = config
        self.applied_seq = 0
        self.lock = RWLock()
        self.n = 0
        self._X = np.zeros((0, dim), np.float32)
        self._tid = np.zeros(0, np.int64)
        self._rslot = np.zeros(0, np.int32)
        self._row_of = _IdMap()
        # Per subject, by slot (compact: at 10M templates a dict entry, a tuple and a set per
        # subject were the bulk of the process's memory besides the vectors).
        self._n_slots = 0
        self._n_subjects = 0
        self._slot_of = _IdMap()
        self._free: list[int] = []
        self._ext: list[str | None] = []  # external id
        self._labels: dict[int, str] = {}  # the few subjects with a label
        # Template ids per slot as bulk-loaded (grouped by slot: _base_tids[_base_off[s]:_base_off[s+1]]),
        # and the full set for each slot changed since.
        self._base_tids = np.zeros(0, np.int64)
        self._base_off = np.zeros(1, np.int64)
        self._tid_sets: dict[int, set[int]] = {}
        self._expiry: dict[str, np.ndarray] = {}
        self._expiry_any = np.zeros(0, np.float64)
        self._max_tid = 0
        self._version = 0
        self._masks: dict[str | None, _Mask] = {}
        self._mask_lock = threading.Lock()
        self.ann: IvfIndex | None = None
        self._ann_log: list[tuple[str, np.ndarray]] | None = None
        self._ann_thread: threading.Thread | None = None
        self.build_seconds = 0.0
        self.load_seconds = 0.0
        self.loaded_from = "store"  # or "snapshot"
        self._sid_at_slot = np.zeros(0, np.int64)
        # Writes this index's snapshot (set by GalleryIndex where snapshots are kept); the feed
        # position of the last one written or loaded.
        self.persist: Callable[[CollectionIndex], bool] | None = None
        self.snapshot_seq = 0
        self.snapshot_at = time.monotonic()
        self.snapshot_key_id: str | None = None  # the master key the last snapshot's key is wrapped by
        self.snapshot_seconds = 0.0
        self._persist_lock = threading.Lock()
        self._persist_thread: threading.Thread | None = None

    # --- capacity -------------------------------------------------------------------------

    def _reserve_rows(self, need: int) -> None:
        cap = self._X.shape[0]
        if need <= cap:
            return
        new = max(need, int(cap * 1.5) + 1024)
        X = np.zeros((new, self.dim), np.float32)
        X[: self.n] = self._X[: self.n]
        tid = np.zeros(new, np.int64)
        tid[: self.n] = self._tid[: self.n]
        rs = np.zeros(new, np.int32)
        rs[: self.n] = self._rslot[: self.n]
        self._X, self._tid, self._rslot = X, tid, rs

    def _reserve_slots(self, need: int) -> None:
        cap = self._expiry_any.shape[0]
        if need <= cap:
            return
        new = max(need, int(cap * 1.5) + 256)

        def grow(a: np.ndarray) -> np.ndarray:
            b = np.full(new, NEG_INF, np.float64)
            b[:cap] = a
            return b

        self._expiry_any = grow(self._expiry_any)
        self._expiry = {p: grow(a) for p, a in self._expiry.items()}
        sid_at = np.full(new, -1, np.int64)
        sid_at[:cap] = self._sid_at_slot[:cap]
        self._sid_at_slot = sid_at

    # --- mutations (caller holds the write lock) ------------------------------------------

    def _slot(self, sid: int) -> int:
        slot = self._slot_of.get(sid)
        if slot < 0:
            if self._free:
                slot = self._free.pop()
            else:
                slot = self._n_slots
                self._n_slots += 1
                self._reserve_slots(self._n_slots)
                self._ext.append(None)
            self._slot_of.set(sid, slot)
            self._sid_at_slot[slot] = sid
            self._tid_sets[slot] = set()
            self._n_subjects += 1
        return slot

    def _tids_of(self, slot: int) -> set[int]:
        """Template ids of the subject in ``slot``."""
        s = self._tid_sets.get(slot)
        if s is not None:
            return s
        if slot + 1 >= len(self._base_off):
            return set()
        part = self._base_tids[self._base_off[slot] : self._base_off[slot + 1]]
        return {int(t) for t in part[self._row_of.rows(part) >= 0]}  # minus those removed since

    def _tids_to_change(self, slot: int) -> set[int]:
        s = self._tid_sets.get(slot)
        if s is None:
            s = self._tid_sets[slot] = self._tids_of(slot)
        return s

    def _set_consents(self, slot: int, consents: list[tuple[str, float, float, float | None]]) -> None:
        for per_purpose in self._expiry.values():
            per_purpose[slot] = NEG_INF
        self._expiry_any[slot] = NEG_INF
        for purpose, _granted, expires, withdrawn in consents:
            if withdrawn is not None:
                continue
            arr = self._expiry.get(purpose)
            if arr is None:
                arr = self._expiry[purpose] = np.full(self._expiry_any.shape[0], NEG_INF, np.float64)
            arr[slot] = max(arr[slot], expires)
            self._expiry_any[slot] = max(self._expiry_any[slot], expires)

    def _add_rows(self, slot: int, tids: list[int], vectors: np.ndarray) -> None:
        if not tids:
            return
        self._reserve_rows(self.n + len(tids))
        start = self.n
        self._X[start : start + len(tids)] = vectors
        self._tid[start : start + len(tids)] = tids
        self._rslot[start : start + len(tids)] = slot
        self._row_of.bulk(np.asarray(tids, np.int64), np.arange(start, start + len(tids), dtype=np.int32))
        self.n += len(tids)
        self._tids_to_change(slot).update(tids)
        self._max_tid = max(self._max_tid, max(tids))
        ids = np.asarray(tids, np.int64)
        if self.ann is not None:
            self.ann.add(vectors, ids)
        if self._ann_log is not None:
            self._ann_log.append(("add", ids))

    def _remove_rows(self, slot: int, tids: list[int]) -> None:
        if not tids:
            return
        for t in tids:
            r = self._row_of.pop(int(t))
            if r is None:
                continue
            last = self.n - 1
            if r != last:
                self._X[r] = self._X[last]
                self._tid[r] = self._tid[last]
                self._rslot[r] = self._rslot[last]
                self._row_of.set(int(self._tid[r]), r)
            self.n -= 1
        self._X[self.n : self.n + len(tids)] = 0.0  # do not keep erased vectors in spare capacity
        self._tids_to_change(slot).difference_update(tids)
        ids = np.asarray(tids, np.int64)
        if self.ann is not None:
            self.ann.remove(ids)
        if self._ann_log is not None:
            self._ann_log.append(("remove", ids))

    def apply(self, state: SubjectState) -> None:
        """Make this subject match the database (caller holds the write lock)."""
        sid = state.subject_id
        if state.info is None:
            slot = self._slot_of.pop(sid)
            if slot is not None:
                self._remove_rows(slot, sorted(self._tids_of(slot)))
                self._sid_at_slot[slot] = -1
                self._set_consents(slot, [])
                self._free.append(slot)
                self._ext[slot] = None
                self._labels.pop(slot, None)
                self._tid_sets.pop(slot, None)
                self._n_subjects -= 1
        else:
            slot = self._slot(sid)
            self._ext[slot] = state.info[0]
            if state.info[1] is None:
                self._labels.pop(slot, None)
            else:
                self._labels[slot] = state.info[1]
            gone = [t for t in self._tids_of(slot) if t not in state.template_ids]
            self._remove_rows(slot, gone)
            new = [t for t in sorted(state.new_vectors) if t not in self._row_of]
            if new:
                self._add_rows(slot, new, np.stack([state.new_vectors[t] for t in new]))
            self._set_consents(slot, state.consents)
        self._version += 1

    def bulk_load(self, subjects: dict[int, tuple[str, str | None]], tids: np.ndarray, sids: np.ndarray,
                  X: np.ndarray, consents: dict[int, list[tuple[str, float, float, float | None]]]) -> None:
        """:meth:`load_table` from dicts (subject id -> (external id, label), subject id ->
        consents as (purpose, granted, expires, withdrawn))."""
        self.load_table(SubjectTable.from_dicts(subjects, consents), tids, sids, X)

    def load_table(self, table: SubjectTable, tids: np.ndarray, sids: np.ndarray, X: np.ndarray) -> None:
        """Initial fill of an empty index from the store (not yet shared with other threads):
        array operations, no Python work per template."""
        k = len(table.ids)
        sid_arr = np.asarray(table.ids, np.int64)
        self._reserve_slots(k)
        self._n_slots = self._n_subjects = k
        self._slot_of.bulk(sid_arr, np.arange(k, dtype=np.int32))
        self._sid_at_slot[:k] = sid_arr
        self._ext = list(table.external)
        self._labels = {self._slot_of.get(sid): label for sid, label in table.labels.items() if sid in self._slot_of}
        for purpose, (p_sids, p_expires) in table.grants.items():
            slots = self._slot_of.rows(p_sids)
            ok = slots >= 0
            exp = np.asarray(p_expires, np.float64)[ok]
            arr = self._expiry.setdefault(purpose, np.full(self._expiry_any.shape[0], NEG_INF, np.float64))
            np.maximum.at(arr, slots[ok], exp)  # the latest expiry of a purpose granted more than once
            np.maximum.at(self._expiry_any, slots[ok], exp)
        self._X, self._tid = X, tids
        self.n = len(tids)
        self._rslot = self._slot_of.rows(sids).astype(np.int32)
        self._row_of.bulk(tids, np.arange(len(tids), dtype=np.int32))
        self._base_tids = tids[np.argsort(self._rslot, kind="stable")]
        self._base_off = np.concatenate(([0], np.cumsum(np.bincount(self._rslot, minlength=k)))).astype(np.int64)
        self._max_tid = int(tids.max()) if len(tids) else 0
        self._version += 1

    # --- queries (caller holds the read lock) ---------------------------------------------

    def has_template(self, tid: int) -> bool:
        return tid in self._row_of

    def subject_vectors(self, sid: int) -> np.ndarray:
        with self.lock.read():
            slot = self._slot_of.get(sid)
            tids = np.asarray(sorted(self._tids_of(slot)) if slot >= 0 else [], np.int64)
            rows = [r for r in self._row_of.rows(tids).tolist() if r >= 0]
            return self._X[rows].copy() if rows else np.zeros((0, self.dim), np.float32)

    def allowed(self, sid: int, purpose: str | None, now: float) -> bool:
        slot = self._slot_of.get(sid)
        if slot < 0:
            return False
        arr = self._expiry_any if purpose is None else self._expiry.get(purpose)
        return arr is not None and bool(arr[slot] > now)

    def _mask(self, purpose: str | None, now: float) -> _Mask:
        m = self._masks.get(purpose)
        if m is not None and m.version == self._version and now < m.valid_until:
            return m
        arr = self._expiry_any if purpose is None else self._expiry.get(purpose)
        if arr is None or self.n == 0:
            m = _Mask(self._version, math.inf, 0, 0, False)
        else:
            exp = arr[: self._n_slots]
            slot_ok = exp > now
            live = exp[slot_ok]
            valid_until = float(live.min()) if live.size else math.inf
            row_ok = slot_ok[self._rslot[: self.n]]
            n_rows = int(np.count_nonzero(row_ok))
            m = _Mask(self._version, valid_until, n_rows, int(np.count_nonzero(slot_ok)), n_rows == self.n, row_ok)
        with self._mask_lock:
            self._masks[purpose] = m
        return m

    def _bitmap(self, m: _Mask) -> tuple[np.ndarray, int]:
        if m._bitmap is None:
            nbits = self._max_tid + 1
            bits = np.zeros(nbits, bool)
            bits[self._tid[: self.n][m.row_ok]] = True
            m._bitmap, m._nbits = np.packbits(bits, bitorder="little"), nbits
        return m._bitmap, m._nbits

    def allowed_subjects(self, purpose: str | None, now: float) -> int:
        return self._mask(purpose, now).n_subjects

    def _ann_usable(self) -> bool:
        ann = self.ann
        return ann is not None and self.n > self.config.exact_max_rows and (ann.recall or 0.0) >= self.config.target_recall

    def _candidates(self, q: np.ndarray, kt: int, m: _Mask, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, exact scores) of up to ``kt`` best allowed rows."""
        cfg = self.config
        use_ann = self._ann_usable() and m.n_rows > cfg.small_subset_rows
        if use_ann:
            assert self.ann is not None
            bitmap, nbits = (None, 0) if m.all_rows else self._bitmap(m)
            wanted = cfg.search_threads if self.ann.scanned_codes(nprobe) >= cfg.parallel_min_codes else 1
            with _IN_FLIGHT.threads(wanted) as threads:
                ids = self.ann.search(q, max(kt, self.ann.rescore), bitmap, nbits, nprobe, threads)
            ids = np.sort(ids)  # a template found in both its lists, once (np.unique hashes: 40 us, this 9)
            rows = self._row_of.rows(ids[np.concatenate(([True], ids[1:] != ids[:-1]))])
            rows = rows[rows >= 0]
            scores = self._X[rows] @ q
        elif m.all_rows:
            scores = self._X[: self.n] @ q
            rows = None
        elif m.n_rows * 4 <= self.n:
            rows = m.rows()
            scores = self._X[rows] @ q
        else:
            scores = self._X[: self.n] @ q
            assert m.row_ok is not None  # n_rows > 0 here, and every mask with rows has row_ok
            scores[~m.row_ok] = NEG_INF
            rows = None
        top = np.argpartition(-scores, kt - 1)[:kt] if len(scores) > kt else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        picked = top if rows is None else rows[top]
        sc = scores[top]
        keep = sc > NEG_INF
        return np.asarray(picked)[keep], sc[keep]

    def search(self, q: np.ndarray, k: int, purpose: str | None, now: float, *,
               exclude_subject: int | None = None, nprobe: int | None = None) -> tuple[list[Hit], int]:
        """Best ``k`` subjects (best template each) whose consent covers ``purpose`` at ``now``
        (epoch seconds; purpose None = any active consent). Returns (hits, allowed subjects)."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1)
        with self.lock.read():
            m = self._mask(purpose, now)
            if m.n_rows == 0:
                return [], m.n_subjects
            return self._search_one(q, k, m, exclude_subject, nprobe), m.n_subjects

    def _search_one(self, q: np.ndarray, k: int, m: _Mask, exclude_subject: int | None, nprobe: int | None) -> list[Hit]:
        want = k + (1 if exclude_subject is not None else 0)
        kt = min(m.n_rows, max(self.config.rescore, 4 * want))
        while True:
            rows, scores = self._candidates(q, kt, m, nprobe)
            hits = self._best_subjects(rows, scores, k, exclude_subject)
            if len(hits) >= k or kt >= m.n_rows or (self._ann_usable() and kt >= 4096):
                return hits
            kt = min(m.n_rows, kt * 4)

    def _best_subjects(self, rows: np.ndarray, scores: np.ndarray, k: int, exclude_subject: int | None) -> list[Hit]:
        """The best ``k`` subjects among candidate rows sorted by descending exact score."""
        best: dict[int, tuple[float, int, int]] = {}
        slots = self._rslot[rows]
        for r, s, sid, slot in zip(rows.tolist(), scores.tolist(), self._sid_at_slot[slots].tolist(), slots.tolist()):
            if sid == exclude_subject or sid in best:
                continue
            best[sid] = (s, int(self._tid[r]), slot)
            if len(best) == k:
                break
        return [Hit(sid, self._ext[slot] or "", self._labels.get(slot), float(s), t) for sid, (s, t, slot) in best.items()]

    def search_many(self, queries: np.ndarray, k: int, purpose: str | None, now: float, *,
                    exclude_subjects: Sequence[int | None] | None = None) -> list[list[Hit]]:
        """:meth:`search` for a batch of queries (``(n, dim)`` float32): for each, the best ``k``
        subjects allowed for ``purpose`` at ``now``, without ``exclude_subjects[i]``, scored with
        the exact cosine. Candidates come from one batched faiss search (or exact matrix products
        in query blocks) on ``batch_threads`` threads; a query whose candidates held fewer than
        ``k`` subjects is completed by the single-query path, which widens its candidate list."""
        Q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        nq = Q.shape[0]
        if exclude_subjects is not None and len(exclude_subjects) != nq:
            raise ValueError(f"exclude_subjects has {len(exclude_subjects)} entries for {nq} queries")
        excl: Sequence[int | None] = exclude_subjects if exclude_subjects is not None else [None] * nq
        with self.lock.read():
            m = self._mask(purpose, now)
            if m.n_rows == 0 or nq == 0 or k <= 0:
                return [[] for _ in range(nq)]
            kt = min(m.n_rows, max(self.config.rescore, 4 * (k + 1)))
            rows, scores = self._candidates_many(Q, kt, m)
            out = []
            for i in range(nq):
                ok = scores[i] > NEG_INF
                hits = self._best_subjects(rows[i][ok], scores[i][ok], k, excl[i])
                if len(hits) < k and kt < m.n_rows:
                    hits = self._search_one(Q[i], k, m, excl[i], None)
                out.append(hits)
            return out

    def _candidates_many(self, Q: np.ndarray, kt: int, m: _Mask) -> tuple[np.ndarray, np.ndarray]:
        """(rows, exact scores), each ``(n, kt)`` sorted by descending score; missing
        candidates are row 0 with score −inf."""
        cfg = self.config
        if self._ann_usable() and m.n_rows > cfg.small_subset_rows:
            assert self.ann is not None
            bitmap, nbits = (None, 0) if m.all_rows else self._bitmap(m)
            with _IN_FLIGHT.threads(1):
                ids = self.ann.search_many(Q, max(kt, self.ann.rescore), bitmap, nbits, cfg.batch_threads)
            rows = self._row_of.rows(ids.reshape(-1)).reshape(ids.shape)
            missing = rows < 0
            rows[missing] = 0
            scores = np.empty(rows.shape, np.float32)
            block = max(1, (1 << 22) // max(1, kt * self.dim))  # ~16 MB of gathered vectors
            for a in range(0, len(Q), block):
                scores[a : a + block] = np.matmul(self._X[rows[a : a + block]], Q[a : a + block, :, None])[..., 0]
            scores[missing] = NEG_INF
            order = np.argsort(-scores, axis=1, kind="stable")
            return np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)
        subset = None if m.all_rows or m.n_rows * 4 > self.n else m.rows()
        X = self._X[: self.n] if subset is None else self._X[subset]
        row_ok = None if m.all_rows or subset is not None else m.row_ok
        kt = min(kt, X.shape[0])
        rows = np.zeros((len(Q), kt), np.int64)
        scores = np.full((len(Q), kt), NEG_INF, np.float32)
        block = max(1, (1 << 22) // max(1, X.shape[0]))  # ~16 MB of scores per block

        def run(a: int) -> None:
            S = Q[a : a + block] @ X.T
            if row_ok is not None:
                S[:, ~row_ok] = NEG_INF
            top = np.argpartition(-S, kt - 1, axis=1)[:, :kt]  # kt <= S.shape[1]
            sc = np.take_along_axis(S, top, 1)
            order = np.argsort(-sc, axis=1, kind="stable")
            top, sc = np.take_along_axis(top, order, 1), np.take_along_axis(sc, order, 1)
            rows[a : a + block] = top if subset is None else subset[top]
            scores[a : a + block] = sc

        starts = range(0, len(Q), block)
        if cfg.batch_threads > 1 and len(starts) > 1:  # numpy releases the GIL in the products
            with ThreadPoolExecutor(cfg.batch_threads) as pool:
                list(pool.map(run, starts))
        else:
            for a in starts:
                run(a)
        return rows, scores

    def allowed_subject_ids(self, purpose: str | None, now: float) -> np.ndarray:
        """Internal ids (ascending) of the subjects whose consent covers ``purpose`` at ``now``."""
        with self.lock.read():
            arr = self._expiry_any if purpose is None else self._expiry.get(purpose)
            if arr is None:
                return np.empty(0, np.int64)
            ok = arr[: self._n_slots] > now
            return np.sort(self._sid_at_slot[: self._n_slots][ok])

    # --- approximate index lifecycle ------------------------------------------------------

    def needs_ann(self) -> bool:
        if self.n <= self.config.exact_max_rows or not _approximate_installed(self.collection_id, self.n):
            return False
        if self.ann is None:
            return True
        return self.n > self.config.rebuild_growth * max(self.ann.trained_rows, 1)

    def build_ann(self, *, locked: bool) -> IvfIndex:
        """Train and fill an IVF-PQ fast-scan index, tune nprobe against exact search.

        ``locked=False`` (runtime rebuild): reads the live arrays in chunks under the read lock
        while writers continue; their changes are logged and replayed before the swap.
        """
        import faiss

        faiss.omp_set_num_threads(max(1, self.config.faiss_threads))
        t0 = time.perf_counter()
        rng = np.random.default_rng(self.config.seed)
        ctx = _nullcontext if locked else self.lock.read
        with ctx():
            n = self.n
            ann = IvfIndex.create(self.dim, n, self.config.seed, self.config.lists_per_sqrt)
            n_train = min(n, max(40 * ann.nlist, 20_000))
            sample = self._X[rng.choice(n, n_train, replace=False)] if n_train < n else self._X[:n].copy()
            tids = self._tid[:n].copy()
            if not locked:
                self._ann_log = []
        ann.train(sample)
        del sample
        chunk = 100_000
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for start in range(0, len(tids), chunk):
            with ctx():
                part = tids[start : start + chunk]
                rows = self._row_of.rows(part)
                ok = rows >= 0
                vecs = self._X[rows[ok]].copy()
            parts.append((part[ok], *ann.prepare(vecs)))
        # at once, so that every list is filled whole blocks at a time
        ann.file(*(np.concatenate(column) for column in zip(*parts, strict=True)))
        del parts
        ann.trained_rows = len(tids)
        self._tune(ann, rng, ctx)
        if not locked:
            with self.lock.write():
                # Replay what changed while building: every touched id ends up as the arrays say.
                touched = sorted({int(t) for _op, ids in (self._ann_log or []) for t in ids.tolist()})
                if touched:
                    ann.remove(np.asarray(touched, np.int64))
                    present = np.asarray([t for t in touched if t in self._row_of], np.int64)
                    if len(present):
                        ann.add(self._X[self._row_of.rows(present)], present)
                self._ann_log = None
                self.ann = ann
                self._version += 1
        else:
            self.ann = ann
        self.build_seconds = time.perf_counter() - t0
        log.info("collection %s: IVF-PQfs nlist=%d nprobe=%d rescore=%d recall@1=%.4f over %d rows in %.1fs",
                 self.collection_id, ann.nlist, ann.nprobe, ann.rescore, ann.recall or 0, ann.ntotal, self.build_seconds)
        return ann

    def _tune(self, ann: IvfIndex, rng: np.random.Generator, ctx: Any) -> None:
        """Pick the cheapest (nprobe, candidates re-scored) whose recall@1 (vs exact) meets the
        target; cost = codes scanned + ``codes_per_candidate`` × candidates. The probes are split
        in two: a pair that passes on the first half is tried on the second, the cheapest pair
        that passes both is kept, and the second half's recall is the one reported (the
        cheapest of many pairs to pass on one sample is the likeliest to have passed by chance).

        A probe of a subject with another template is one of its stored templates, held out (its
        own row excluded): a real second photo against the subject's other templates. A
        single-template subject's probe is its template plus isotropic noise to cosine ≈ 0.75.
        Reads the live arrays under short read-lock holds, so writers (and the searches queued
        behind them) never wait for the whole tuning.
        """
        with ctx():
            n = self.n
            nq = min(2 * self.config.self_test_queries, n)
            src_rows = rng.choice(n, nq, replace=False)
            Q = self._X[src_rows].copy()
            src_tids = self._tid[src_rows].copy()
            # Hold-one-out where the subject has another template: the query is a real sample
            # of an enrolled person and its own row is excluded — a fresh photo against the gallery.
            loo = np.array([len(self._tids_of(int(slot))) >= 2 for slot in self._rslot[src_rows]])
        noisy = ~loo
        if noisy.any():  # single-template subjects: the template plus noise to cosine ≈ 0.75
            noise = rng.standard_normal((int(noisy.sum()), self.dim)).astype(np.float32) * (0.88 / math.sqrt(self.dim))
            Q[noisy] += noise
            Q[noisy] /= np.linalg.norm(Q[noisy], axis=1, keepdims=True)
        exclude = np.where(loo, src_tids, -1)
        best_s = np.full(nq, NEG_INF, np.float32)
        for start in range(0, n, 65_536):
            with ctx():
                stop = min(self.n, start + 65_536)
                if stop <= start:
                    break
                S = Q @ self._X[start:stop].T
                tids = self._tid[start:stop].copy()
            for qi in np.flatnonzero(loo & (src_rows >= start) & (src_rows < stop)):
                c = int(src_rows[qi]) - start
                if tids[c] == exclude[qi]:
                    S[qi, c] = NEG_INF
            j = S.argmax(1)
            sc = S[np.arange(nq), j]
            better = sc > best_s
            best_s[better] = sc[better]
        cfg = self.config
        ks = [cfg.rescore]
        while ks[-1] * 2 <= cfg.rescore_max:
            ks.append(ks[-1] * 2)
        tune, confirm = slice(0, nq // 2), slice(nq // 2, nq)
        n_tune, n_confirm = max(nq // 2, 1), max(nq - nq // 2, 1)
        best: tuple[int, int, int, float] | None = None  # (cost, nprobe, re-scored, recall on the second half)
        recall = 0.0  # the best the first half saw, for the log if nothing passes
        for nprobe in sorted({max(1, min(ann.nlist, round(f * ann.nlist))) for f in cfg.nprobe_fractions} | {ann.nlist}):
            cost = {k: ann.scanned_codes(nprobe) + cfg.codes_per_candidate * k for k in ks}
            if best is not None and cost[ks[0]] >= best[0]:
                break  # scans more than the best pair costs in all
            hits = self._self_test_hits(ann, Q[tune], exclude[tune], best_s[tune], nprobe, ks, ctx)
            recall = max(recall, float(hits[-1]) / n_tune)
            passed = [k for k, hit in zip(ks, hits.tolist())
                      if hit >= cfg.target_recall * n_tune and (best is None or cost[k] < best[0])]
            if passed:
                confirmed = self._self_test_hits(ann, Q[confirm], exclude[confirm], best_s[confirm], nprobe, passed, ctx)
                k_ok = [(k, hit) for k, hit in zip(passed, confirmed.tolist()) if hit >= cfg.target_recall * n_confirm]
                if k_ok:  # the fewest candidates that confirm: more at this nprobe only cost more
                    best = (cost[k_ok[0][0]], nprobe, k_ok[0][0], k_ok[0][1] / n_confirm)
        if best is not None:
            _cost, ann.nprobe, ann.rescore, ann.recall = best
        else:
            ann.nprobe, ann.rescore, ann.recall = ann.nlist, ks[-1], recall
            log.warning("collection %s: approximate recall@1 %.4f below target %.4f; staying exact",
                        self.collection_id, recall, cfg.target_recall)

    def _self_test_hits(self, ann: IvfIndex, Q: np.ndarray, exclude: np.ndarray, best_s: np.ndarray, nprobe: int,
                        ks: list[int], ctx: Any) -> np.ndarray:
        """For each candidate count in ``ks``: how many probes find the exact best score among
        that many candidates (their own template, ``exclude``, left out) at ``nprobe``."""
        ids = ann.search_many(Q, ks[-1] + 1, None, 0, max(1, self.config.faiss_threads), nprobe)
        hits = np.zeros(len(ks), np.int64)
        for i in range(len(Q)):
            got = ids[i][(ids[i] >= 0) & (ids[i] != exclude[i])][: ks[-1]]
            with ctx():
                rows = self._row_of.rows(got)
                sc = np.full(len(got), NEG_INF, np.float32)
                sc[rows >= 0] = self._X[rows[rows >= 0]] @ Q[i]
            if len(sc):
                best = np.maximum.accumulate(sc)  # the best exact score among the first k candidates
                hits += np.asarray([best[min(k, len(sc)) - 1] >= best_s[i] - 1e-5 for k in ks])
        return hits

    def maybe_rebuild_ann(self) -> None:
        """Start a background (re)build when the collection crossed a size threshold."""
        if not self.needs_ann() or (self._ann_thread is not None and self._ann_thread.is_alive()):
            return
        if not self.config.background_build:
            self.build_ann(locked=False)
            self._persist()
            return
        self._ann_thread = threading.Thread(target=self._safe_build, name=f"facegate-ivf-{self.collection_id}", daemon=True)
        self._ann_thread.start()

    def _safe_build(self) -> None:
        try:
            self.build_ann(locked=False)
        except Exception:  # noqa: BLE001 - exact search keeps working
            self._ann_log = None
            log.exception("building the approximate index failed; exact search continues")
            return
        self._persist()

    # --- snapshots ------------------------------------------------------------------------

    def maybe_persist(self, master_key_id: str | None = None) -> None:
        """Write a new snapshot in the background once the feed has moved
        ``snapshot_after_changes`` past the last one (the replay on the next start stays short),
        ``snapshot_max_age_s`` after it if anything changed (the feed is pruned after a day), or
        once the master key is no longer ``master_key_id``, the one it was written under (after a
        rotation the old key is destroyed, and the next start could not read it)."""
        moved = self.applied_seq - self.snapshot_seq
        rekeyed = master_key_id is not None and self.snapshot_key_id not in (None, master_key_id)
        due = rekeyed or moved >= self.config.snapshot_after_changes or (
            moved > 0 and time.monotonic() - self.snapshot_at >= self.config.snapshot_max_age_s)
        if (self.persist is None or not due or not self._ann_usable()
                or (self._persist_thread is not None and self._persist_thread.is_alive())):
            return
        if not self.config.background_build:
            self._persist()
            return
        self._persist_thread = threading.Thread(target=self._persist, name=f"facegate-snap-{self.collection_id}", daemon=True)
        self._persist_thread.start()

    def _persist(self) -> None:
        if self.persist is None or not self._persist_lock.acquire(blocking=False):
            return
        try:
            t0 = time.perf_counter()
            if self.persist(self):
                self.snapshot_seconds = time.perf_counter() - t0
        except Exception:  # noqa: BLE001 - the next start loads from the store instead
            log.exception("collection %s: writing the index snapshot failed", self.collection_id)
        finally:
            self._persist_lock.release()

    def write_snapshot(self, files: SnapshotFiles, store: TemplateStore) -> bool:
        """Write this index to ``files`` (False when there is no approximate index to save, or
        an erasure or the collection's deletion overtook the write). Reads the live arrays
        block by block under short read-lock holds, by template id, so writers continue;
        every subject they change is in the feed after ``seq`` and so blanked and re-read."""
        with self.lock.read():
            ann = self.ann
            if ann is None or not ann.trained or not self._ann_usable():
                return False
            seq, n = self.applied_seq, self.n
            tids = self._tid[:n].copy()
            sids = self._sid_at_slot[self._rslot[:n]]
            ann_ids, ann_lists = ann.list_numbers()
        order = np.argsort(tids)
        tids, sids = tids[order], sids[order]
        at = np.minimum(np.searchsorted(ann_ids, tids), max(len(ann_ids) - 1, 0))
        in_ann = ann_ids[at] == tids if len(ann_ids) else np.zeros(len(tids), bool)
        lists = np.where(in_ann[:, None], ann_lists[at] if len(ann_ids) else 0, 0).astype(np.int32)
        meta = SnapshotMeta(self.collection_id, self.model_id, self.dim, seq, ann.nprobe, float(ann.recall or 0.0),
                            ann.trained_rows, int(ann.index.code_size), ann.rescore, ann.LISTS)
        key_id = files.crypto.master_key_id  # what the writer wraps the snapshot key with
        writer = files.writer(meta, tids, sids, ann.trained)
        try:
            for k in range(writer.n_blocks):
                first = k * BLOCK_SLOTS
                part = writer.block_tids(k)
                sl = slice(first, first + len(part))
                with self.lock.read():
                    rows = self._row_of.rows(part)
                    present = (rows >= 0) & in_ann[sl]
                    X = self._X[np.where(present, rows, 0)]
                    codes = ann.encode(X, lists[sl, 0])
                writer.write_block(k, present, lists[sl], codes, X)
            with store.write() as tx:
                done = writer.finish(tx)
        finally:
            writer.close()
        if done:
            self.snapshot_seq = max(self.snapshot_seq, seq)
            self.snapshot_at = time.monotonic()
            self.snapshot_key_id = key_id
            log.info("collection %s: index snapshot of %d templates at feed position %d written", self.collection_id,
                     len(tids), seq)
        return done

    def wait_for_build(self, timeout: float | None = None) -> None:
        t = self._ann_thread
        if t is not None:
            t.join(timeout)

    def stats(self) -> dict[str, Any]:
        with self.lock.read():
            ann = self.ann
            mode = "ivf-pq4fs" if self._ann_usable() else "exact"
            if mode == "exact" and self.n > self.config.exact_max_rows and not installed("scale"):
                mode = "exact (approximate index needs facegate[scale])"
            return {
                "templates": self.n,
                "subjects": self._n_subjects,
                "mode": mode,
                "nlist": ann.nlist if ann else None,
                "nprobe": ann.nprobe if ann else None,
                "rescore": ann.rescore if ann else None,
                "self_test_recall_at_1": ann.recall if ann else 1.0,
                "trained_rows": ann.trained_rows if ann else None,
                "memory_bytes": int(self._X.nbytes + self._tid.nbytes + self._rslot.nbytes + self._row_of.nbytes
                                    + self._slot_of.nbytes + self._base_tids.nbytes + self._base_off.nbytes
                                    + (ann.memory_bytes() if ann else 0)),
                "load_seconds": round(self.load_seconds, 3),
                "loaded_from": self.loaded_from,
                "snapshot_seq": self.snapshot_seq,
                "snapshot_write_seconds": round(self.snapshot_seconds, 3),
                "ann_build_seconds": round(self.build_seconds, 3),
                "applied_seq": self.applied_seq,
            }


_warned_no_faiss: set[int] = set()


def _approximate_installed(collection_id: int, rows: int) -> bool:
    """faiss comes with the ``scale`` extra; without it a large collection stays on exact search
    (correct, slower: a full scan per query) and says once what to install."""
    if installed("scale"):
        return True
    if collection_id not in _warned_no_faiss:
        _warned_no_faiss.add(collection_id)
        log.warning("collection %s has %d templates: exact search scans them all per query; the approximate "
                    "index needs pip install 'facegate[scale]'", collection_id, rows)
    return False


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = True


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a collection is bulk-loaded: millions of
    short-lived row tuples make it traverse the heap over and over (5M subjects and their
    consents read in 17.7 s instead of 38.9 at 10M templates). Nested and concurrent loads
    share one pause; the collector's previous state comes back after the last."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def _ts(t: Any) -> float:
    return NEG_INF if t is None else t.timestamp()


def _consent_tuple(row: Any) -> tuple[str, float, float, float | None]:
    expires = math.inf if row.expires_at is None else row.expires_at.timestamp()
    withdrawn = None if row.withdrawn_at is None else row.withdrawn_at.timestamp()
    return (row.purpose, row.granted_at.timestamp(), expires, withdrawn)


# --- all collections of one process ---------------------------------------------------------


class GalleryIndex:
    """The process's indexes, loaded lazily per collection and synced through the change feed."""

    def __init__(self, store: TemplateStore, crypto: Crypto, config: IndexConfig | None = None,
                 snapshots: SnapshotFiles | None = None,
                 tables: Callable[[Any, int], SubjectTable] | None = None) -> None:
        """``snapshots``: where this store's snapshots live (None: none kept); ``tables``: a
        fast reader of a collection's :class:`SubjectTable` inside a read transaction (None:
        built from the store's rows)."""
        self.store = store
        self.crypto = crypto
        self.config = config or IndexConfig()
        self.snapshots = snapshots if self.config.snapshot else None
        self.tables = tables
        self._cols: dict[int, CollectionIndex] = {}
        self._sync_lock = threading.RLock()
        self._head_pool: ThreadPoolExecutor | None = None

    # Read the change-feed head beside the search, on a helper thread, where that read is a
    # network round trip (PostgreSQL: ≈ 0.3 ms of a 3-5 ms identification hidden behind the
    # search); else first, as get() does.
    overlap_head_read = False

    def search_current(self, collection_id: int, dim: int, model_id: str,
                       search: Callable[[CollectionIndex], _T]) -> _T:
        """``search`` run on the collection's index current with the store, as on get()'s: it
        reflects every commit that returned before this call. With ``overlap_head_read`` the
        head is read while the search runs; a head past what the index had applied when the
        search began means commits it may have missed: the index catches up and ``search`` runs
        again (a write elsewhere meanwhile costs a second search, never a stale answer)."""
        idx = self._cols.get(collection_id)
        if idx is None or not self.overlap_head_read:
            return search(self.get(collection_id, dim, model_id))
        head = self._head_reader().submit(self.store.max_seq)
        applied = idx.applied_seq  # before the search: what it is sure to reflect
        result = search(idx)
        if head.result() > applied:
            result = search(self.get(collection_id, dim, model_id))
        return result

    def _head_reader(self) -> ThreadPoolExecutor:
        with self._sync_lock:
            if self._head_pool is None:
                self._head_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="facegate-feed-head")
            return self._head_pool

    def get(self, collection_id: int, dim: int, model_id: str) -> CollectionIndex:
        """The collection's index, current with the store (loads it on first use)."""
        idx = self._cols.get(collection_id)
        if idx is None:
            with self._sync_lock:
                idx = self._cols.get(collection_id)
                if idx is None:
                    idx = self._load(collection_id, dim, model_id)
                    self._cols[collection_id] = idx
        self.sync()
        return idx

    def loaded(self) -> list[CollectionIndex]:
        return list(self._cols.values())

    def drop(self, collection_id: int) -> None:
        with self._sync_lock:
            self._cols.pop(collection_id, None)

    def _load(self, cid: int, dim: int, model_id: str) -> CollectionIndex:
        with _gc_paused():
            return self._load_rows(cid, dim, model_id)

    def _load_rows(self, cid: int, dim: int, model_id: str) -> CollectionIndex:
        t0 = time.perf_counter()
        idx = self._from_snapshot(cid, dim, model_id)
        if idx is None:
            idx = CollectionIndex(cid, dim, model_id, self.config)
            # crypto.lock: the master key cannot be swapped (rotation) while this snapshot's wrapped
            # keys are unwrapped; ensure(): follow a rotation this snapshot already shows.
            with self.crypto.lock, self.store.read() as tx:
                self.crypto.ensure(tx.get_meta("master_key_id"))
                seq = tx.max_seq()
                subjects = {r.id: r for r in tx.collection_subjects(cid)}
                table = self._table(tx, cid, subjects)
                tids, sids, X = self.read_vectors(tx, cid, dim, model_id, subjects)
            idx.load_table(table, tids, sids, X)
            idx.applied_seq = seq
        if self.snapshots is not None:
            snapshots = self.snapshots
            idx.persist = lambda c: c.write_snapshot(snapshots, self.store)
        idx.load_seconds = time.perf_counter() - t0
        if idx.needs_ann():
            idx.maybe_rebuild_ann()  # background by default: exact search serves until it is ready
        return idx

    def _table(self, tx: Any, cid: int, subjects: dict[int, Any] | None = None) -> SubjectTable:
        """The collection's subject table: by the store's fast reader, else from its rows
        (``subjects``: the collection's subject rows by id, when the caller has read them)."""
        if self.tables is not None:
            return self.tables(tx, cid)
        rows = subjects.values() if subjects is not None else tx.collection_subjects(cid)
        consents: dict[int, list] = defaultdict(list)
        for r in tx.collection_consents(cid):
            consents[r.subject_id].append(_consent_tuple(r))
        return SubjectTable.from_dicts({r.id: (r.external_id, r.label) for r in rows}, consents)

    def _from_snapshot(self, cid: int, dim: int, model_id: str) -> CollectionIndex | None:
        """The collection's index from its snapshot, with the subjects and consents read from
        the store now (on a second thread, while this one decrypts the file and packs the
        approximate index) and the subjects whose slots an erasure blanked re-read. The next
        sync replays the feed from the older of the snapshot's position and the one the
        subjects were read at. None (and a log line saying why) when there is no usable
        snapshot."""
        if self.snapshots is None or not installed("scale"):  # faiss restores its approximate half
            return None
        snapshots = self.snapshots
        try:
            snapshots.check(cid, dim, model_id)  # not worth reading the subjects for a snapshot never used
            with ThreadPoolExecutor(1, thread_name_prefix="facegate-subjects") as pool:
                read = pool.submit(self._read_table, cid)
                with self.crypto.lock:
                    snap = snapshots.load(cid, dim, model_id)
                ann = IvfIndex.restore(dim, snap.trained, snap.tids, snap.lists, snap.codes, nprobe=snap.meta.nprobe,
                                       recall=snap.meta.recall, trained_rows=snap.meta.trained_rows,
                                       rescore=snap.meta.rescore)
                head, pruned, table = read.result()
        except FileNotFoundError:
            return None
        except (SnapshotUnusable, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("collection %s: index snapshot not used (%s); loading every template from the store", cid, exc)
            return None
        if pruned > snap.meta.seq:
            log.warning("collection %s: index snapshot not used (the change feed since position %d was pruned); "
                        "loading every template from the store", cid, snap.meta.seq)
            return None
        known = np.isin(snap.sids, table.ids)  # subjects erased since are gone from the store too
        if not known.all():
            ann.remove(snap.tids[~known])
            snap.keep_only(known)
        idx = CollectionIndex(cid, dim, model_id, self.config)
        idx.load_table(table, snap.tids, snap.sids, snap.X)
        idx.ann = ann
        idx.applied_seq = min(snap.meta.seq, head)
        blanked = {int(s) for s in snap.scrubbed.tolist()}
        if blanked:
            with self.crypto.lock, self.store.read() as tx:
                self.crypto.ensure(tx.get_meta("master_key_id"))
                states = self._subject_states(tx, {cid: blanked}, {cid: idx})
            with idx.lock.write():  # apply() keeps the approximate index in step
                for st in states[cid]:
                    idx.apply(st)
        idx.snapshot_seq = snap.meta.seq
        idx.snapshot_key_id = self.crypto.master_key_id  # a snapshot loads only under the current key
        idx.loaded_from = "snapshot"
        return idx

    def _read_table(self, cid: int) -> tuple[int, int, SubjectTable]:
        """(feed head, feed pruned through, the collection's subject table), in one snapshot."""
        with self.store.read() as tx:
            return tx.max_seq(), tx.pruned_through(), self._table(tx, cid)

    def read_vectors(self, tx: Any, cid: int, dim: int, model_id: str,
                     subjects: dict[int, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(template ids, subject ids, float32 vectors) of the collection's ``model_id``
        templates in the snapshot ``tx``: each subject's key unwrapped, its templates decrypted."""
        _n_sub, n_tpl = tx.collection_counts(cid)
        X = np.zeros((max(n_tpl, 1), dim), np.float32)
        tids = np.zeros(max(n_tpl, 1), np.int64)
        sids = np.zeros(max(n_tpl, 1), np.int64)
        n = 0
        cipher_sid = None
        decrypt = None
        foreign = 0
        for part in tx.collection_template_chunks(cid):
            plains: list[bytes] = []
            part_tids: list[int] = []
            part_sids: list[int] = []
            room = X.shape[0] - n  # rows committed after the count are not in this snapshot
            for tid, sid, mid, nonce, ct in part:
                if mid != model_id:
                    foreign += 1
                    continue
                if sid != cipher_sid:
                    s = subjects.get(sid)
                    if s is None:
                        continue
                    decrypt = self.crypto.subject_key(s.wrapped_key, cid, s.external_id).decrypt_bytes
                    cipher_sid = sid
                if len(plains) >= room:
                    break
                assert decrypt is not None
                plains.append(decrypt(nonce, ct, mid))
                part_tids.append(tid)
                part_sids.append(sid)
            if plains:
                k = len(plains)
                X[n : n + k] = np.frombuffer(b"".join(plains), dtype="<f4").reshape(k, dim)
                tids[n : n + k] = part_tids
                sids[n : n + k] = part_sids
                n += k
        if foreign:
            log.warning("collection %s: %d templates of another model ignored", cid, foreign)
        return tids[:n].copy(), sids[:n].copy(), _own(X, n)

    def _subject_states(self, tx: Any, touched: dict[int, set[int]],
                        cols: dict[int, CollectionIndex]) -> dict[int, list[SubjectState]]:
        """What the store says now about each subject in ``touched`` (collection id -> subject
        ids), with the vectors of templates the collection's index lacks decrypted."""
        all_sids = sorted({s for v in touched.values() for s in v})
        subj = {r.id: r for r in tx.subjects_by_ids(all_sids)}
        tids_by_sid: dict[int, set[int]] = defaultdict(set)
        for tid, sid in tx.template_ids_of(all_sids):
            tids_by_sid[sid].add(tid)
        cons: dict[int, list] = defaultdict(list)
        for r in tx.consents_of(all_sids):
            cons[r.subject_id].append(_consent_tuple(r))
        need = [t for cid, sids in touched.items() for s in sids for t in tids_by_sid.get(s, ())
                if not cols[cid].has_template(t)]
        vectors: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
        ciphers: dict[int, SubjectCipher] = {}
        for tid, sid, mid, nonce, ct in tx.template_ciphertexts(need):
            s = subj.get(sid)
            if s is None:
                continue
            c = cols.get(s.collection_id)
            if c is None or mid != c.model_id:
                continue
            if sid not in ciphers:
                ciphers[sid] = self.crypto.subject_key(s.wrapped_key, s.collection_id, s.external_id)
            try:
                vectors[sid][tid] = ciphers[sid].decrypt(nonce, ct, mid)
            except TemplateIntegrityError:
                log.error("template %s of subject %s failed authentication; not indexed", tid, sid)
        states: dict[int, list[SubjectState]] = {}
        for cid, sids in touched.items():
            states[cid] = [SubjectState(sid, None) if (s := subj.get(sid)) is None or s.collection_id != cid
                           else SubjectState(sid, (s.external_id, s.label), tids_by_sid.get(sid, set()),
                                             vectors.get(sid, {}), cons.get(sid, []))
                           for sid in sids]
        return states

    def sync(self) -> None:
        """Catch up with every write committed since this process last looked (any process)."""
        if not self._cols:
            return
        head = self.store.max_seq()
        if all(c.applied_seq >= head for c in list(self._cols.values())):
            return
        with self._sync_lock, self.crypto.lock:  # see _load
            cols = dict(self._cols)
            low = min(c.applied_seq for c in cols.values())
            with self.store.read() as tx:
                head = tx.max_seq()
                if low >= head:
                    return
                self.crypto.ensure(tx.get_meta("master_key_id"))  # a rotation (feed op "master_key") moved head
                pruned = tx.pruned_through()
                reload = [c for c in cols.values() if c.applied_seq < pruned] if pruned > low else []
                changes = tx.changes_since(low, head)
                touched: dict[int, set[int]] = defaultdict(set)
                dropped: set[int] = set()
                for ch in changes:
                    c = cols.get(ch.collection_id)
                    if c is None or ch.seq <= c.applied_seq:
                        continue
                    if ch.op == "collection":
                        if tx.collection_by_id(ch.collection_id) is None:
                            dropped.add(ch.collection_id)
                    elif ch.subject_id is not None:
                        touched[ch.collection_id].add(ch.subject_id)
                states = self._subject_states(tx, touched, cols)
            for cid in dropped:
                self._cols.pop(cid, None)
            for cid, sts in states.items():
                if cid in dropped:
                    continue
                c = cols[cid]
                with c.lock.write():
                    for st in sts:
                        c.apply(st)
                    c.applied_seq = head
                c.maybe_rebuild_ann()
                c.maybe_persist(self.crypto.master_key_id)
            for c in cols.values():
                if c.collection_id not in touched and c.collection_id not in dropped:
                    c.applied_seq = max(c.applied_seq, head)
                    if c.snapshot_key_id not in (None, self.crypto.master_key_id):  # a master-key rotation
                        c.maybe_persist(self.crypto.master_key_id)
            for c in reload:
                fresh = self._load(c.collection_id, c.dim, c.model_id)
                self._cols[c.collection_id] = fresh


def _own(X: np.ndarray, n: int) -> np.ndarray:
    return X if X.shape[0] == n else X[:n].copy()
