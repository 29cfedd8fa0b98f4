"""Identification overhead: what one ``identify_vector`` costs around the index search.

    .venv/bin/python bench/identify.py                                   # SQLite, 100k templates
    nice -n 10 .venv/bin/python bench/identify.py --stores sqlite,embedded-postgres
    .venv/bin/python bench/identify.py --stores postgresql://… --size 100k
    .venv/bin/python bench/identify.py --profile 300                     # cProfile of 300 calls

At a size where the index costs little (default 100k synthetic templates from
facegate.gallery.synth: 50k identities x 2, enrolled as bench/gallery.py does), per store:

* p50/p99 of ``identify_vector`` end to end and of the index search alone (the same probes);
* a per-phase breakdown, timed by wrapping the gallery's own calls (no copy of search.py):
  collection lookup (``GalleryContext.collection_row``), liveness gate, change-feed head
  (``Store.max_seq``), index ``get`` (the head read included), search, the write transaction
  (consent re-check, last-seen touch, audit append and commit) and the witness line written
  after the commit (part of the write transaction's time);
* SQL statements per identification (SQLAlchemy ``before_cursor_execute``, plus what goes on
  the raw driver connection: ``driver.run``, PostgreSQL's feed-head read and its pipelines) and
  round trips: statements, BEGIN, COMMIT and ROLLBACK (BEGIN rides in a pipeline where it can),
  and the pool's pre-ping on checkout where the engine pings.

Data directories are kept under ``--work`` and reused when they already hold the collection
(``--fresh`` rebuilds them), so before/after runs measure the same gallery.
Results: bench/out/identify.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import event

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from facegate.gallery import Gallery  # noqa: E402
from facegate.gallery import context as context_mod  # noqa: E402
from facegate.gallery import driver as driver_mod  # noqa: E402
from facegate.gallery import search as search_mod  # noqa: E402
from facegate.gallery.synth import FaceLikeGenerator  # noqa: E402
from gallery import fill  # noqa: E402 - bench/gallery.py: the same synthetic gallery

MODEL = "sface-2021dec-int8bq"
DIM = 128
PHASES = ("collection", "liveness", "feed_head", "index_get", "search", "write_tx", "witness")


def parse_size(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if text[-1] in "km" else text) * mult)


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 3) if values else float("nan")


def open_filled(data: Path, store: str | None, n_id: int, gen: FaceLikeGenerator, fresh: bool) -> Gallery:
    """The gallery at ``data`` holding collection "bench" with ``n_id`` identities x 2 templates."""
    marker = data / f"bench-identify-{n_id}-v2"
    if fresh or not marker.exists():
        if data.exists() and store == "embedded-postgres":
            from facegate.pgserver import for_data_dir

            for_data_dir(data).stop()
        import shutil

        shutil.rmtree(data, ignore_errors=True)
        g = Gallery.open(data, store=store)
        g.create_collection("bench", purposes=["common", "rare"])
        _X, seconds = fill(g, gen, n_id, 2, lambda *a: print(" ", *a, file=sys.stderr, flush=True))
        print(f"  enrolled {2 * n_id:,} templates in {seconds:.1f}s", file=sys.stderr, flush=True)
        g.close()
        marker.touch()
    g = Gallery.open(data, store=store)
    g.warm("bench", wait=True)
    return g


class Meter:
    """Per-call phase times (ms) and statement / round-trip counts, gathered by wrapping the
    gallery's calls and listening on its engines."""

    def __init__(self, g: Gallery) -> None:
        self.times: dict[str, float] = defaultdict(float)
        self.statements = 0
        self.round_trips = 0
        self.sql: list[str] = []
        self.keep_sql = False
        self._undo: list[Callable[[], None]] = []
        ctx = g.context
        store: Any = ctx.store
        # The base engine only: its execution_options() views (read/write engines) fire its events.
        eng = store.engine
        self._listen(eng, "before_cursor_execute", self._on_statement)
        # SQLite's BEGIN is a statement of ours (seen above); psycopg sends its own.
        for name in ("commit", "rollback") if store.dialect == "sqlite" else ("begin", "commit", "rollback"):
            self._listen(eng, name, self._on_round_trip)
        if eng.pool._pre_ping:  # noqa: SLF001 - a ping is a round trip at every checkout
            self._listen(eng.pool, "checkout", self._on_round_trip)
        self._wrap(context_mod.GalleryContext, "collection_row", "collection")
        self._wrap(search_mod, "require", "liveness")
        self._wrap(store, "max_seq", "feed_head", raw_statement=store.dialect == "postgresql")
        if store.dialect == "postgresql":
            self._count_pipelines()
        self._count_driver_statements()
        self._wrap(ctx.index, "get", "index_get")
        self._wrap_cm(store, "write", "write_tx")
        if ctx.audit.witness is not None:
            self._wrap(ctx.audit.witness, "record", "witness")

    def _listen(self, target: Any, name: str, fn: Callable[..., None]) -> None:
        event.listen(target, name, fn)
        self._undo.append(lambda: event.remove(target, name, fn))

    def _on_statement(self, _conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
        self.statements += 1
        self.round_trips += 1
        if self.keep_sql:
            self.sql.append(" ".join(statement.split())[:160])

    def _on_round_trip(self, *_a: Any) -> None:
        self.round_trips += 1

    def _wrap(self, owner: Any, attr: str, phase: str, *, raw_statement: bool = False) -> None:
        orig = getattr(owner, attr)
        own = attr in vars(owner)  # a class's or module's own attribute, else a method of an instance

        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                self.times[phase] += (time.perf_counter() - t) * 1000
                if raw_statement:  # a statement on a raw driver connection: no SQLAlchemy event
                    self.statements += 1
                    self.round_trips += 1
                    if self.keep_sql:
                        self.sql.append("SELECT max(seq) FROM changes  -- raw driver connection")

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, orig) if own else delattr(owner, attr))

    def _count_pipelines(self) -> None:
        """PostgreSQL's pipelined statements (PgStoreTx._pipeline, on the raw driver connection):
        one round trip for them all, BEGIN included where the writers' lock rides along and COMMIT
        where it rides at the end (the SQLAlchemy "begin" and "commit" events counted each as a
        round trip of its own)."""
        from facegate.gallery.pg.store import _TAKE_WRITE_LOCK, PgStoreTx

        orig = PgStoreTx._pipeline  # noqa: SLF001

        def counted(tx: Any, *statements: Any, commit: bool = False) -> Any:
            pending = [sql for sql, _p in tx._pending]  # noqa: SLF001
            begin = bool(pending) and pending[0] == _TAKE_WRITE_LOCK
            self.statements += len(pending) + len(statements)
            self.round_trips += 1 - int(begin) - int(commit)
            if self.keep_sql:
                dialect = tx._conn.dialect  # noqa: SLF001
                texts = [" ".join(sql.split())[:100] for sql in pending]
                texts += [" ".join(str(st.stmt.compile(dialect=dialect)).split())[:100] for st, _p in statements]
                self.sql.append("pipelined, one round trip: " + " ; ".join(["BEGIN"] * begin + texts + ["COMMIT"] * commit))
            return orig(tx, *statements, commit=commit)

        PgStoreTx._pipeline = counted  # type: ignore[method-assign]  # noqa: SLF001
        self._undo.append(lambda: setattr(PgStoreTx, "_pipeline", orig))

    def _count_driver_statements(self) -> None:
        """Statements sent on the driver connection without SQLAlchemy (driver.run): SQLite's
        feed-head read and an identification's write transaction, each a call of its own."""
        orig = driver_mod.run

        def counted(dialect: Any, raw: Any, stmt: Any, params: Any) -> Any:
            self.statements += 1
            self.round_trips += 1
            if self.keep_sql:
                self.sql.append(" ".join(stmt.bind(dialect, params)[0].split())[:150] + "  -- driver")
            return orig(dialect, raw, stmt, params)

        driver_mod.run = counted  # type: ignore[assignment]
        self._undo.append(lambda: setattr(driver_mod, "run", orig))

    def _wrap_cm(self, owner: Any, attr: str, phase: str) -> None:
        orig = getattr(owner, attr)

        @contextlib.contextmanager
        def timed(*a: Any, **kw: Any) -> Iterator[Any]:
            t = time.perf_counter()
            try:
                with orig(*a, **kw) as tx:
                    yield tx
            finally:
                self.times[phase] += (time.perf_counter() - t) * 1000

        setattr(owner, attr, timed)
        self._undo.append(lambda: delattr(owner, attr))

    def reset(self) -> None:
        self.times.clear()
        self.statements = self.round_trips = 0
        self.sql.clear()

    def close(self) -> None:
        for undo in reversed(self._undo):
            undo()


def measure(g: Gallery, Q: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    ctx = g.context
    for q in Q[:20]:  # warm-up: pools, statement caches, the index's first touches
        g.identify_vector("bench", q, purpose="common", model_id=MODEL, actor="bench")
    idx = ctx.index.get(g.context.collection_row("bench").id, DIM, MODEL)
    lat_search = []
    now = time.time()
    for q in Q:
        t = time.perf_counter()
        idx.search(q, 7, "common", now)
        lat_search.append((time.perf_counter() - t) * 1000)
    lat: list[float] = []
    cpu0 = time.process_time()
    for q in Q:
        t = time.perf_counter()
        g.identify_vector("bench", q, purpose="common", model_id=MODEL, actor="bench")
        lat.append((time.perf_counter() - t) * 1000)
    out: dict[str, Any] = {
        "identify_ms_p50": pct(lat, 50), "identify_ms_p99": pct(lat, 99),
        # This process's CPU per call (the database server's own is not in it): steadier than
        # wall time on a shared machine.
        "identify_cpu_ms_mean": round((time.process_time() - cpu0) * 1000 / len(Q), 3),
        "search_ms_p50": pct(lat_search, 50), "search_ms_p99": pct(lat_search, 99),
    }
    # Phases and counts on a separate pass: the wrappers cost a little themselves.
    meter = Meter(g)
    orig_search = type(idx).search
    phases: dict[str, list[float]] = defaultdict(list)

    def timed_search(self: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig_search(self, *a, **kw)
        finally:
            meter.times["search"] += (time.perf_counter() - t) * 1000

    type(idx).search = timed_search  # type: ignore[method-assign]
    stmts, trips = [], []
    try:
        for i, q in enumerate(Q):
            meter.reset()
            meter.keep_sql = i == len(Q) - 1
            g.identify_vector("bench", q, purpose="common", model_id=MODEL, actor="bench")
            for p in PHASES:
                phases[p].append(meter.times.get(p, 0.0))
            stmts.append(meter.statements)
            trips.append(meter.round_trips)
        out["statements_sql"] = list(meter.sql)
    finally:
        type(idx).search = orig_search  # type: ignore[method-assign]
        meter.close()
    out["phase_ms_p50"] = {p: pct(v, 50) for p, v in phases.items()}
    out["statements_per_identify"] = float(np.median(stmts))
    out["round_trips_per_identify"] = float(np.median(trips))
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for k in range(args.profile):
            g.identify_vector("bench", Q[k % len(Q)], purpose="common", model_id=MODEL, actor="bench")
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        out["profile_tottime_top25"] = buf.getvalue()
    return out


def run_store(store: str, args: argparse.Namespace) -> dict[str, Any]:
    n_id = parse_size(args.size) // 2
    gen = FaceLikeGenerator(DIM, seed=11)
    label = "sqlite" if store == "sqlite" else "postgresql"
    data = Path(args.work) / f"{label}-{n_id * 2}"
    g = open_filled(data, None if store == "sqlite" else store, n_id, gen, args.fresh)
    try:
        rng = np.random.default_rng(5)
        Q = gen.samples(gen.centres(rng.choice(n_id, args.queries, replace=False)), 1, seed=424242)
        res = {"store": label, "templates": 2 * n_id, "queries": args.queries, **measure(g, Q, args)}
    finally:
        g.close()
    if store == "embedded-postgres" and not args.keep_server:
        from facegate.pgserver import for_data_dir

        for_data_dir(data).stop()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", default="sqlite", help="comma-separated: sqlite, embedded-postgres, postgresql:// URLs")
    ap.add_argument("--size", default="100k", help="templates (2 per identity) [100k]")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="also cProfile N identifications per store")
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "identify-data"))
    ap.add_argument("--fresh", action="store_true", help="rebuild the data directories")
    ap.add_argument("--keep-server", action="store_true", help="leave the embedded PostgreSQL running")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "identify.json"))
    args = ap.parse_args()
    results = []
    for store in [s.strip() for s in args.stores.split(",") if s.strip()]:
        print(f"[{store}] ...", file=sys.stderr, flush=True)
        results.append(run_store(store, args))
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
              "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\n{args.size} templates, {args.queries} probes, load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs\n")
    print("| store | identify p50 | p99 | CPU/call | search p50 | statements | round trips | "
          + " | ".join(PHASES) + " |")
    print("|---" * (7 + len(PHASES)) + "|")
    for r in results:
        ph = r["phase_ms_p50"]
        print(f"| {r['store']} | {r['identify_ms_p50']} | {r['identify_ms_p99']} | {r['identify_cpu_ms_mean']} | "
              f"{r['search_ms_p50']} | "
              f"{r['statements_per_identify']:g} | {r['round_trips_per_identify']:g} | "
              + " | ".join(str(ph.get(p, 0.0)) for p in PHASES) + " |")
    for r in results:
        print(f"\n{r['store']}: the statements of one identification")
        for s in r["statements_sql"]:
            print("   ", s)
        if "profile_tottime_top25" in r:
            print(r["profile_tottime_top25"])


if __name__ == "__main__":
    main()
