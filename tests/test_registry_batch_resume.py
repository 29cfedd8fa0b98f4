"""Crash and resume of `facegate enroll-batch`: the real CLI as a process on a manifest of real
photos (the dev set, ../shared/data/faces-dev), SIGKILLed — or interrupted with Ctrl-C (SIGINT) —
once some rows are committed (seen by polling the database), then run again: every row ends with
exactly one outcome and no template is stored twice."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_support import invoke
from facegate.gallery import Gallery
from facegate.gallery.context import collection_in

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev"
ROWS = 60


def dev_manifest(dest: Path) -> int:
    """The first ROWS usable dev photos copied under ``dest`` and a manifest naming them."""
    if not (DEV / "MANIFEST.tsv").is_file():
        pytest.skip("the faces-dev set (../shared/data/faces-dev) is not here")
    with (DEV / "MANIFEST.tsv").open() as f:
        items = [r for r in csv.DictReader(f, delimiter="\t") if not r["flags"]][:ROWS]
    with (dest / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "image", "purposes", "evidence"])
        for r in items:
            target = dest / r["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DEV / r["path"], target)
            w.writerow([r["identity"], r["path"], "access", f"consent-{r['identity']}"])
    return len(items)


def finished_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        try:
            return conn.execute("SELECT count(*) FROM registry_batch_items WHERE outcome != 'pending'").fetchone()[0]
        except sqlite3.OperationalError:  # not migrated yet
            return 0


@pytest.mark.parametrize("sig, left", [(signal.SIGKILL, "running"), (signal.SIGINT, "queued")], ids=["kill", "ctrl-c"])
def test_an_interrupted_batch_resumes_and_every_row_is_done_exactly_once(tmp_path, engine, sig, left):
    data = tmp_path / "gallery"
    with Gallery.open(data, engine=engine) as g:
        g.create_collection("staff", purposes=["access"])
    src = tmp_path / "batch"
    src.mkdir()
    n = dev_manifest(src)
    cmd = [sys.executable, "-m", "facegate", "enroll-batch", str(src / "manifest.csv"), "-c", "staff",
           "--data-dir", str(data), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while finished_rows(data / "gallery.db") < 5:
            try:
                proc.wait(timeout=0.1)  # the wait between polls; also notices an early exit
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"the batch ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = finished_rows(data / "gallery.db")
    assert 5 <= killed_at < n
    with sqlite3.connect(f"file:{data / 'gallery.db'}?mode=ro", uri=True) as conn:
        # SIGKILL leaves the job held by a dead process (taken over at once); Ctrl-C gives it back
        assert conn.execute("SELECT status FROM registry_jobs").fetchone()[0] == left

    r = invoke("enroll-batch", src / "manifest.csv", "-c", "staff", "--data-dir", data, "--json",
               "--report", tmp_path / "report.json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["job"]
    assert job["status"] == "succeeded" and job["attempts"] == 2 and job["done"] == n

    rows = json.loads((tmp_path / "report.json").read_text())
    assert sorted(x["line"] for x in rows) == list(range(2, n + 2))  # each row once, none pending
    assert all(x["outcome"] in ("accepted", "rejected") for x in rows)
    with Gallery.open(data, engine=engine) as g:
        accepted: dict[str, int] = {}
        for x in rows:
            accepted[x["subject"]] = accepted.get(x["subject"], 0) + (x["outcome"] == "accepted")
        for subject, k in accepted.items():
            if k == 0:
                continue
            templates = g.get_subject("staff", subject).templates
            assert len(templates) == k, subject  # one template per accepted row, none twice
        with g.store.read() as tx:
            col = collection_in(tx, "staff")
        idx = g.index.get(col.id, col.embedding_dim, col.model_id)
        for subject in accepted:
            if accepted[subject] < 2:
                continue
            with g.store.read() as tx:
                sid = tx.subject(col.id, subject).id
            V = idx.subject_vectors(sid)
            sims = V @ V.T - 2 * np.eye(len(V))
            assert sims.max() < 0.98, subject  # no photo stored twice
        assert len([e for e in g.audit_list(action="enroll.batch", limit=10) if e.action == "enroll.batch"]) == 1
