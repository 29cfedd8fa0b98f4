"""A batch survives the death of the service running it: a real `facegate serve` process works
through an uploaded batch of dev-set photos (../shared/data/faces-dev), is SIGKILLed once some
rows are committed (seen by polling the job), and the next service started on the same data
directory resumes the job: every row done once, no template twice, no upload left."""

from __future__ import annotations

import io
import signal
import subprocess
import threading
import zipfile

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from facegate.gallery.transaction import T
from facegate.registry.batch_sources import F
from facegate.service import Settings, create_app
from serve_support import start_serve
from test_registry_batch_resume import dev_manifest


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_a_batch_resumes_after_the_service_is_killed(tmp_path, engine):
    src = tmp_path / "batch"
    src.mkdir()
    n = dev_manifest(src)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted((src / "images").rglob("*.jpg")):
            zf.write(p, p.relative_to(src).as_posix())
    data = tmp_path / "data"
    served = start_serve(data, tmp_path, {})
    try:
        key = served.admin_key
        with httpx.Client(base_url=served.url, headers=H(key), timeout=60) as http:
            assert http.post("/v1/collections", json={"name": "staff", "purposes": ["access"]}).status_code == 201
            r = http.post("/v1/collections/staff/batches",
                          files={"manifest": ("m.csv", (src / "manifest.csv").read_bytes(), "text/csv"),
                                 "images": ("i.zip", buf.getvalue(), "application/zip")})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            while True:
                status = http.get(f"/v1/collections/staff/batches/{job_id}").json()
                assert status["status"] in ("queued", "running"), status
                if status["done"] >= 5:
                    break
                try:
                    served.proc.wait(timeout=0.1)  # the wait between polls; notices an early exit
                except subprocess.TimeoutExpired:  # still running: poll again
                    continue
                pytest.fail("facegate serve exited during the batch")
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait(timeout=60)
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
    assert status["done"] < n

    app = create_app(Settings(data_dir=data, workers=2, bootstrap_admin_key=False), engine=engine)
    with TestClient(app) as client:
        service = app.state.service
        with service.gallery.store.read() as tx:
            assert tx.execute(select(func.count()).select_from(F)).scalar() == n + 1  # still there to resume from
        idle = threading.Event()
        while (job := client.get(f"/v1/collections/staff/batches/{job_id}", headers=H(key)).json())["status"] in (
                "queued", "running"):
            idle.wait(0.1)  # the background runner claims the orphaned job (its owner is dead) and runs it
        assert job["status"] == "succeeded" and job["attempts"] == 2 and job["done"] == n, job
        rows = client.get(f"/v1/collections/staff/batches/{job_id}/report", headers=H(key)).json()
        assert sorted(x["line"] for x in rows) == list(range(2, n + 2))
        accepted = sum(x["outcome"] == "accepted" for x in rows)
        with service.gallery.store.read() as tx:
            assert tx.execute(select(func.count()).select_from(F)).scalar() == 0  # uploads gone with the job
            assert tx.execute(select(func.count()).select_from(T)).scalar() == accepted  # none twice
