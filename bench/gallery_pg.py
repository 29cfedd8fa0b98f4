"""PostgreSQL + pgvector gallery benchmark, next to the embedded default in the same run.

    nice -n 10 .venv/bin/python bench/gallery_pg.py --sizes 100k            # embedded server
    nice -n 10 .venv/bin/python bench/gallery_pg.py --sizes 1M --queries 300
    .venv/bin/python bench/gallery_pg.py --sizes 100k --store postgresql://user:pw@host/db --no-sqlite

Same synthetic data as bench/gallery.py (its generator and seeds: N/2 identities × 2 templates,
face-like 128-d vectors) and, unless --no-sqlite, that script's own ``synthetic()`` run on the
embedded SQLite store first, so the two backends are measured on identical data in one run.

PostgreSQL part, per size (a fresh database each):
* insert throughput through ``Gallery.import_templates`` (AES-GCM template + rotated pgvector
  search copy, one transaction per 1000 subjects, audit included);
* IVFFlat build time (``CREATE INDEX CONCURRENTLY``, lists = rows/1000) and the probes self-test
  the backend runs after each build (its chosen probes and time);
* a probes sweep: search p50/p99, recall@1 vs exact (brute force over the generated vectors) and
  rank-1 identity; the reported operating point is the smallest probes with recall@1 ≥ 0.99;
* exact search in the database (no index) for comparison;
* a purpose only 1 % of subjects hold (the planner's exact scan of the allowed set);
* identify_vector end to end (search + consent re-check + audit commit);
* erasure: delete subjects found by probes, the next search must not return them; VACUUM time;
* key rotation (re-transform every stored vector in place, then rebuild): --rotate.

``--replicas N`` instead simulates scale-out on one PostgreSQL: N processes (each a
``facegate serve``'s gallery: its own in-memory index, loaded from the database and following
the change feed) search without pause for ``--seconds`` while this process enrols new subjects
(10 per transaction) — per replica: start-up until exact / approximate search is ready and RSS;
overall: searches/s, search p50/p99 including the catch-up with the feed before each search,
that catch-up alone, and the writer's throughput meanwhile:

    nice -n 10 .venv/bin/python bench/gallery_pg.py --replicas 4 --sizes 100k --seconds 30

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
from facegate.gallery.pg.index import PgIndexConfig  # noqa: E402
from facegate.gallery.synth import FaceLikeGenerator  # noqa: E402


def _gallery_bench():
    """bench/gallery.py as a module (its synthetic() and helpers)."""
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
    with psycopg.connect(server.url(driver="postgresql", database=name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return server.url(database=name)


def run_pg(n_templates: int, url: str, args: argparse.Namespace, workdir: Path) -> dict:
    n_id = n_templates // PER
    gen = FaceLikeGenerator(DIM, seed=SEED)
    out: dict = {"templates": n_id * PER, "identities": n_id, "backend": "postgresql"}
    data = workdir / f"pg-{n_templates}"
    g = Gallery.open(data, store=url, index_config=PgIndexConfig(auto_build=False))
    g.create_collection("bench", purposes=["common", "rare"])
    col = g.get_collection("bench")
    X, ins = GB.fill(g, gen, n_id, PER, lambda *a: log(n_templates, *a))
    out["insert_templates_per_s"] = round(n_id * PER / ins, 1)
    out["insert_seconds"] = round(ins, 1)
    log(n_templates, f"inserted in {ins:.1f}s ({out['insert_templates_per_s']}/s)")
    with g.store.autocommit() as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    cid = g._col_row("bench").id  # noqa: SLF001
    idx = g.index.get(cid, DIM, MODEL)

    rng = np.random.default_rng(5)  # bench/gallery.py's probe choice
    nq = min(args.queries, n_id)
    q_ids = rng.choice(n_id, nq, replace=False)
    Q = gen.samples(gen.centres(q_ids), 1, seed=424242)
    best, best_row = GB.exact_nearest(Q, X)
    exact_subject = best_row // PER
    now = time.time()

    def measure(mode: str | None, nprobe: int | None, count: int, purpose: str = "common") -> dict:
        lat, hit_exact, rank1 = [], 0, 0
        idx.search(Q[0], 5, purpose, now, mode=mode, nprobe=nprobe)  # warm the connection/plan
        for i in range(count):
            t = time.perf_counter()
            hits, _ = idx.search(Q[i], 5, purpose, now, mode=mode, nprobe=nprobe)
            lat.append((time.perf_counter() - t) * 1000)
            top = hits[0]
            hit_exact += int(top.external_id == f"id{exact_subject[i]}" or abs(top.score - best[i]) < 1e-4)
            rank1 += int(top.external_id == f"id{q_ids[i]}")
        return {"p50_ms": round(pct(lat, 50), 3), "p99_ms": round(pct(lat, 99), 3),
                "recall_at_1_vs_exact": round(hit_exact / count, 4), "rank1_identity": round(rank1 / count, 4), "queries": count}

    out["exact_in_db"] = measure("exact", None, min(nq, args.exact_queries))
    log(n_templates, "exact", out["exact_in_db"])

    facts = idx.build(tune=False)
    out["index_build_seconds"] = facts["build_seconds"]
    out["index_lists"] = facts["lists"]
    log(n_templates, "IVFFlat built", facts)
    tuned = idx.tune()
    out["self_test"] = tuned
    log(n_templates, "self-test", tuned)
    sweep = {}
    chosen = None
    for p in args.probes:
        if p > facts["lists"]:
            break
        m = measure("ann", p, nq)
        sweep[p] = m
        log(n_templates, f"probes {p}", m)
        if chosen is None and m["recall_at_1_vs_exact"] >= 0.99:
            chosen = p
            if not args.full_sweep:
                break
    out["sweep"] = sweep
    out["operating_point"] = {"probes": chosen, **(sweep[chosen] if chosen else {})}
    # What the service does with the tuned probes (the plan the gallery picks by itself).
    out["auto"] = measure(None, None, nq)
    out["auto"]["probes"] = tuned["probes"]
    log(n_templates, "auto", out["auto"])

    # 1 % purpose coverage.
    rare_ids = rng.choice(np.arange(0, n_id, 100), min(200, max(1, n_id // 100)), replace=False)
    Qr = gen.samples(gen.centres(rare_ids), 1, seed=99)
    lat_r, ok_r = [], 0
    idx.search(Qr[0], 5, "rare", now)
    for i in range(len(rare_ids)):
        t = time.perf_counter()
        hits, allowed = idx.search(Qr[i], 5, "rare", now)
        lat_r.append((time.perf_counter() - t) * 1000)
        ok_r += int(bool(hits) and hits[0].external_id == f"id{rare_ids[i]}")
        assert all(int(h.external_id[2:]) % 100 == 0 for h in hits), "a subject without the purpose was returned"
    out["filtered_1pct"] = {"allowed_subjects": allowed, "plan": idx.last_plan, "search_ms_p50": round(pct(lat_r, 50), 3),
                            "search_ms_p99": round(pct(lat_r, 99), 3), "rank1_identity": round(ok_r / len(rare_ids), 4)}
    log(n_templates, "filtered 1%", out["filtered_1pct"])

    out.update(GB.identify_e2e(g, Q[: min(nq, 200)]))

    out["threshold"] = round(col.threshold, 6)
    out["fpir_non_enrolled"] = GB.fpir_non_enrolled(g, gen, n_id)

    n_del = min(args.erase, nq)
    lat_del, out["erased_returned_by_next_search"] = GB.erase_and_search(g, idx, Q, q_ids, n_del)
    out["erase_ms_p50"] = round(pct(lat_del, 50), 2)
    out["erased"] = n_del
    g.store.wait_vacuum(120)
    out["vacuum_after_erasures_s"] = round(g.store.vacuum(), 2)
    st = idx.stats()
    out["table_mb"] = round(st["table_bytes"] / 2**20, 1)
    out["index_mb"] = round(st["index_bytes"] / 2**20, 1)

    if args.rotate:
        from facegate.gallery.pg.admin import rotate_key

        t0 = time.perf_counter()
        r = rotate_key(g, "bench", actor="bench", rebuild=False)
        out["key_rotation_s"] = round(time.perf_counter() - t0, 1)
        log(n_templates, "key rotation", r)
    g.close()
    return out


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
        "load_avg": os.getloadavg(),
    }


def markdown(results: list[dict]) -> str:
    lines = ["| backend | templates | insert /s | index build s | search p50 ms | p99 ms | recall@1 vs exact | rank-1 | "
             "filtered 1 % p50 / p99 ms | exact p50 ms | identify e2e p50 ms | erase p50 ms | erased returned |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("backend") == "postgresql":
            op = r["operating_point"]
            f = r["filtered_1pct"]
            lines.append(
                f"| PostgreSQL IVFFlat (probes {op.get('probes')}) | {r['templates']:,} | {r['insert_templates_per_s']:,.0f} | "
                f"{r['index_build_seconds']} (lists {r['index_lists']}) | {op.get('p50_ms')} | {op.get('p99_ms')} | "
                f"{op.get('recall_at_1_vs_exact')} | {op.get('rank1_identity')} | {f['search_ms_p50']} / {f['search_ms_p99']} | "
                f"{r['exact_in_db']['p50_ms']} | {r['identify_e2e_ms_p50']} | {r['erase_ms_p50']} | "
                f"{r['erased_returned_by_next_search']} |")
        else:
            f = r.get("filtered_1pct", {})
            idx = r.get("index", {})
            lines.append(
                f"| SQLite + in-memory ({idx.get('mode')}) | {r['templates']:,} | {r.get('enrol_templates_per_s', 0):,.0f} | "
                f"{idx.get('ann_build_seconds', '–')} | {r.get('search_ms_p50')} | {r.get('search_ms_p99')} | "
                f"{r.get('recall_at_1_vs_exact')} | {r.get('rank1_identity')} | {f.get('search_ms_p50')} / "
                f"{f.get('search_ms_p99')} | "
                f"{r.get('exact_search_ms_p50')} | {r.get('identify_e2e_ms_p50')} | {r.get('erase_ms_p50')} | "
                f"{r.get('erased_returned_by_next_search')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100k", help="Comma-separated template counts (100k,1M).")
    ap.add_argument("--queries", type=int, default=500, help="Probes per size (probes sweep).")
    ap.add_argument("--exact-queries", type=int, default=50, help="Probes for the exact-in-database comparison.")
    ap.add_argument("--probes", default="1,2,4,8,12,16,24,32,48,64", help="ivfflat.probes values to sweep (ascending).")
    ap.add_argument("--full-sweep", action="store_true", help="Sweep every probes value, not only up to recall 0.99.")
    ap.add_argument("--erase", type=int, default=100, help="Subjects to erase (then VACUUM).")
    ap.add_argument("--rotate", action="store_true", help="Also time a vector-key rotation.")
    ap.add_argument("--store", default=None, help="A PostgreSQL URL (default: an embedded server in --workdir).")
    ap.add_argument("--no-sqlite", action="store_true", help="Skip the embedded SQLite run.")
    ap.add_argument("--workdir", default=None, help="Where stores live [default: a temp dir].")
    ap.add_argument("--replicas", type=int, default=0, help="Simulate this many serve processes under write load instead.")
    ap.add_argument("--seconds", type=float, default=30.0, help="Duration of the --replicas load.")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "gallery_pg.json"))
    args = ap.parse_args()
    args.probes = [int(p) for p in args.probes.split(",")]
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
    try:
        for n in sizes:
            if args.replicas:
                r = run_replicas(n, args.store or fresh_database(server, f"replicas_{n}"), args, workdir)
                print(json.dumps(r, indent=1))
                results.append(r)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps({"machine": platform.platform(), "results": results}, indent=1))
                continue
            if not args.no_sqlite:
                sq_args = argparse.Namespace(store=None, queries=args.queries, keep=False)
                t0 = time.perf_counter()
                r = GB.synthetic(n, sq_args, workdir)
                r["backend"] = "sqlite"
                r["wall_s"] = round(time.perf_counter() - t0, 1)
                results.append(r)
                print(f"[sqlite {n:,}] {json.dumps(r)[:400]}", file=sys.stderr, flush=True)
            url = args.store or fresh_database(server, f"bench_{n}")
            t0 = time.perf_counter()
            r = run_pg(n, url, args, workdir)
            r["wall_s"] = round(time.perf_counter() - t0, 1)
            results.append(r)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"machine": platform.platform(), "results": results}, indent=1))
    finally:
        if server is not None:
            server.stop()
    Path(args.out).write_text(json.dumps({"machine": platform.platform(), "results": results}, indent=1))
    if not args.replicas:
        print(markdown(results))


if __name__ == "__main__":
    main()
