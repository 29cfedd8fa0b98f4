"""Gallery benchmark: 1:N search at 10k / 100k / 1M templates through the real store, and 1:N
identification on real photos (faces-dev).

    .venv/bin/python bench/gallery.py --sizes 10k,100k          # quick
    nice -n 10 .venv/bin/python bench/gallery.py --sizes 1M --no-real
    nice -n 10 .venv/bin/python bench/gallery.py --sizes 10M --no-real --workdir DIR --keep   # then --reuse
    nice -n 10 .venv/bin/python bench/gallery.py --sizes 1M --no-real --stores sqlite,embedded-postgres
    .venv/bin/python bench/gallery.py --sizes 100k --stores postgresql://…   # an existing PostgreSQL

Each store in ``--stores`` (``sqlite``: a file per size; ``embedded-postgres``: a server per size
in the work dir; or a postgresql:// URL) is measured on the same data, side by side in one table.
Both are searched by the same in-memory index.

Synthetic part (per size N templates = N/2 identities × 2 templates; face-like clustered vectors
from facegate.gallery.synth at 128-d, same-identity cosine ≈ 0.65, impostors 0.00 ± 0.09):
* enrol throughput: Gallery.import_templates through the real store (AES-GCM per template, one
  transaction per 1000 subjects, change feed and audit events included);
* start-up, twice: without a snapshot (a fresh Gallery decrypting every template into the index:
  exact search ready; then the background approximate index — train + add + nprobe self-test —
  ready; then its snapshot written), and from that snapshot (SQLite; exact and approximate
  ready together); the snapshot's size and write time;
* search latency p50/p99 of the index (what the 5 ms target is about) and of the whole
  ``identify_vector`` call (index + consent re-check + audit event commit);
* recall@1 vs exact (same best score as a brute-force float32 search), rank-1 identity, and the
  false-positive identification rate of probes of people never enrolled;
* a consent filter that only 1 % of subjects satisfy (latency, rank-1);
* erasure: delete a subject that the probe found, search again at once: it must be gone;
* memory: process RSS growth and the index's own accounting.

Real-photo part: enrol one photo per identity of faces-dev (the first that passes the
enrolment quality gate), hold out the singleton identities and every 5th other identity as
"never enrolled", probe with every other photo: rank-1 (closed set), true-positive
identification rate at the collection threshold, and FPIR for the never-enrolled probes.

Results: bench/out/gallery.json and a Markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from facegate.gallery import ConsentSpec, Gallery  # noqa: E402
from facegate.gallery.synth import FaceLikeGenerator  # noqa: E402

MODEL = "sface-2021dec-int8bq"
DIM = 128
FACES_DEV = Path(os.environ.get("FACES_DEV", ROOT.parent / "shared" / "data" / "faces-dev"))


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def parse_size(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if text[-1] in "km" else text) * mult)


# --- synthetic ---------------------------------------------------------------------------------


def fill(g: Gallery, gen: FaceLikeGenerator, n_id: int, per: int, log) -> tuple[np.ndarray, float]:
    """Enrol ``n_id`` synthetic identities with ``per`` templates each into collection "bench"
    through the real store (every 100th consents to "rare" as well as "common"). Returns the
    templates in enrolment order and the seconds it took."""
    common, both = ConsentSpec(["common"], evidence_ref="bench"), ConsentSpec(["common", "rare"], evidence_ref="bench")
    X = np.empty((n_id * per, DIM), np.float32)
    chunk = 10_000
    t0 = time.perf_counter()
    for start in range(0, n_id, chunk):
        ids = np.arange(start, min(n_id, start + chunk))
        V = gen.samples(gen.centres(ids), per, seed=int(start))
        X[start * per : (start + len(ids)) * per] = V
        items = [(f"id{i}", V[per * k : per * k + per], both if i % 100 == 0 else common) for k, i in enumerate(ids.tolist())]
        g.import_templates("bench", items, model_id=MODEL, batch=1000)
        if start and start % 100_000 == 0:
            log(f"enrolled {start * per:,} templates, {start * per / (time.perf_counter() - t0):,.0f}/s")
    return X, time.perf_counter() - t0


def regenerate(gen: FaceLikeGenerator, n_id: int, per: int) -> np.ndarray:
    """The templates ``fill`` enrols, without enrolling them (``--reuse``)."""
    X = np.empty((n_id * per, DIM), np.float32)
    for start in range(0, n_id, 10_000):
        ids = np.arange(start, min(n_id, start + 10_000))
        X[start * per : (start + len(ids)) * per] = gen.samples(gen.centres(ids), per, seed=int(start))
    return X


def start(data: Path, store: str | None, log) -> tuple[Gallery, dict]:
    """Open the gallery as a fresh process would and time: exact search ready (``warm``), the
    approximate index ready (polled: its swap into the index), and, where one was written after
    the build, the snapshot write. Wall and CPU seconds (a shared host inflates wall time)."""
    t0, c0 = time.perf_counter(), time.process_time()
    g = Gallery.open(data, store=store)
    g.warm("bench")
    out = {"exact_ready_s": round(time.perf_counter() - t0, 2), "exact_cpu_s": round(time.process_time() - c0, 2)}
    while g.index_stats("bench")["mode"] != "ivf-pq4fs":
        time.sleep(0.05)
    out["approx_ready_s"] = round(time.perf_counter() - t0, 2)
    out["approx_cpu_s"] = round(time.process_time() - c0, 2)
    g.warm("bench", wait=True)  # the snapshot write, after a build
    stats = g.index_stats("bench")
    out["loaded_from"] = stats["loaded_from"]
    out["snapshot_write_s"] = stats["snapshot_write_seconds"]
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    log(f"start-up from the {stats['loaded_from']}: {json.dumps(out)}")
    return g, out


def start_elsewhere(data: Path, store: str | None) -> dict:
    """:func:`start` in a child process (``--start-only``): its figures."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--start-only", str(data), "--stores", store or "sqlite"]
    done = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)  # its log goes to our stderr
    return json.loads(done.stdout.splitlines()[-1])


def reenrol(g: Gallery, X: np.ndarray, ids: np.ndarray, per: int) -> None:
    """Enrol again, with their original templates, those of subjects ``ids`` that are missing."""
    from facegate.gallery.errors import SubjectNotFoundError

    for i in ids.tolist():
        try:
            g.get_subject("bench", f"id{i}")
        except SubjectNotFoundError:
            purposes = ["common", "rare"] if i % 100 == 0 else ["common"]
            g.import_templates("bench", [(f"id{i}", X[per * i : per * i + per], ConsentSpec(purposes, evidence_ref="bench"))],
                               model_id=MODEL)


def exact_nearest(Q: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score and row of X nearest each probe in Q by brute force over the generated vectors (not
    an index's copy): the exact reference recall is measured against."""
    best = np.full(len(Q), -np.inf, np.float32)
    best_row = np.zeros(len(Q), np.int64)
    for s in range(0, len(X), 100_000):
        S = Q @ X[s : s + 100_000].T
        j = S.argmax(1)
        v = S[np.arange(len(Q)), j]
        b = v > best
        best[b], best_row[b] = v[b], s + j[b]
    return best, best_row


def identify_e2e(g: Gallery, Q: np.ndarray, warm: np.ndarray) -> dict[str, float]:
    """identify_vector latency (index + consent re-check in the DB + audit event commit), after
    calls with ``warm`` that warm the connection pool and the server's prepared statements."""
    for q in warm:
        g.identify_vector("bench", q, purpose="common", model_id=MODEL, actor="bench")
    lat = []
    for q in Q:
        t = time.perf_counter()
        g.identify_vector("bench", q, purpose="common", model_id=MODEL, actor="bench")
        lat.append((time.perf_counter() - t) * 1000)
    return {"identify_e2e_ms_p50": round(pct(lat, 50), 3), "identify_e2e_ms_p99": round(pct(lat, 99), 3)}


def fpir_non_enrolled(g: Gallery, gen: FaceLikeGenerator, n_id: int) -> float:
    """Share of 300 probes of people never enrolled that get a candidate at or above the
    collection threshold (false positives)."""
    Qn = gen.samples(gen.centres(np.arange(n_id, n_id + 300)), 1, seed=5)
    fp = sum(bool(g.identify_vector("bench", q, purpose="common", model_id=MODEL, actor="bench").candidates) for q in Qn)
    return round(fp / len(Qn), 4)


def erase_and_search(g: Gallery, idx, Q: np.ndarray, q_ids: np.ndarray, count: int) -> tuple[list[float], int]:
    """Erase the first ``count`` probed subjects one at a time; the very next search must not
    return the erased subject. Returns the erasure latencies (ms) and how many were returned."""
    lat, still = [], 0
    for i in range(count):
        ext = f"id{q_ids[i]}"
        t = time.perf_counter()
        g.delete_subject("bench", ext, actor="bench")
        lat.append((time.perf_counter() - t) * 1000)
        hits, _ = idx.search(Q[i], 5, "common", time.time())
        still += int(ext in [h.external_id for h in hits])
    return lat, still


def store_label(store: str | None) -> str:
    return "sqlite" if store is None else "postgresql"


def synthetic(n_templates: int, args: argparse.Namespace, workdir: Path, store: str | None = None) -> dict:
    """One size on one store (``store``: None = SQLite file, else a URL or embedded-postgres;
    default ``args.store``)."""
    store = getattr(args, "store", None) if store is None else (None if store == "sqlite" else store)
    per = 2
    n_id = n_templates // per
    gen = FaceLikeGenerator(DIM, seed=11)
    data = workdir / f"synthetic-{store_label(store)}-{n_templates}"
    out: dict = {"templates": n_id * per, "identities": n_id, "store": store_label(store)}
    log = lambda *a: print(f"[{store_label(store)} {n_templates:,}]", *a, file=sys.stderr, flush=True)  # noqa: E731

    # --- enrol through the real store -----------------------------------------------------
    rng = np.random.default_rng(5)
    nq = min(args.queries, n_id)
    q_ids = rng.choice(n_id, nq, replace=False)
    n_erase = min(20, nq)
    if args.reuse and (data / "gallery.db").exists() and store is None:
        X = regenerate(gen, n_id, per)  # the same vectors fill() enrolled
        g = Gallery.open(data)
        reenrol(g, X, q_ids[:n_erase], per)  # those an earlier run's erasure step removed
        g.close()
        log("reusing the enrolled store")
    else:
        shutil.rmtree(data, ignore_errors=True)
        g = Gallery.open(data, store=store)
        g.create_collection("bench", purposes=["common", "rare"])
        X, enrol_s = fill(g, gen, n_id, per, log)
        out["enrol_templates_per_s"] = round(n_id * per / enrol_s, 1)
        out["enrol_seconds"] = round(enrol_s, 1)
        if store is not None:  # as after any bulk import: else autovacuum runs during the measurements
            with g.store.autocommit() as conn:
                t = time.perf_counter()
                conn.exec_driver_sql("VACUUM ANALYZE")
                out["vacuum_analyze_seconds"] = round(time.perf_counter() - t, 1)
        g.close()
        log(f"enrolled in {enrol_s:.1f}s")
    if store is None:
        out["db_mb"] = round(sum(p.stat().st_size for p in data.glob("gallery.db*")) / 2**20, 1)

    # The ground truth, before any start-up: a serving process holds no second copy of the
    # vectors (5 GB at 10M, on a machine whose memory also caches the database and the snapshot).
    Q = gen.samples(gen.centres(q_ids), 1, seed=424242)  # fresh photos of enrolled people
    best, best_row = exact_nearest(Q, X)
    exact_subject = best_row // per
    del X

    # --- start-up: a fresh process state rebuilds the index from the store ------------------
    # First without a snapshot (every template decrypted, the approximate index trained and
    # filled; the snapshot is written after), then from that snapshot.
    # The first start-up runs in a process of its own: a serve process starts once, and what the
    # first gallery freed is not what a fresh process has.
    shutil.rmtree(data / "index-snapshots", ignore_errors=True)
    out["startup_no_snapshot"] = start_elsewhere(data, store)
    if store is None:
        snap_files = list((data / "index-snapshots").glob("*.snap"))
        out["snapshot_mb"] = round(sum(p.stat().st_size for p in snap_files) / 2**20, 1)
    gc.collect()
    rss0 = rss_mb()
    g, out["startup_snapshot"] = start(data, store, log)  # PostgreSQL keeps no snapshot: a second full load
    out["index"] = g.index_stats("bench")
    out["rss_growth_mb"] = round(rss_mb() - rss0, 1)

    col = g.get_collection("bench")
    idx = g.index.get(g._col_row("bench").id, DIM, MODEL)  # noqa: SLF001 - the bench measures the index itself

    now = time.time()
    lat, hit_exact, rank1 = [], 0, 0
    for i in range(nq):
        t = time.perf_counter()
        hits, _ = idx.search(Q[i], 5, "common", now)
        lat.append((time.perf_counter() - t) * 1000)
        top = hits[0]
        hit_exact += int(top.external_id == f"id{exact_subject[i]}" or abs(top.score - best[i]) < 1e-4)
        rank1 += int(top.external_id == f"id{q_ids[i]}")
    out["search_ms_p50"] = round(pct(lat, 50), 3)
    out["search_ms_p99"] = round(pct(lat, 99), 3)
    out["recall_at_1_vs_exact"] = round(hit_exact / nq, 4)
    out["rank1_identity"] = round(rank1 / nq, 4)
    out["queries"] = nq

    # Exact search at this size, for comparison (the same index code path, forced exact).
    lat_exact = []
    saved = idx.ann
    idx.ann = None
    for i in range(min(nq, 100)):
        t = time.perf_counter()
        idx.search(Q[i], 5, "common", now)
        lat_exact.append((time.perf_counter() - t) * 1000)
    idx.ann = saved
    out["exact_search_ms_p50"] = round(pct(lat_exact, 50), 3)

    out.update(identify_e2e(g, Q[: min(nq, 200)], warm=Q[-20:]))

    # 1 % consent filter.
    rare_ids = rng.choice(np.arange(0, n_id, 100), min(200, max(1, n_id // 100)), replace=False)
    Qr = gen.samples(gen.centres(rare_ids), 1, seed=99)
    lat_r, ok_r = [], 0
    for i in range(len(rare_ids)):
        t = time.perf_counter()
        hits, allowed = idx.search(Qr[i], 5, "rare", now)
        lat_r.append((time.perf_counter() - t) * 1000)
        ok_r += int(bool(hits) and hits[0].external_id == f"id{rare_ids[i]}")
        assert all(int(h.external_id[2:]) % 100 == 0 for h in hits), "a subject without the purpose was returned"
    out["filtered_1pct"] = {"allowed_subjects": allowed, "search_ms_p50": round(pct(lat_r, 50), 3),
                            "search_ms_p99": round(pct(lat_r, 99), 3), "rank1_identity": round(ok_r / len(rare_ids), 4)}

    out["threshold"] = round(col.threshold, 6)
    out["fpir_non_enrolled"] = fpir_non_enrolled(g, gen, n_id)
    out["expected_fpir_n_x_fmr"] = min(1.0, n_id * col.fmr)
    lat_del, out["erased_returned_by_next_search"] = erase_and_search(g, idx, Q, q_ids, n_erase)
    out["erase_ms_p50"] = round(pct(lat_del, 50), 2)
    g.close()
    if store == "embedded-postgres":
        from facegate.pgserver import for_data_dir

        for_data_dir(data).stop()
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    return out


# --- real photos -------------------------------------------------------------------------------


def real_photos(args: argparse.Namespace, workdir: Path) -> dict:
    from facegate import FaceEngine
    from facegate.errors import FacegateError

    root = FACES_DEV / "images"
    people = sorted(p for p in root.iterdir() if p.is_dir())
    photos = {p.name: sorted(p.glob("*.jpg")) for p in people}
    multi = [n for n in photos if len(photos[n]) >= 2]
    held_out = set(n for n in photos if len(photos[n]) < 2) | set(multi[4::5])
    enrolled_people = [n for n in photos if n not in held_out]

    engine = FaceEngine()
    data = workdir / "faces-dev"
    shutil.rmtree(data, ignore_errors=True)
    g = Gallery.open(data, engine=engine, store=args.store)
    col = g.create_collection("dev", purposes=["research"])
    consent = ConsentSpec(["research"], evidence_ref="bench")
    enrolled: dict[str, Path] = {}
    tries = 0
    t0 = time.perf_counter()
    for name in enrolled_people:
        for photo in photos[name]:
            tries += 1
            r = g.enroll("dev", name, [photo], consent=consent, actor="bench")
            if r.accepted:
                enrolled[name] = photo
                break
    enrol_s = time.perf_counter() - t0
    idx = g.index.get(g._col_row("dev").id, engine.spec.embedding_dim, engine.model_id)  # noqa: SLF001

    def probe(photo: Path):
        try:
            vec = engine.embed(photo).vector
        except FacegateError:
            return None
        hits, _ = idx.search(vec, 1, "research", time.time())
        res = g.identify_vector("dev", vec, purpose="research", model_id=engine.model_id, actor="bench")
        return hits, res

    genuine = [(n, p) for n in enrolled for p in photos[n] if p != enrolled[n]]
    impostor = [(n, p) for n in held_out for p in photos[n]]
    rank1 = tpir = fta = 0
    top_scores_gen: list[tuple[bool, float]] = []
    for name, p in genuine:
        r = probe(p)
        if r is None:
            fta += 1
            continue
        hits, res = r
        rank1 += int(bool(hits) and hits[0].external_id == name)
        top_scores_gen.append((bool(hits) and hits[0].external_id == name, hits[0].score if hits else -1.0))
        tpir += int(bool(res.candidates) and res.candidates[0].subject == name)
    fp = fta_i = 0
    top_scores_imp: list[float] = []
    for _name, p in impostor:
        r = probe(p)
        if r is None:
            fta_i += 1
            continue
        hits, res = r
        fp += int(bool(res.candidates))
        top_scores_imp.append(hits[0].score if hits else -1.0)
    n_gen = len(genuine) - fta
    n_imp = len(impostor) - fta_i
    per_fmr = {}
    from facegate.calibration import calibration_for

    for fmr, thr in sorted(calibration_for(engine.model_id).thresholds.items(), reverse=True):
        per_fmr[f"{fmr:g}"] = {
            "threshold": round(thr, 6),
            "tpir": round(sum(ok and s >= thr for ok, s in top_scores_gen) / max(n_gen, 1), 4),
            "fpir": round(sum(s >= thr for s in top_scores_imp) / max(n_imp, 1), 4),
        }
    g.close()
    shutil.rmtree(data, ignore_errors=True)
    return {
        "identities": len(photos), "enrolled": len(enrolled), "held_out": len(held_out),
        "enrol_attempts": tries, "enrol_photos_per_s": round(tries / enrol_s, 2),
        "genuine_probes": n_gen, "genuine_fta": fta, "non_enrolled_probes": n_imp, "non_enrolled_fta": fta_i,
        "rank1_closed_set": round(rank1 / max(n_gen, 1), 4),
        "collection_fmr": col.fmr, "threshold": round(col.threshold, 6),
        "tpir_at_threshold": round(tpir / max(n_gen, 1), 4), "fpir_non_enrolled": round(fp / max(n_imp, 1), 4),
        "by_fmr": per_fmr,
    }


# --- master-key rotation -------------------------------------------------------------------------


def rotation(n_subjects: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Cost of ``Gallery.rotate_master_key`` with ``n_subjects`` subjects (2 templates each):
    total time and its phases (re-wrap transaction, durable commit, key-file moves), how long an
    enrolment from another instance waits meanwhile, and the first search of an instance that
    held the old key (it reloads the key file)."""
    from facegate.gallery import master_key as mk

    data = workdir / f"rotation-{n_subjects}"
    shutil.rmtree(data, ignore_errors=True)
    gen = FaceLikeGenerator(DIM, seed=5)
    log = lambda *a: print(f"[rotation {n_subjects:,}]", *a, file=sys.stderr, flush=True)  # noqa: E731
    g = Gallery.open(data, store=args.store)
    g.create_collection("bench", purposes=["common"])
    cons = ConsentSpec(["common"], evidence_ref="bench")
    t0 = time.perf_counter()
    for start in range(0, n_subjects, 10_000):
        ids = np.arange(start, min(n_subjects, start + 10_000))
        V = gen.samples(gen.centres(ids), 2, seed=int(start))
        g.import_templates("bench", [(f"id{i}", V[2 * k: 2 * k + 2], cons) for k, i in enumerate(ids.tolist())],
                           model_id=MODEL, batch=1000)
    log(f"enrolled in {time.perf_counter() - t0:.1f} s")
    other = Gallery.open(data, store=args.store)  # another process's view: index loaded, old key held
    probe = gen.samples(gen.centres(np.arange(1)), 1, seed=999)[0]
    other.identify_vector("bench", probe, purpose="common", model_id=MODEL, actor="bench")
    writer = Gallery.open(data, store=args.store)
    waits: list[float] = []
    stop = False

    def enrol_loop() -> None:
        k = 0
        while not stop:
            v = gen.samples(gen.centres(np.arange(n_subjects + k, n_subjects + k + 1)), 1, seed=k)
            t = time.perf_counter()
            writer.import_templates("bench", [(f"w{k}", v, cons)], model_id=MODEL, actor="bench")
            waits.append(time.perf_counter() - t)
            k += 1
            time.sleep(0.01)

    marks: dict[str, float] = {}
    th = threading.Thread(target=enrol_loop, daemon=True)
    th.start()
    time.sleep(0.3)
    n_before = len(waits)
    t0 = time.perf_counter()
    rot = mk.rotate(g, actor="bench", step=lambda name: marks.setdefault(name, time.perf_counter() - t0))
    total = time.perf_counter() - t0
    time.sleep(0.3)
    stop = True
    th.join()
    t1 = time.perf_counter()
    hit = other.identify_vector("bench", probe, purpose="common", model_id=MODEL, actor="bench")
    follow_ms = (time.perf_counter() - t1) * 1000
    assert hit.candidates and hit.candidates[0].subject == "id0" and other.crypto.master_key_id == rot.new_key_id
    during = waits[n_before:] or [0.0]
    out = {
        "subjects": n_subjects, "templates": 2 * n_subjects, "rewrapped": rot.subjects,
        "rotation_s": round(total, 3),
        "new_key_file_s": round(marks.get("new_key_written", 0.0), 3),
        "rewrap_s": round(marks["before_commit"] - marks.get("new_key_written", 0.0), 3),
        "durable_commit_s": round(marks["committed"] - marks["before_commit"], 3),
        "key_files_s": round(total - marks["committed"], 3),
        "subjects_per_s": round(rot.subjects / max(marks["before_commit"] - marks.get("new_key_written", 0.0), 1e-9)),
        "concurrent_enrol_max_wait_s": round(max(during), 3),
        "concurrent_enrol_median_wait_ms": round(float(np.median(during)) * 1000, 1),
        "other_instance_first_search_ms": round(follow_ms, 1),
        "db_mb": round(sum(f.stat().st_size for f in data.glob("gallery.db*")) / 1e6, 1) if args.store is None else None,
    }
    for x in (g, other, writer):
        x.close()
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    log(json.dumps(out))
    return out


# --- main --------------------------------------------------------------------------------------


def startup_cell(r: dict) -> str:
    """'exact / approx s' without a snapshot, then from the snapshot (older results: one pair)."""
    if "startup_no_snapshot" not in r:
        return f"{r['startup_exact_ready_s']} / {r['startup_ann_ready_s']}"
    a, b = r["startup_no_snapshot"], r["startup_snapshot"]
    return (f"{a['exact_ready_s']} / {a['approx_ready_s']}; snapshot {b['exact_ready_s']} / {b['approx_ready_s']} "
            f"({r.get('snapshot_mb', '-')} MB, written in {a['snapshot_write_s']} s)")



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10k,100k,1M", help="Comma-separated template counts (10k,100k,1M).")
    ap.add_argument("--queries", type=int, default=1000, help="Probes per size.")
    ap.add_argument("--stores", default="sqlite", help="Comma-separated stores measured side by side: sqlite (a file "
                    "per size), embedded-postgres (a server per size) or postgresql:// URLs [default: sqlite].")
    ap.add_argument("--workdir", default=None, help="Where the benchmark stores live [default: a temp dir].")
    ap.add_argument("--keep", action="store_true", help="Keep the synthetic stores.")
    ap.add_argument("--reuse", action="store_true", help="Reuse a kept SQLite store of the same size in --workdir "
                    "instead of enrolling again (start-up and search are measured again).")
    ap.add_argument("--no-real", action="store_true", help="Skip the real-photo part.")
    ap.add_argument("--real-only", action="store_true", help="Only the real-photo part.")
    ap.add_argument("--rotation-sizes", default="", help="Measure master-key rotation at these subject counts (e.g. 10k,100k); "
                    "use with --sizes '' --no-real to measure only that.")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "gallery.json"))
    ap.add_argument("--start-only", metavar="DATA", help="Time one start-up of the gallery in DATA (the first store of "
                    "--stores), print its figures as JSON and exit (what the synthetic part runs in a child process).")
    args = ap.parse_args()
    os.environ.pop("FACEGATE_MASTER_KEY", None)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if args.start_only:
        data = Path(args.start_only)
        g, figures = start(data, None if stores[0] == "sqlite" else stores[0],
                           lambda *a: print(f"[{data.name}]", *a, file=sys.stderr, flush=True))
        g.close()
        print(json.dumps(figures))
        return
    args.store = None if stores[0] == "sqlite" else stores[0]  # rotation and real photos: the first store
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="facegate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)

    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg(),
                          "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    results.setdefault("synthetic", {})
    if not args.real_only:
        for size in [parse_size(s) for s in args.sizes.split(",") if s.strip()]:
            for store in stores:
                res = synthetic(size, args, workdir, store)
                res["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
                results["synthetic"][f"{res['store']} {size}"] = res
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(results, indent=2) + "\n")
    for size in [parse_size(s) for s in args.rotation_sizes.split(",") if s.strip()]:
        res = rotation(size, args, workdir)
        res["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        results.setdefault("master_key_rotation", {})[str(size)] = res
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_real:
        results["real_photos"] = real_photos(args, workdir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)

    if results["synthetic"]:
        print("| templates | store | enrol tpl/s | start-up exact / approx s (no snapshot; snapshot) | "
              "search p50 / p99 ms | exact p50 ms | "
              "identify e2e p50 / p99 ms | recall@1 vs exact | rank-1 | 1 % filter p50 ms, rank-1 | FPIR non-enrolled (N×FMR) | "
              "erased returned | RSS MB | mode |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sorted(results["synthetic"].values(), key=lambda r: (r["templates"], r.get("store", "sqlite"))):
            f = r["filtered_1pct"]
            print(f"| {r['templates']:,} | {r.get('store', 'sqlite')} | {r.get('enrol_templates_per_s', 0):,.0f} | "
                  f"{startup_cell(r)} | "
                  f"{r['search_ms_p50']} / {r['search_ms_p99']} | {r['exact_search_ms_p50']} | {r['identify_e2e_ms_p50']} / "
                  f"{r['identify_e2e_ms_p99']} | "
                  f"{r['recall_at_1_vs_exact']} | {r['rank1_identity']} | {f['search_ms_p50']}, {f['rank1_identity']} | "
                  f"{r['fpir_non_enrolled']} ({r['expected_fpir_n_x_fmr']:.2g}) | {r['erased_returned_by_next_search']} | "
                  f"{r['rss_growth_mb']} | {r['index']['mode']} nprobe {r['index'].get('nprobe')}/{r['index'].get('nlist')} |")
    if results.get("master_key_rotation"):
        print("\n| subjects | rotation s | re-wrap s (subjects/s) | durable commit s | key files s | enrol from another "
              "instance: max / median wait | other instance's first search after |")
        print("|---|---|---|---|---|---|---|")
        for size, r in sorted(results["master_key_rotation"].items(), key=lambda kv: int(kv[0])):
            print(f"| {int(size):,} | {r['rotation_s']} | {r['rewrap_s']} ({r['subjects_per_s']:,}/s) | "
                  f"{r['durable_commit_s']} | {r['key_files_s']} | "
                  f"{r['concurrent_enrol_max_wait_s']} s / {r['concurrent_enrol_median_wait_ms']} ms | "
                  f"{r['other_instance_first_search_ms']} ms |")
    if "real_photos" in results:
        r = results["real_photos"]
        print(f"\nfaces-dev: {r['enrolled']} enrolled ({r['enrol_attempts']} attempts), {r['genuine_probes']} genuine probes, "
              f"{r['non_enrolled_probes']} non-enrolled probes: rank-1 {r['rank1_closed_set']}, TPIR {r['tpir_at_threshold']} "
              f"and FPIR {r['fpir_non_enrolled']} at threshold {r['threshold']} (FMR {r['collection_fmr']:g}); "
              f"by FMR: {json.dumps(r['by_fmr'])}")


if __name__ == "__main__":
    main()
