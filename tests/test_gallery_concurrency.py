"""Concurrency and crash safety on a real SQLite file: threads and processes enrolling,
identifying and erasing at once; processes killed with SIGKILL mid-enrolment; another
process's writes visible to this process's next search."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from facegate.gallery import ConsentSpec, Gallery
from facegate.gallery.synth import FaceLikeGenerator

MODEL = "sface-2021dec-int8bq"
ACCESS = ConsentSpec(("access",), evidence_ref="form")

# A worker process: enrol `n` subjects (prefix), identify each right after, erase every third.
WORKER = r"""
import sys, numpy as np
from facegate.gallery import Gallery, ConsentSpec
from facegate.gallery.synth import FaceLikeGenerator
data, prefix, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
g = Gallery.open(data)
gen = FaceLikeGenerator(128, seed=0)
V = gen.samples(gen.centres(np.arange(seed, seed + n)), 1)
for i in range(n):
    ext = f"{prefix}-{i}"
    g.import_templates("c", [(ext, V[i:i+1], ConsentSpec(("access",)))], model_id="sface-2021dec-int8bq")
    res = g.identify_vector("c", V[i], purpose="access", model_id="sface-2021dec-int8bq")
    assert res.candidates and res.candidates[0].subject == ext, (ext, res.candidates)
    if i % 3 == 0:
        g.delete_subject("c", ext)
        res = g.identify_vector("c", V[i], purpose="access", model_id="sface-2021dec-int8bq")
        assert ext not in [c.subject for c in res.candidates]
g.close()
print("done", flush=True)
"""

# Enrol batches of 25 subjects x 3 templates forever (until killed); report each commit.
KILL_WORKER = r"""
import sys, numpy as np
from facegate.gallery import Gallery, ConsentSpec
from facegate.gallery.synth import FaceLikeGenerator
data, start = sys.argv[1], int(sys.argv[2])
g = Gallery.open(data)
gen = FaceLikeGenerator(128, seed=1)
b = start
while True:
    ids = np.arange(b * 25, b * 25 + 25)
    V = gen.samples(gen.centres(ids), 3)
    items = [(f"k{j}", V[3 * k: 3 * k + 3], ConsentSpec(("access",))) for k, j in enumerate(ids)]
    g.import_templates("c", items, model_id="sface-2021dec-int8bq", batch=25)
    print("committed", b, flush=True)
    b += 1
"""

# Real-photo enrolment forever (until killed); report each commit.
KILL_ENROLL = r"""
import sys
from facegate.gallery import Gallery, ConsentSpec
data, photo = sys.argv[1], sys.argv[2]
g = Gallery.open(data)
i = 0
print("ready", flush=True)
while True:
    g.enroll("c", f"photo-{i}", [photo], consent=ConsentSpec(("access",)))
    i += 1
    print("enrolled", i, flush=True)
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)


def _open(path: Path, **kw) -> Gallery:
    g = Gallery.open(path, **kw)
    if not g.list_collections():
        g.create_collection("c", purposes=["access"])
    return g


def _spawn(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _check_consistent(path: Path, *, templates_per_subject: int | None = None) -> Gallery:
    """The store is intact: SQLite integrity, foreign keys, no half-written subject, every
    template decrypts into the index, audit chain verifies."""
    db = sqlite3.connect(path / "gallery.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    orphans = db.execute(
        "SELECT count(*) FROM subjects s WHERE NOT EXISTS (SELECT 1 FROM templates t WHERE t.subject_id = s.id) "
        "OR NOT EXISTS (SELECT 1 FROM consents k WHERE k.subject_id = s.id)"
    ).fetchone()[0]
    assert orphans == 0
    if templates_per_subject is not None:
        bad = db.execute(
            "SELECT count(*) FROM (SELECT subject_id, count(*) n FROM templates GROUP BY subject_id) WHERE n != ?",
            (templates_per_subject,),
        ).fetchone()[0]
        assert bad == 0
    n_templates = db.execute("SELECT count(*) FROM templates").fetchone()[0]
    db.close()
    g = Gallery.open(path)
    assert g.index_stats("c")["templates"] == n_templates  # every ciphertext authenticated and decrypted
    rep = g.audit_verify()
    assert rep.ok, rep
    return g


def test_threads_enrol_identify_delete_without_errors_or_lost_writes(tmp_path, engine, photos):
    g = _open(tmp_path / "d", engine=engine)
    gen = FaceLikeGenerator(128, seed=2)
    n_threads, per = 6, 30
    V = gen.samples(gen.centres(np.arange(n_threads * per)), 1)
    errors: list[BaseException] = []
    expected: set[str] = set()
    lock = threading.Lock()

    def synthetic(t: int) -> None:
        try:
            for i in range(per):
                ext, v = f"t{t}-{i}", V[t * per + i]
                g.import_templates("c", [(ext, v[None], ACCESS)], model_id=MODEL)
                top = g.identify_vector("c", v, purpose="access", model_id=MODEL).candidates
                assert top and top[0].subject == ext
                if i % 3 == 0:
                    g.delete_subject("c", ext)
                    assert ext not in [c.subject for c in g.identify_vector("c", v, purpose="access", model_id=MODEL).candidates]
                else:
                    with lock:
                        expected.add(ext)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def real(t: int, photo: Path) -> None:
        try:
            for i in range(3):
                r = g.enroll("c", f"real{t}-{i}", [photo], consent=ACCESS)
                assert r.accepted == 1
                with lock:
                    expected.add(f"real{t}-{i}")
                g.identify("c", photo, purpose="access")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=synthetic, args=(t,)) for t in range(n_threads)]
    threads += [threading.Thread(target=real, args=(t, p)) for t, p in enumerate([photos["obama_1"], photos["collins_1"]])]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    assert not errors, errors[:3]
    subjects = {s.external_id for s in g.list_subjects("c", limit=10_000)}
    assert subjects == expected
    assert g.index_stats("c")["templates"] == len(expected)
    assert g.audit_verify().ok
    g.close()


def test_processes_enrol_identify_delete_concurrently(tmp_path):
    d = tmp_path / "d"
    g = _open(d)
    procs = [_spawn(WORKER, d, f"p{k}", 24, 1000 * k) for k in range(3)]
    errors: list[BaseException] = []
    stop = threading.Event()
    gen = FaceLikeGenerator(128, seed=0)
    probe = gen.samples(gen.centres(np.arange(0, 24)), 1)

    def searcher() -> None:  # this process keeps searching while the others write
        try:
            while not stop.is_set():
                for v in probe[1::3]:
                    g.identify_vector("c", v, purpose="access", model_id=MODEL)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    th = threading.Thread(target=searcher)
    th.start()
    outs = [p.communicate(timeout=300) for p in procs]
    stop.set()
    th.join()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "done" in out, err[-2000:]
    assert not errors, errors[:3]
    expected = {f"p{k}-{i}" for k in range(3) for i in range(24) if i % 3}
    assert {s.external_id for s in g.list_subjects("c", limit=1000)} == expected
    # This process's index caught up with every write of the others.
    assert g.index_stats("c")["templates"] == len(expected)
    for i in (1, 2, 4):
        assert g.identify_vector("c", probe[i], purpose="access", model_id=MODEL).candidates[0].subject == f"p0-{i}"
    assert "p0-3" not in [c.subject for c in g.identify_vector("c", probe[3], purpose="access", model_id=MODEL).candidates]
    assert g.audit_verify().ok
    assert len(g.audit_list(action="enroll.import", limit=1000)) == 72  # no audit write lost either
    assert len(g.audit_list(action="subject.erase", limit=1000)) == 24
    g.close()


def test_sigkill_mid_enrolment_leaves_a_consistent_store(tmp_path):
    d = tmp_path / "d"
    _open(d).close()
    rng = random.Random(7)
    for round_ in range(3):
        p = _spawn(KILL_WORKER, d, 1000 * round_)
        assert p.stdout is not None
        line = p.stdout.readline()  # first batch committed: it is busy writing now
        assert line.startswith("committed"), p.stderr.read() if p.stderr else ""
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        g = _check_consistent(d, templates_per_subject=3)
        n = g.count_subjects("c")
        assert n % 25 == 0 and n > 0  # whole batches only: each commit is atomic
        g.close()


def test_sigkill_during_real_photo_enrolment(tmp_path, photos):
    d = tmp_path / "d"
    _open(d).close()
    p = _spawn(KILL_ENROLL, d, photos["biden_1"])
    assert p.stdout is not None and p.stdout.readline().startswith("ready")
    for _ in range(2):  # two enrolments committed: it is busy with the next one now
        assert p.stdout.readline().startswith("enrolled"), p.stderr.read() if p.stderr else ""
    time.sleep(random.Random(3).uniform(0.0, 0.15))
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    g = _check_consistent(d, templates_per_subject=1)
    assert g.count_subjects("c") >= 2
    g.close()


def test_erasure_by_another_process_is_invisible_to_the_next_search(tmp_path, engine, photos):
    d = tmp_path / "d"
    g = _open(d, engine=engine)
    g.enroll("c", "E1", [photos["obama_1"], photos["obama_2"]], consent=ACCESS)
    assert g.identify("c", photos["obama_3"], purpose="access").candidates[0].subject == "E1"

    def cli(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "facegate", *map(str, args), "--data-dir", d], capture_output=True, text=True, timeout=300
        )

    res = cli("subject", "delete", "c", "E1", "--yes")
    assert res.returncode == 0, res.stderr
    assert g.identify("c", photos["obama_3"], purpose="access").candidates == ()
    res = cli("enroll", "c", "E2", photos["biden_1"], "--purposes", "access", "--json")
    assert res.returncode == 0, res.stderr
    assert g.identify("c", photos["biden_1"], purpose="access").candidates[0].subject == "E2"
    res = cli("consent", "withdraw", "c", "E2")
    assert res.returncode == 0, res.stderr
    assert g.identify("c", photos["biden_1"], purpose="access").candidates == ()
    g.close()
