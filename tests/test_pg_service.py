"""The REST service on PostgreSQL: two real ``facegate serve`` processes on different
ports sharing one database, and the database stopped mid-enrolment (503, recovery, nothing
half-written). The store is selected the way an operator would: ``FACEGATE_STORE``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import pg_support
from facegate.client import wait_ready
from facegate.gallery import Gallery
from facegate.gallery.crypto import encode_key, generate_key
from facegate.gallery.pg.store import PgStoreTx


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """A fresh database, a master key both replicas use, a collection and API keys."""
    url = pg_support.fresh_database()
    key = encode_key(generate_key())
    monkeypatch.setenv("FACEGATE_MASTER_KEY", key)
    monkeypatch.setenv("FACEGATE_STORE", url)
    g = Gallery.open(tmp_path / "admin")
    g.create_collection("bank", purposes=["kyc"])
    keys = {"enroll": g.keys.create("enroller", ["enroll"], ["bank"])[1],
            "identify": g.keys.create("searcher", ["identify"], ["bank"])[1],
            "admin": g.keys.create("admin", ["admin"])[1]}
    g.close()
    yield url, key, keys
    pg_support.drop_database(url)


def _serve(data_dir: Path, port: int, url: str, key: str) -> subprocess.Popen:
    env = {**os.environ, "FACEGATE_STORE": url, "FACEGATE_MASTER_KEY": key, "FACEGATE_BOOTSTRAP_ADMIN_KEY": "false",
           "FACEGATE_WORKERS": "2", "FACEGATE_LOG_LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-m", "facegate", "serve", "--port", str(port), "--data-dir", str(data_dir),
                             "--no-console"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_ready(proc: subprocess.Popen, base: str, timeout: float = 120) -> None:
    def alive() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"facegate serve exited: {proc.stderr.read().decode()[-2000:]}")

    try:
        wait_ready(base, timeout=timeout, alive=alive)
    except TimeoutError:
        raise AssertionError("facegate serve did not become ready") from None


def test_two_serve_processes_share_one_postgresql(tmp_path, shared, photos):
    url, key, keys = shared
    ports = free_port(), free_port()
    procs = [_serve(tmp_path / f"replica{i}", p, url, key) for i, p in enumerate(ports)]
    try:
        a, b = (f"http://127.0.0.1:{p}" for p in ports)
        for proc, base in zip(procs, (a, b)):
            _wait_ready(proc, base)
        with photos["obama_1"].open("rb") as f:
            r = httpx.post(f"{a}/v1/collections/bank/subjects/C-1/faces", headers=H(keys["enroll"]), timeout=60,
                           files=[("images", f)], data={"purposes": "kyc", "evidence_ref": "form-1"})
        assert r.status_code == 201, r.text
        with photos["obama_3"].open("rb") as f:
            r = httpx.post(f"{b}/v1/collections/bank/identify", headers=H(keys["identify"]), timeout=60,
                           files={"image": f}, data={"purpose": "kyc"})
        res = r.json()
        assert r.status_code == 200 and res["decision"] == "match" and res["candidates"][0]["subject"] == "C-1", r.text
        # Erased through A: B never returns it again.
        r = httpx.delete(f"{a}/v1/collections/bank/subjects/C-1", headers=H(keys["enroll"]), timeout=60)
        assert r.status_code == 200, r.text
        for probe in ("obama_3", "obama_1"):
            with photos[probe].open("rb") as f:
                res = httpx.post(f"{b}/v1/collections/bank/identify", headers=H(keys["identify"]), timeout=60,
                                 files={"image": f}, data={"purpose": "kyc"}).json()
            assert res["decision"] == "no_match" and res["candidates"] == []
        # Both replicas append to one hash chain.
        rep = httpx.get(f"{b}/v1/audit/verify", headers=H(keys["admin"]), timeout=60).json()
        assert rep["ok"] is True
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_database_stopped_mid_enrolment_answers_503_and_recovers(tmp_path, shared, engine, photos, monkeypatch):
    from facegate.service import Settings, create_app

    url, _key, keys = shared
    srv = pg_support.server()
    app = create_app(Settings(data_dir=tmp_path / "svc", workers=2, rate_limit_per_s=1000, rate_limit_burst=1000,
                              bootstrap_admin_key=False), engine=engine)
    real = PgStoreTx.insert_template

    def insert_then_stop(self, **values):
        tid = real(self, **values)
        srv.stop(mode="immediate")
        return tid

    with TestClient(app) as client:
        monkeypatch.setattr(PgStoreTx, "insert_template", insert_then_stop)
        try:
            with photos["obama_1"].open("rb") as f:
                r = client.post("/v1/collections/bank/subjects/C-9/faces", headers=H(keys["enroll"]),
                                files=[("images", f)], data={"purposes": "kyc"})
            assert r.status_code == 503, r.text
            body = r.json()
            assert r.headers["content-type"].startswith("application/problem+json") and body["code"] == "store_unavailable"
            r = client.get("/v1/collections/bank", headers=H(keys["admin"]))  # still down
            assert r.status_code in (503, 401) and "store_unavailable" in r.text
        finally:
            monkeypatch.setattr(PgStoreTx, "insert_template", real)
            srv.start()
        # Back: the same service answers again and nothing of C-9 was written.
        assert client.get("/v1/collections/bank/subjects/C-9", headers=H(keys["enroll"])).status_code == 404
        col = client.get("/v1/collections/bank", headers=H(keys["admin"])).json()
        assert col["subjects"] == 0 and col["templates"] == 0
        with photos["obama_1"].open("rb") as f:
            r = client.post("/v1/collections/bank/subjects/C-9/faces", headers=H(keys["enroll"]),
                            files=[("images", f)], data={"purposes": "kyc"})
        assert r.status_code == 201, r.text
        assert client.get("/v1/audit/verify", headers=H(keys["admin"])).json()["ok"] is True
