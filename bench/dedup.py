"""De-duplication benchmark: a whole-collection run at 100k and 1M subjects through the real
store and index, and real duplicates on faces-dev.

    nice -n 10 .venv/bin/python bench/dedup.py --subjects 100k
    nice -n 10 .venv/bin/python bench/dedup.py --subjects 1M --exact-sample 2000 --no-real
    .venv/bin/python bench/dedup.py --subjects 0 --real-only      # faces-dev only

Synthetic part (``facegate.gallery.synth``, 128-d, same-identity cosine ≈ 0.65, impostors
0.00 ± 0.09): N subjects, one template each; ``--planted`` of them (default 1 %) are a second
sample of another subject's identity under a new subject id — a person registered twice. The
collection is filled with ``Gallery.import_templates`` (AES-GCM per template), loaded into the
index (the approximate index built and tuned, as the service does at start-up), then
``Dedup.run`` at ``--fmr`` with the false-pair limit raised explicitly. Reported:
* the arithmetic (pairs compared, expected false pairs) next to what was found;
* recall of the planted pairs (all of them, and those whose exact score passes the threshold);
* recall against exact search's pair set: at 100k every pair, by blocked matrix products over
  all N² scores; at 1M the pairs of a random sample of ``--exact-sample`` query subjects (plus
  every planted subject) against all N, which the run's pairs are compared with on that sample;
* wall time of the run, of the index load and approximate build, and peak RSS.

Real part (faces-dev): two photos of each identity with at least two, enrolled under two
different subject ids (``<identity>#1``, ``#2``), and one photo of each singleton identity;
a run at each calibrated FMR: real duplicate pairs found and missed, false pairs.

Results: bench/out/dedup-<size>.json and a Markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from facegate.calibration import SUPPORTED_FMRS, calibration_for  # noqa: E402
from facegate.gallery import ConsentSpec, Gallery  # noqa: E402
from facegate.gallery.synth import FaceLikeGenerator  # noqa: E402
from facegate.registry.dedup import Dedup  # noqa: E402

MODEL = "sface-2021dec-int8bq"
DIM = 128
FACES_DEV = Path(os.environ.get("FACES_DEV", ROOT.parent / "shared" / "data" / "faces-dev"))
CONSENT = ConsentSpec(("dedup",), evidence_ref="bench")
NO_LIMIT = 1e15  # the false-pair limit raised explicitly: the bench measures the search, not the review queue


def size(text: str) -> int:
    t = text.strip().lower()
    return int(float(t[:-1]) * {"k": 1e3, "m": 1e6}[t[-1]]) if t[-1] in "km" else int(t)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, planted: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Templates (n × dim), identity per subject, and the planted (original, duplicate) pairs."""
    rng = np.random.default_rng(seed)
    ident = np.arange(n, dtype=np.int64)
    dups = rng.choice(np.arange(n // 2, n), planted, replace=False)
    originals = rng.choice(np.arange(n // 2), planted, replace=False)
    ident[dups] = originals
    gen = FaceLikeGenerator(DIM, seed=seed)
    X = np.empty((n, DIM), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        X[a:b] = gen.samples(gen.centres(ident[a:b]), 1, seed=1 + a)
        d = (dups >= a) & (dups < b)  # a duplicate is another sample of its original's identity
        X[dups[d]] = gen.samples(gen.centres(ident[dups[d]]), 1, seed=10_000_000 + a)
    return X, ident, [(int(o), int(d)) for o, d in zip(originals, dups)]


def exact_pairs(X: np.ndarray, thr: float, rows: np.ndarray | None = None, block: int = 512) -> set[tuple[int, int]]:
    """Pairs (i < j) with X[i]·X[j] ≥ thr: all of them (rows None), or those involving ``rows``."""
    out: set[tuple[int, int]] = set()
    n = len(X)
    queries = np.arange(n) if rows is None else np.asarray(rows)
    for a in range(0, len(queries), block):
        q = queries[a : a + block]
        lo = int(q[0]) if rows is None else 0  # all pairs: only columns from this block on (upper triangle)
        S = X[q] @ X[lo:].T
        qi, cj = np.nonzero(thr <= S)
        for i, j in zip(q[qi].tolist(), (cj + lo).tolist()):
            if i != j:
                out.add((min(i, j), max(i, j)))
    return out


def run_synthetic(n: int, planted: int, fmr: float, exact_sample: int | None, workdir: Path, seed: int) -> dict:
    thr = calibration_for(MODEL).threshold(fmr)
    X, _ident, planted_pairs = synthetic(n, planted, seed)
    names = [f"S{i:07d}" for i in range(n)]
    g = Gallery.open(workdir / f"syn-{n}")
    g.create_collection("registry", purposes=["dedup"])
    log(f"importing {n} subjects")
    t0 = time.perf_counter()
    g.import_templates("registry", ((names[i], X[i : i + 1], CONSENT) for i in range(n)), model_id=MODEL, batch=5000)
    t_import = time.perf_counter() - t0
    g.close()
    g = Gallery.open(workdir / f"syn-{n}")  # a fresh process's view: load and build the index as the service does
    log("loading the index and building the approximate index")
    t0 = time.perf_counter()
    g.warm("registry", wait=True)
    t_index = time.perf_counter() - t0
    stats = g.index_stats("registry")
    d = Dedup(g)
    plan = d.plan("registry", purpose="dedup", fmr=fmr, max_expected_false_pairs=NO_LIMIT)
    log(f"index {stats}; running")
    t0 = time.perf_counter()
    logged = [0]

    def progress(done: int, total: int) -> None:
        if done - logged[0] >= max(1, total // 20) or done == total:
            logged[0] = done
            log(f"searched {done}/{total} in {time.perf_counter() - t0:.0f} s")

    rep = d.run("registry", purpose="dedup", fmr=fmr, max_expected_false_pairs=NO_LIMIT, actor="bench",
                on_progress=progress)
    t_run = time.perf_counter() - t0
    log(f"run done in {t_run:.0f} s: {rep.pairs} pairs; exact pairs next")
    index_of = {s: i for i, s in enumerate(names)}
    found = {(min(index_of[p.a], index_of[p.b]), max(index_of[p.a], index_of[p.b])) for c in rep.clusters for p in c.pairs}
    g.close()
    t0 = time.perf_counter()
    if exact_sample is None:
        truth, sample = exact_pairs(X, thr), None
    else:
        rng = np.random.default_rng(seed + 1)
        sample = np.unique(np.concatenate([rng.choice(n, exact_sample, replace=False),
                                           np.asarray([s for p in planted_pairs for s in p])]))
        truth = exact_pairs(X, thr, sample)
        in_sample = set(sample.tolist())
        found_scope = {p for p in found if p[0] in in_sample or p[1] in in_sample}
    t_exact = time.perf_counter() - t0
    scope = found if exact_sample is None else found_scope
    planted_set = {(min(a, b), max(a, b)) for a, b in planted_pairs}
    planted_passing = planted_set & truth
    return {
        "subjects": n, "planted": planted, "fmr": fmr, "threshold": thr,
        "pairs_compared": plan.pairs_compared, "expected_false_pairs": plan.expected_false_pairs,
        "pairs_found": len(found), "clusters": len(rep.clusters),
        "exact_scope": "all pairs" if exact_sample is None else f"pairs of {len(sample)} sampled subjects (incl. planted)",
        "exact_pairs": len(truth), "found_in_scope": len(scope & truth), "extra_in_scope": len(scope - truth),
        "recall_vs_exact": len(scope & truth) / max(1, len(truth)),
        "planted_recall": len(planted_set & found) / max(1, len(planted_set)),
        "planted_above_threshold": len(planted_passing),
        "planted_recall_above_threshold": len(planted_passing & found) / max(1, len(planted_passing)),
        "seconds": {"import": round(t_import, 1), "index_load_and_build": round(t_index, 1), "run": round(t_run, 1),
                    "exact": round(t_exact, 1)},
        "index": {k: stats[k] for k in ("mode", "nlist", "nprobe", "self_test_recall_at_1")},
        "peak_rss_mb": round(peak_rss_mb()),
    }


def run_real(workdir: Path) -> dict:
    """faces-dev: two photos per identity under two ids; pairs found, missed and false per FMR."""
    from facegate.engine import FaceEngine

    images: dict[str, list[Path]] = {}
    for p in sorted((FACES_DEV / "images").glob("*/*.jpg")):
        images.setdefault(p.parent.name, []).append(p)
    g = Gallery.open(workdir / "real", engine=FaceEngine())
    g.create_collection("people", purposes=["dedup"])
    enrolled: dict[str, list[str]] = {}
    for person, paths in images.items():
        want = 2 if len(paths) >= 2 else 1
        for path in paths:
            if len(enrolled.get(person, [])) == want:
                break
            ext = f"{person}#{len(enrolled.get(person, [])) + 1}"
            if g.enroll("people", ext, [path], consent=CONSENT).accepted:
                enrolled.setdefault(person, []).append(ext)
    twice = {p for p, ids in enrolled.items() if len(ids) == 2}
    d = Dedup(g)
    out = {"identities": len(enrolled), "enrolled_twice": len(twice),
           "subjects": sum(len(v) for v in enrolled.values()), "by_fmr": {}}
    for fmr in sorted(SUPPORTED_FMRS):
        rep = d.run("people", purpose="dedup", fmr=fmr, max_expected_false_pairs=NO_LIMIT, actor="bench")
        pairs = [(p.a, p.b) for c in rep.clusters for p in c.pairs]
        true = {tuple(sorted(p)) for p in pairs if p[0].split("#")[0] == p[1].split("#")[0]}
        out["by_fmr"][f"{fmr:g}"] = {"threshold": rep.run.threshold, "pairs_compared": rep.run.pairs_compared,
                                     "expected_false_pairs": rep.run.expected_false_pairs, "found": len(true),
                                     "missed": len(twice) - len(true), "false": len(pairs) - len(true)}
    g.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", default="100k", help="N (e.g. 100k, 1M); 0 skips the synthetic part")
    ap.add_argument("--planted", type=int, default=None, help="planted duplicates [default: 1 %% of N]")
    ap.add_argument("--fmr", type=float, default=min(SUPPORTED_FMRS))
    ap.add_argument("--exact-sample", type=int, default=None,
                    help="exact pairs of this many sampled subjects only [default: all pairs]")
    ap.add_argument("--no-real", action="store_true", help="skip the faces-dev part")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    n = size(args.subjects)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="facegate-dedup-"))
    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                    "load_at_start": os.getloadavg()}
    if n:
        result["synthetic"] = run_synthetic(n, args.planted if args.planted is not None else max(1, n // 100), args.fmr,
                                            args.exact_sample, work, args.seed)
        print(json.dumps(result["synthetic"], indent=1))
    if not args.no_real and (FACES_DEV / "images").is_dir():
        result["real"] = run_real(work)
        print(json.dumps(result["real"], indent=1))
    result["load_at_end"] = os.getloadavg()
    out = ROOT / "bench" / "out" / f"dedup-{args.subjects if n else 'real'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
