"""Service load test: the real `facegate serve` on 127.0.0.1, N concurrent clients for a fixed
time, mixed 1:1 verify / 1:N identify / enrol over real photos (faces-dev).

    nice -n 10 .venv/bin/python bench/service.py                 # 16 clients, 60 s
    .venv/bin/python bench/service.py --duration 10 --clients 4  # quick

Setup: a fresh data dir, the first-start admin key, one collection, one enrolled photo per
identity of faces-dev (identities with 2+ photos), and one API key per client (scopes verify,
identify, enroll on that collection: per-key rate limits apply as in production).

Each client loops until the deadline, picking an operation at random (default weights
verify 0.4, identify 0.4, enrol 0.2):
* verify: a held-out photo of an enrolled identity against that identity's subject (purpose kyc);
* identify: a held-out photo, top 5;
* enrol: a new subject (with consent) from a photo that passed the quality gate in setup.

Reported: requests/s, p50/p99/max latency per operation and overall, every non-2xx or
transport error (must be zero), enrolments acknowledged vs subjects counted in the store
afterwards (must match: no lost enrolments), server RSS before/after, and the decision mix.
Results: bench/out/service.json and a Markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

from facegate.client import wait_ready

ROOT = Path(__file__).resolve().parents[1]
DEV = Path(os.environ.get("FACEGATE_DEV_DATA", ROOT.parent / "shared" / "data" / "faces-dev"))
OUT = ROOT / "bench" / "out"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def rss_mb(pid: int) -> float:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - psutil is a bench extra; fall back to /proc
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_server(data_dir: Path, port: int, workers: int | None) -> tuple[subprocess.Popen, str, Path]:
    log = data_dir / "server.log"
    out = data_dir / "server.out"
    cmd = [sys.executable, "-c", "from facegate.cli import app; app()", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    with open(out, "wb") as o, open(log, "wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, cwd=str(data_dir))
    url = f"http://127.0.0.1:{port}"

    def alive() -> None:
        if proc.poll() is not None:
            sys.exit(f"server exited: {log.read_text()[-2000:]}")

    wait_ready(url, timeout=90, alive=alive)
    m = re.search(r"\b(fg_[0-9a-f]{8}_[A-Za-z0-9_-]{43})\b", out.read_text())
    if not m:
        sys.exit("the server did not print a first-start admin key")
    return proc, m.group(1), log


def dev_photos() -> dict[str, list[Path]]:
    images = DEV / "images"
    if not images.is_dir():
        sys.exit(f"no faces-dev images at {images} (set FACEGATE_DEV_DATA)")
    out = {}
    for d in sorted(images.iterdir()):
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(files) >= 2:
            out[d.name] = files
    return out


def setup(url: str, admin: str, clients: int, photos: dict[str, list[Path]], collection: str):
    a = httpx.Client(base_url=url, headers={"X-API-Key": admin}, timeout=120)
    r = a.post("/v1/collections", json={"name": collection, "purposes": ["kyc"], "description": "bench/service.py"})
    r.raise_for_status()
    enrolled: dict[str, str] = {}  # identity -> subject id
    probes: list[tuple[str, bytes]] = []  # (identity, jpeg)
    enrol_pool: list[bytes] = []
    for i, (ident, files) in enumerate(photos.items()):
        sid = f"S-{i:03d}"
        used = None
        for f in files:
            r = a.post(f"/v1/collections/{collection}/subjects/{sid}/faces", files={"images": f.read_bytes()},
                       data={"purposes": "kyc", "evidence_ref": "bench"})
            if r.status_code in (200, 201) and r.json()["accepted"]:
                used = f
                enrolled[ident] = sid
                enrol_pool.append(f.read_bytes())
                break
        for f in files:
            if f != used and ident in enrolled:
                probes.append((ident, f.read_bytes()))
    keys = []
    for c in range(clients):
        r = a.post("/v1/keys", json={"name": f"bench-client-{c}", "scopes": ["verify", "identify", "enroll"],
                                     "collections": [collection]})
        r.raise_for_status()
        keys.append(r.json()["secret"])
    before = a.get(f"/v1/collections/{collection}").json()["subjects"]
    a.close()
    return enrolled, probes, enrol_pool, keys, before


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter = Counter()
        self.decisions: Counter = Counter()
        self.enrolled_ok = 0
        self.enrolled_created: list[str] = []
        self.error_samples: list[str] = []


def client_loop(cid: int, url: str, key: str, deadline: float, weights: dict[str, float], enrolled, probes, pool,
                collection: str, stats: Stats, seed: int) -> None:
    rng = random.Random(seed * 1000 + cid)
    ops, w = zip(*weights.items())
    n = 0
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=120) as c:
        while time.perf_counter() < deadline:
            op = rng.choices(ops, w)[0]
            ident, jpeg = rng.choice(probes)
            t0 = time.perf_counter()
            try:
                if op == "verify":
                    r = c.post("/v1/verify", files={"image": ("p.jpg", jpeg, "image/jpeg")},
                               data={"purpose": "kyc", "collection": collection, "subject": enrolled[ident]})
                elif op == "identify":
                    r = c.post(f"/v1/collections/{collection}/identify", files={"image": ("p.jpg", jpeg, "image/jpeg")},
                               data={"purpose": "kyc", "top_k": "5"})
                else:
                    sid = f"L-{cid:02d}-{n:05d}"
                    n += 1
                    r = c.post(f"/v1/collections/{collection}/subjects/{sid}/faces",
                               files={"images": ("e.jpg", rng.choice(pool), "image/jpeg")},
                               data={"purposes": "kyc", "evidence_ref": "bench"})
                dt = time.perf_counter() - t0
            except httpx.HTTPError as exc:
                with stats.lock:
                    stats.errors[f"{op}:{type(exc).__name__}"] += 1
                    if len(stats.error_samples) < 10:
                        stats.error_samples.append(f"{op}: {exc!r}")
                continue
            with stats.lock:
                if r.status_code >= 400:
                    code = r.json().get("code", "?") if r.headers.get("content-type", "").endswith("json") else "?"
                    stats.errors[f"{op}:{r.status_code}:{code}"] += 1
                    if len(stats.error_samples) < 10:
                        stats.error_samples.append(f"{op} {r.status_code}: {r.text[:200]}")
                    continue
                stats.latency[op].append(dt)
                body = r.json()
                if op == "enroll":
                    if body["accepted"] and body["created"]:
                        stats.enrolled_ok += 1
                        stats.enrolled_created.append(body["subject"])
                    stats.decisions[f"enroll:{'accepted' if body['accepted'] else 'rejected'}"] += 1
                else:
                    stats.decisions[f"{op}:{body['decision']}"] += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--workers", type=int, default=None, help="server worker threads (default: the service's own)")
    ap.add_argument("--mix", default="verify=0.4,identify=0.4,enroll=0.2", help="operation weights")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    args = ap.parse_args()
    weights = {k: float(v) for k, v in (p.split("=") for p in args.mix.split(","))}

    photos = dev_photos()
    data_dir = Path(tempfile.mkdtemp(prefix="facegate-bench-"))
    port = free_port()
    proc, admin, log = start_server(data_dir, port, args.workers)
    url = f"http://127.0.0.1:{port}"
    collection = "bench"
    try:
        t_setup = time.perf_counter()
        enrolled, probes, pool, keys, subjects_before = setup(url, admin, args.clients, photos, collection)
        setup_s = time.perf_counter() - t_setup
        # warm-up: one request of each kind, then measure memory
        with httpx.Client(base_url=url, headers={"X-API-Key": keys[0]}, timeout=60) as c:
            ident, jpeg = probes[0]
            c.post(f"/v1/collections/{collection}/identify", files={"image": jpeg}, data={"purpose": "kyc"}).raise_for_status()
        rss_before = rss_mb(proc.pid)
        stats = Stats()
        t0 = time.perf_counter()
        deadline = t0 + args.duration
        threads = [threading.Thread(target=client_loop, args=(i, url, keys[i], deadline, weights, enrolled, probes, pool,
                                                              collection, stats, args.seed), daemon=True)
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rss_after = rss_mb(proc.pid)
        time.sleep(2.5)  # let the admin key's rate-limit bucket refill after setup
        with httpx.Client(base_url=url, headers={"X-API-Key": admin}, timeout=60) as a:
            rate_limited = _metric(a.get("/metrics").text, "facegate_rate_limited_total")
            subjects_after = a.get(f"/v1/collections/{collection}").json()["subjects"]
            stored: set[str] = set()
            offset = 0
            while True:  # every subject id in the store, a page at a time
                page = a.get(f"/v1/collections/{collection}/subjects", params={"limit": 500, "offset": offset})
                page.raise_for_status()
                ids = [s["external_id"] for s in page.json()["subjects"]]
                stored.update(ids)
                if len(ids) < 500:
                    break
                offset += 500
            missing = [s for s in stats.enrolled_created if s not in stored]
            chain = a.get("/v1/audit/verify").json()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    all_lat = [x for v in stats.latency.values() for x in v]
    ok = len(all_lat)
    errors = sum(stats.errors.values())
    per_op = {
        op: {"requests": len(v), "rps": len(v) / wall, "p50_ms": pct(v, 0.5) * 1000, "p99_ms": pct(v, 0.99) * 1000,
             "max_ms": max(v) * 1000, "mean_ms": statistics.fmean(v) * 1000}
        for op, v in sorted(stats.latency.items())
    }
    lost = subjects_after - subjects_before - stats.enrolled_ok
    result = {
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                 "nice": os.nice(0)},
        "config": {"duration_s": args.duration, "clients": args.clients, "mix": weights,
                   "server_workers": args.workers or "default",
                   "enrolled_identities": len(enrolled), "probe_photos": len(probes), "setup_s": round(setup_s, 1)},
        "wall_s": round(wall, 2),
        "requests_ok": ok,
        "errors": errors,
        "error_kinds": dict(stats.errors),
        "error_samples": stats.error_samples,
        "rps": ok / wall,
        "latency_ms": {"p50": pct(all_lat, 0.5) * 1000, "p99": pct(all_lat, 0.99) * 1000, "max": max(all_lat, default=0) * 1000},
        "per_operation": per_op,
        "decisions": dict(stats.decisions),
        "enrolments_acknowledged": stats.enrolled_ok,
        "subjects_before": subjects_before,
        "subjects_after": subjects_after,
        "lost_enrolments": lost,
        "acknowledged_but_missing": missing,
        "rss_mb": {"before": round(rss_before, 1), "after": round(rss_after, 1)},
        "audit_chain_ok": chain.get("ok"),
        "rate_limited_during_load": rate_limited,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "service.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"## facegate serve under load — {args.clients} clients, {wall:.0f} s, {os.cpu_count()} CPUs (nice {os.nice(0)})\n")
    print(f"- throughput: **{result['rps']:.1f} requests/s** ({ok} OK), errors: **{errors}**")
    print(f"- latency all: p50 {result['latency_ms']['p50']:.0f} ms, p99 {result['latency_ms']['p99']:.0f} ms, max "
          f"{result['latency_ms']['max']:.0f} ms")
    print("\n| operation | requests | req/s | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|")
    for op, s in per_op.items():
        print(f"| {op} | {s['requests']} | {s['rps']:.1f} | {s['p50_ms']:.0f} | {s['p99_ms']:.0f} | {s['max_ms']:.0f} |")
    print(f"\n- enrolments acknowledged {stats.enrolled_ok}; subjects {subjects_before} → {subjects_after}; "
          f"lost: **{lost}**, acknowledged but missing: {len(missing)}")
    print(f"- server RSS: {rss_before:.0f} MB before, {rss_after:.0f} MB after")
    print(f"- decisions: {dict(stats.decisions)}; audit chain ok: {chain.get('ok')}; rate-limited: {rate_limited}")
    if errors:
        print(f"- error kinds: {dict(stats.errors)}\n- samples: {stats.error_samples[:3]}")
    sys.exit(1 if errors or lost or missing else 0)


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


if __name__ == "__main__":
    main()
