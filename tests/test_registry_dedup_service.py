"""De-duplication over HTTP with the real gallery key store: the arithmetic before a run, a run
as a registry job, clusters as JSON and CSV, reviews — and what the weaker keys may not do."""

from __future__ import annotations

import csv
import datetime as dt
import io
import socket

import pytest
from fastapi.testclient import TestClient

from facegate.gallery import ConsentSpec
from facegate.registry.dedup_job import KIND, DedupParams
from facegate.registry.jobs import JobStore
from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key
from test_registry_dedup import templates
from test_service_gallery import H, problem

MODEL = "sface-2021dec-int8bq"
N = 120
PLANTED = [(1, 100), (2, 101), (3, 102)]
BASE = "/v1/collections/reg/dedup"


def seed(g) -> None:
    X = templates(N, PLANTED)
    g.create_collection("reg", purposes=["dedup", "access"])
    g.create_collection("other", purposes=["dedup"])
    g.import_templates("reg", [(f"S{i:03d}", X[i:i + 1], ConsentSpec(("dedup",))) for i in range(N)], model_id=MODEL)


@pytest.fixture(scope="module")
def svc(tmp_path_factory, engine):
    data = tmp_path_factory.mktemp("dedup-svc")
    app = create_app(Settings(data_dir=data, workers=2, rate_limit_per_s=1000, rate_limit_burst=1000), engine=engine)
    with TestClient(app) as client:
        g = app.state.service.gallery
        seed(g)
        keys = {
            "admin": ensure_admin_key(g),
            "reg-admin": g.keys.create("reg-admin", ["admin"], ["reg"])[1],
            "identify": g.keys.create("searcher", ["identify"], ["reg"])[1],
            "enroll": g.keys.create("enroller", ["enroll"], ["reg"])[1],
            "verify": g.keys.create("verifier", ["verify"], ["reg"])[1],
            "other-admin": g.keys.create("other-admin", ["admin"], ["other"])[1],
        }
        yield client, keys, g


def run_job(client, key, **body) -> dict:
    r = client.post(f"{BASE}/jobs", headers=H(key), json={"purpose": "dedup", "fmr": 1e-3, **body})
    assert r.status_code == 202, r.text
    out = r.json()
    job = client.get(f"{BASE}/jobs/{out['job']['id']}", headers=H(key), params={"wait_s": 30}).json()
    assert job["status"] == "succeeded", job
    return {**out, "job": job}


def test_plan_states_the_arithmetic(svc):
    client, keys, _g = svc
    r = client.post(f"{BASE}/plan", headers=H(keys["identify"]), json={"purpose": "dedup", "fmr": 1e-4})
    assert r.status_code == 200, r.text
    p = r.json()
    assert (p["subjects"], p["pairs_compared"]) == (N, N * (N - 1) // 2)
    assert p["expected_false_pairs"] == pytest.approx(N * (N - 1) / 2 * 1e-4) and p["within_limit"] is True
    problem(client.post(f"{BASE}/plan", headers=H(keys["admin"]), json={"purpose": "dedup", "fmr": 2e-5}),
            400, "calibration_error")
    problem(client.post(f"{BASE}/plan", headers=H(keys["admin"]), json={"purpose": "marketing"}), 422, "purpose_not_allowed")
    problem(client.post(f"{BASE}/plan", headers=H(keys["admin"]), json={"purpose": "Bad Purpose"}), 422, "validation_error")
    problem(client.post(f"{BASE}/plan", headers=H(keys["admin"]), json={"purpose": "dedup", "max_expected_false_pairs": -1}),
            422, "validation_error")
    # A misspelt field is refused, not ignored (it would run at the default FMR).
    problem(client.post(f"{BASE}/plan", headers=H(keys["admin"]), json={"purpose": "dedup", "fmrr": 1e-3}),
            422, "validation_error")


def test_run_as_a_job_then_clusters_csv_and_review(svc):
    client, keys, g = svc
    out = run_job(client, keys["reg-admin"])
    assert out["plan"]["pairs_compared"] == N * (N - 1) // 2
    assert out["job"]["result"]["status"] == "completed"
    ident = H(keys["identify"])
    rep = client.get(f"{BASE}/clusters", headers=ident).json()
    found = {tuple(c["subjects"]) for c in rep["clusters"]}
    assert {(f"S{i:03d}", f"S{j:03d}") for i, j in PLANTED} <= found
    assert rep["run"]["id"] == out["job"]["result"]["run"]
    r = client.get(f"{BASE}/clusters", headers=ident, params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == rep["pairs"] and {"cluster", "subject_a", "subject_b", "score"} <= set(rows[0])
    key = rep["clusters"][0]["key"]
    r = client.post(f"{BASE}/clusters/{key}/review", headers=ident, json={"decision": "same", "note": "one passport"})
    assert r.status_code == 200, r.text
    assert key not in {c["key"] for c in client.get(f"{BASE}/clusters", headers=ident).json()["clusters"]}
    ev = g.audit_list(action="dedup.review")[0]
    assert ev.actor.startswith("key:searcher") and ev.details["note"] == "one passport"
    problem(client.post(f"{BASE}/clusters/{'0' * 32}/review", headers=ident, json={"decision": "same", "note": "x"}),
            404, "cluster_not_found")
    problem(client.post(f"{BASE}/clusters/{key}/review", headers=ident, json={"decision": "maybe", "note": "x"}),
            422, "validation_error")
    problem(client.post(f"{BASE}/clusters/{key}/review", headers=ident, json={"decision": "same", "note": ""}),
            422, "validation_error")
    assert client.get(f"{BASE}/runs", headers=ident).json()["runs"][0]["status"] == "completed"


def test_over_the_limit_is_refused_before_any_job(svc):
    client, keys, g = svc
    before = client.get(f"{BASE}/runs", headers=H(keys["admin"])).json()["runs"]
    body = problem(client.post(f"{BASE}/jobs", headers=H(keys["admin"]),
                               json={"purpose": "dedup", "fmr": 1e-3, "max_expected_false_pairs": 0.5}),
                   422, "expected_false_pairs_over_limit")
    assert body["plan"]["expected_false_pairs"] > 0.5
    assert client.get(f"{BASE}/runs", headers=H(keys["admin"])).json()["runs"] == before
    assert JobStore(g.store).active("reg") is None
    assert g.audit_list(action="dedup.run")[0].decision == "refused_over_limit"


def test_one_registry_job_per_collection(svc):
    client, keys, g = svc
    queued = JobStore(g.store).create(KIND, "reg", params={}, actor="test")
    try:
        problem(client.post(f"{BASE}/jobs", headers=H(keys["admin"]), json={"purpose": "dedup", "fmr": 1e-3}),
                409, "job_active")
    finally:
        JobStore(g.store).cancel(queued.id)


def test_weaker_keys_are_refused(svc):
    client, keys, _g = svc
    body = {"purpose": "dedup", "fmr": 1e-3}
    # Starting a run is identification of everyone: admin on the collection, not identify.
    problem(client.post(f"{BASE}/jobs", headers=H(keys["identify"]), json=body), 403, "scope_missing")
    problem(client.post(f"{BASE}/jobs", headers=H(keys["enroll"]), json=body), 403, "scope_missing")
    # The clusters name people: identify at least.
    for weak in ("enroll", "verify"):
        problem(client.get(f"{BASE}/clusters", headers=H(keys[weak])), 403, "scope_missing")
        problem(client.post(f"{BASE}/plan", headers=H(keys[weak]), json=body), 403, "scope_missing")
        problem(client.post(f"{BASE}/clusters/{'a' * 32}/review", headers=H(keys[weak]),
                            json={"decision": "same", "note": "x"}), 403, "scope_missing")
    # An admin of another collection sees this one as missing, jobs included.
    problem(client.get(f"{BASE}/clusters", headers=H(keys["other-admin"])), 404, "collection_not_found")
    problem(client.post(f"{BASE}/jobs", headers=H(keys["other-admin"]), json=body), 404, "collection_not_found")
    assert client.get(f"{BASE}/runs").status_code == 401
    assert client.get(f"{BASE}/runs", headers=H("fg_bogus_secret")).status_code == 401
    # A job id of another collection (or of another kind) reads as missing.
    out = client.post("/v1/collections/other/dedup/jobs", headers=H(keys["admin"]), json=body)
    assert out.status_code == 202, out.text
    other_job = out.json()["job"]["id"]
    client.get(f"/v1/collections/other/dedup/jobs/{other_job}", headers=H(keys["admin"]), params={"wait_s": 30})
    problem(client.get(f"{BASE}/jobs/{other_job}", headers=H(keys["reg-admin"])), 404, "job_not_found")
    problem(client.delete(f"{BASE}/jobs/{other_job}", headers=H(keys["reg-admin"])), 404, "job_not_found")


def test_a_job_left_by_a_stopped_process_is_taken_over(svc, engine):
    _client, keys, g = svc
    jobs = JobStore(g.store)
    params = DedupParams("dedup", 1e-3, False, 100.0).to_dict()
    left = jobs.create(KIND, "other", params=params, actor="key:gone")
    # A process on this host that no longer exists claimed it and died mid-run (its lease still an hour long).
    dead = f"{socket.gethostname()}:999999999:dead"
    assert jobs.claim(dead, [KIND], dt.timedelta(hours=1), job_id=left.id) is not None
    app = create_app(Settings(data_dir=g.data_dir, workers=2, rate_limit_per_s=1000, rate_limit_burst=1000), engine=engine)
    with TestClient(app) as restarted:
        job = restarted.get(f"/v1/collections/other/dedup/jobs/{left.id}", headers=H(keys["admin"]),
                            params={"wait_s": 30}).json()
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
