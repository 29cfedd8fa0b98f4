"""N serve processes on one PostgreSQL under write load: the scale-out of docs/scale-out.md.

    nice -n 10 .venv/bin/python bench/gallery_pg.py --replicas 4 --sizes 100k --seconds 30
    .venv/bin/python bench/gallery_pg.py --replicas 2 --sizes 100k --store postgresql://user:pw@host/db

Per size, a fresh database (an embedded server in --workdir unless --store) filled with the
synthetic data of bench/gallery.py (its generator and seeds: N/2 identities × 2 face-like 128-d
templates). Then N processes, each a ``facegate serve``'s gallery (its own in-memory index,
cold-loaded from the search copy, following the change feed), search without pause for
``--seconds`` while this process enrols new subjects (10 per transaction). Reported per replica:
start-up until exact / approximate search is ready, and RSS; overall: searches/s, search
p50/p99 including the catch-up with the feed before each search, that catch-up alone, and the
writer's throughput meanwhile. With ``--rotate``, a vector-key rotation of the filled
collection is timed afterwards. The two stores side by side (enrolment, start-up, search,
filters, erasure) are bench/gallery.py's ``--stores sqlite,embedded-postgres``.

Results: bench/out/gallery_pg.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from facegate.gallery import Gallery  # noqa: E402
from facegate.gallery.synth import FaceLikeGenerator  # noqa: E402


def _gallery_bench():
    """bench/gallery.py as a module (its fill() and helpers)."""
    spec = importlib.util.spec_from_file_location("bench_gallery", ROOT / "bench" / "gallery.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


GB = _gallery_bench()
MODEL, DIM, pct, parse_size = GB.MODEL, GB.DIM, GB.pct, GB.parse_size
PER = 2
SEED = 11  # bench/gallery.py's generator seed


def log(n: int, *a: object) -> None:
    print(f"[pg {n:,}]", *a, file=sys.stderr, flush=True)


def fresh_database(server, name: str) -> str:
    import psycopg

    with psycopg.connect(server.url(driver="postgresql", database="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url(database=name)


def _replica(data_dir: str, url: str, key: str, cid: int, Q: np.ndarray, seconds: float, conn) -> None:
    """One serve process's gallery: load, report readiness, search until told to stop."""
    import psutil

    g = Gallery.open(data_dir, store=url, master_key=key)
    t0 = time.perf_counter()
    idx = g.index.get(cid, DIM, MODEL)
    exact_s = time.perf_counter() - t0
    idx.wait_for_build()
    conn.send({"exact_ready_s": round(exact_s, 2), "ann_ready_s": round(time.perf_counter() - t0, 2),
               "rss_mb": round(psutil.Process().memory_info().rss / 2**20), "mode": idx.stats()["mode"]})
    conn.recv()  # go
    lat, sync = [], []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t = time.perf_counter()
        idx = g.index.get(cid, DIM, MODEL)  # catches up with the change feed first
        t1 = time.perf_counter()
        idx.search(Q[i % len(Q)], 5, "common", time.time())
        lat.append((time.perf_counter() - t) * 1000)
        sync.append((t1 - t) * 1000)
        i += 1
    g.close()
    conn.send({"searches": i, "lat": lat, "sync": sync})


def run_replicas(n_templates: int, url: str, args: argparse.Namespace, workdir: Path) -> dict:
    import multiprocessing as mp

    from facegate.gallery import ConsentSpec

    n_id = n_templates // PER
    gen = FaceLikeGenerator(DIM, seed=SEED)
    data = workdir / f"replicas-{n_templates}"
    g = Gallery.open(data / "writer", store=url)
    key = (data / "writer" / "master.key").read_text().strip()
    g.create_collection("bench", purposes=["common", "rare"])
    _X, ins = GB.fill(g, gen, n_id, PER, lambda *a: log(n_templates, *a))
    cid = g._col_row("bench").id  # noqa: SLF001
    Q = gen.samples(gen.centres(np.arange(0, n_id, max(1, n_id // 500))), 1, seed=424242)
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for r in range(args.replicas):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_replica, args=(str(data / f"replica{r}"), url, key, cid, Q, args.seconds, child))
        p.start()
        pipes.append(parent)
        procs.append(p)
    ready = [c.recv() for c in pipes]
    for c in pipes:
        c.send("go")
    consent = ConsentSpec(["common"], evidence_ref="bench")
    writes, k = [], 0
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        V = gen.samples(gen.centres(np.arange(n_id + k, n_id + k + 10)), PER, seed=k)
        t = time.perf_counter()
        g.import_templates("bench", [(f"w{k + j}", V[PER * j : PER * j + PER], consent) for j in range(10)],
                           model_id=MODEL, actor="bench")
        writes.append(time.perf_counter() - t)
        k += 10
    done = [c.recv() for c in pipes]
    for p in procs:
        p.join(60)
    rotation = None
    if args.rotate:
        from facegate.gallery.pg.admin import rotate_key

        rotation = rotate_key(g, "bench", actor="bench")
        log(n_templates, "key rotation", rotation)
    g.close()
    lat = [x for d in done for x in d["lat"]]
    sync = [x for d in done for x in d["sync"]]
    return {
        "templates": n_id * PER, "replicas": args.replicas, "seconds": args.seconds, "insert_s": round(ins, 1),
        "replica_start": ready,
        "searches_per_s": round(sum(d["searches"] for d in done) / args.seconds, 1),
        "search_ms_p50": round(pct(lat, 50), 3), "search_ms_p99": round(pct(lat, 99), 3),
        "feed_catch_up_ms_p50": round(pct(sync, 50), 3), "feed_catch_up_ms_p99": round(pct(sync, 99), 3),
        "writer_templates_per_s": round(k * PER / max(sum(writes), 1e-9), 1),
        "writer_txn_ms_p50": round(pct([w * 1000 for w in writes], 50), 2),
        "key_rotation_s": rotation["seconds"] if rotation else None,
        "load_avg": os.getloadavg(),
    }


def markdown(results: list[dict]) -> str:
    lines = ["| templates | replicas | cold load: exact / approximate ready s | RSS MB | searches/s | "
             "search p50 / p99 ms | feed catch-up p50 / p99 ms | writer tpl/s | writer txn p50 ms | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        start = r["replica_start"]
        lines.append(
            f"| {r['templates']:,} | {r['replicas']} | "
            f"{max(x['exact_ready_s'] for x in start)} / {max(x['ann_ready_s'] for x in start)} | "
            f"{max(x['rss_mb'] for x in start)} | {r['searches_per_s']} | {r['search_ms_p50']} / {r['search_ms_p99']} | "
            f"{r['feed_catch_up_ms_p50']} / {r['feed_catch_up_ms_p99']} | {r['writer_templates_per_s']} | "
            f"{r['writer_txn_ms_p50']} | {', '.join(f'{x:.1f}' for x in r['load_avg'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100k", help="Comma-separated template counts (100k,1M).")
    ap.add_argument("--replicas", type=int, default=4, help="Serve processes searching under write load.")
    ap.add_argument("--seconds", type=float, default=30.0, help="Duration of the load.")
    ap.add_argument("--rotate", action="store_true", help="Also time a vector-key rotation afterwards.")
    ap.add_argument("--store", default=None, help="A PostgreSQL URL (default: an embedded server in --workdir).")
    ap.add_argument("--workdir", default=None, help="Where stores live [default: a temp dir].")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "gallery_pg.json"))
    args = ap.parse_args()
    if args.replicas < 1:
        ap.error("--replicas must be at least 1")
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="facegate-bench-pg-"))
    workdir.mkdir(parents=True, exist_ok=True)

    server = None
    if args.store is None:
        from facegate.pgserver import EmbeddedPostgres

        server = EmbeddedPostgres(workdir / "postgres", settings={"shared_buffers": "'2GB'", "max_wal_size": "'4GB'",
                                                                  "checkpoint_timeout": "'15min'"})
        server.start()
    results: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for n in sizes:
            r = run_replicas(n, args.store or fresh_database(server, f"replicas_{n}"), args, workdir)
            print(json.dumps(r, indent=1), file=sys.stderr)
            results.append(r)
            out.write_text(json.dumps({"machine": platform.platform(), "results": results}, indent=1))
    finally:
        if server is not None:
            server.stop()
    print(markdown(results))


if __name__ == "__main__":
    main()
