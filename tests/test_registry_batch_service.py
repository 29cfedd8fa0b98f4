"""Bulk enrolment over HTTP (/v1/collections/{c}/batches) on the real embedded gallery and key
store, with the public-domain photos in tests/data: upload, validation of the whole manifest
against the zip, zip and path attacks, size limits, scopes, one job per collection, the report,
cancellation, and that no uploaded image remains once a job has ended."""

from __future__ import annotations

import csv
import io
import json
import stat
import zipfile

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from facegate.registry.batch import KIND, batch_kind
from facegate.registry.batch_sources import F
from facegate.registry.jobs import J, JobRunner, JobStore
from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key

MANIFEST = ("subject,image,purposes,evidence\n"
            "O1,o1.jpg,access,form-1\n"
            "O1,o2.jpg,access,form-1\n"
            "B1,b1.jpg,access,form-2\n"
            "X1,junk.jpg,access,form-3\n")


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def zip_of(files: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(photos):
    return {"o1.jpg": photos["obama_1"].read_bytes(), "o2.jpg": photos["obama_2"].read_bytes(),
            "b1.jpg": photos["biden_1"].read_bytes(), "junk.jpg": b"not a photo"}


@pytest.fixture
def svc(tmp_path, engine, monkeypatch):
    """The service with its registry runner held still: a test runs a job when it chooses
    (``run``), so every state is reached deterministically."""
    monkeypatch.setenv("FACEGATE_BATCH_MAX_IMAGE_BYTES", str(2 * 2**20))
    app = create_app(Settings(data_dir=tmp_path / "d", workers=2, rate_limit_per_s=1000, rate_limit_burst=1000),
                     engine=engine)
    with TestClient(app) as client:
        service = app.state.service
        g = service.gallery
        service.registry.stop()
        service.registry = JobRunner(g.store, {KIND: batch_kind(g, service.batch_settings)})
        keys = {"admin": ensure_admin_key(g),
                "enroll": g.keys.create("enroller", ["enroll"], ["staff"])[1],
                "both": g.keys.create("both", ["enroll", "identify"], ["staff"])[1],
                "identify": g.keys.create("searcher", ["identify"], ["staff"])[1],
                "other": g.keys.create("other", ["enroll"], ["other"])[1]}
        assert client.post("/v1/collections", headers=H(keys["admin"]),
                           json={"name": "staff", "purposes": ["access", "payroll"]}).status_code == 201
        yield client, keys, service


def upload(client, key, manifest: str | bytes, archive: bytes, collection="staff", **form):
    body = manifest.encode() if isinstance(manifest, str) else manifest
    return client.post(f"/v1/collections/{collection}/batches", headers=H(key), data=form,
                       files={"manifest": ("m.csv", body, "text/csv"), "images": ("i.zip", archive, "application/zip")})


def stored(service) -> tuple[int, int]:
    with service.gallery.store.read() as tx:
        return (tx.execute(select(func.count()).select_from(J)).scalar(),
                tx.execute(select(func.count()).select_from(F)).scalar())


def problem(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code, body
    return body


def test_upload_poll_report_and_nothing_uploaded_remains(svc, images):
    client, keys, service = svc
    r = upload(client, keys["both"], MANIFEST, zip_of({**images, "unnamed.jpg": images["b1.jpg"]}), dedup_purpose="access")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["total"] == 4 and job["params"]["rows"] == 4
    assert stored(service) == (1, 5)  # the manifest and the four images it names (not unnamed.jpg), encrypted
    with service.gallery.store.read() as tx:
        blobs = [bytes(b) for b in tx.execute(select(F.c.ciphertext)).scalars()]
    assert not any(images["o1.jpg"][:64] in b or b"form-1" in b for b in blobs)  # not in clear

    service.registry.run(job["id"])
    status = client.get(f"/v1/collections/staff/batches/{job['id']}", headers=H(keys["enroll"])).json()
    assert status["status"] == "succeeded" and (status["done"], status["total"]) == (4, 4)
    assert (status["result"]["accepted"], status["result"]["rejected"]) == (3, 1)
    assert stored(service) == (1, 0)  # the uploads went with the job's end

    rep = client.get(f"/v1/collections/staff/batches/{job['id']}/report", headers=H(keys["both"])).json()
    assert [(x["line"], x["subject"], x["outcome"], x["reason"]) for x in rep] == [
        (2, "O1", "accepted", None), (3, "O1", "accepted", None), (4, "B1", "accepted", None),
        (5, "X1", "rejected", "not_an_image")]
    r = client.get(f"/v1/collections/staff/batches/{job['id']}/report?format=csv", headers=H(keys["enroll"]))
    assert r.headers["content-type"].startswith("text/csv")
    assert [row["outcome"] for row in csv.DictReader(io.StringIO(r.text))] == ["accepted"] * 3 + ["rejected"]
    other = service.registry.jobs.create("dedup", "staff", params={}, actor="admin")  # another kind: not a batch
    service.registry.jobs.cancel(other.id)
    listed = client.get("/v1/collections/staff/batches", headers=H(keys["enroll"])).json()["batches"]
    assert [b["id"] for b in listed] == [job["id"]]
    events = service.gallery.audit_list(action="enroll.batch", limit=5)
    assert [e.details["job"] for e in events if e.action == "enroll.batch"] == [job["id"]]


def test_duplicates_are_flagged_and_named_only_for_a_key_that_may_identify(svc, images):
    client, keys, service = svc
    first = upload(client, keys["enroll"], "subject,image,purposes,evidence\nA,o1.jpg,access,f\n", zip_of(images)).json()
    service.registry.run(first["id"])

    def batch(key, subject):
        r = upload(client, key, f"subject,image,purposes,evidence\n{subject},o2.jpg,access,f\n", zip_of(images),
                   dedup_purpose="access")
        service.registry.run(r.json()["id"])
        return r.json()["id"]

    by_both = batch(keys["both"], "B")
    shown = client.get(f"/v1/collections/staff/batches/{by_both}/report", headers=H(keys["both"])).json()
    hidden = client.get(f"/v1/collections/staff/batches/{by_both}/report", headers=H(keys["enroll"])).json()
    assert shown[0]["flagged"] and shown[0]["duplicates"][0]["subject"] == "A"
    assert hidden[0]["flagged"] and hidden[0]["duplicates"] == []
    by_enroller = batch(keys["enroll"], "C")  # the uploader may not identify: nobody learns the match from it
    rep = client.get(f"/v1/collections/staff/batches/{by_enroller}/report", headers=H(keys["both"])).json()
    assert rep[0]["flagged"] and rep[0]["duplicates"] == []


def test_every_bad_row_is_reported_and_nothing_is_kept(svc, images):
    client, keys, service = svc
    bad = ("subject,image,purposes,evidence\n"
           "O1,o1.jpg,access,form-1\n"
           "O2,../o2.jpg,access,form-1\n"
           "O3,/etc/passwd,access,form-1\n"
           "O4,missing.jpg,access,form-1\n"
           "O5,b1.jpg,marketing,form-1\n"
           "O6,junk.jpg,access,\n")
    body = problem(upload(client, keys["enroll"], bad, zip_of(images)), 422, "invalid_manifest")
    assert [e["line"] for e in body["errors"]] == [3, 4, 5, 6, 7]
    assert "not in the uploaded zip" in body["errors"][2]["message"]
    assert stored(service) == (0, 0)


@pytest.mark.parametrize("archive, code", [
    (lambda im: zip_of({"../o1.jpg": im["o1.jpg"]}), "invalid_archive"),
    (lambda im: zip_of({"/abs/o1.jpg": im["o1.jpg"]}), "invalid_archive"),
    (lambda im: zip_of(im, links={"o1.jpg.lnk": "/etc/passwd"}), "invalid_archive"),
    (lambda im: zip_of({**im, "bomb.jpg": b"\0" * (1 * 2**20)}), "invalid_archive"),  # expands > 50x
    (lambda im: b"PK\x03\x04 not really a zip", "invalid_archive"),
])
def test_zip_attacks_are_refused_and_nothing_is_kept(svc, images, archive, code):
    client, keys, service = svc
    problem(upload(client, keys["enroll"], MANIFEST, archive(images)), 422, code)
    assert stored(service) == (0, 0)


def test_size_limits_answer_413(svc, images):
    client, keys, service = svc
    import os

    big = os.urandom(3 * 2**20)  # over FACEGATE_BATCH_MAX_IMAGE_BYTES (2 MiB here), incompressible
    body = problem(upload(client, keys["enroll"], MANIFEST, zip_of({**images, "o1.jpg": big})), 413, "upload_too_large")
    assert "o1.jpg" in body["detail"]
    assert stored(service) == (0, 0)


def test_scopes_collections_and_one_job_per_collection(svc, images):
    client, keys, service = svc
    problem(upload(client, keys["identify"], MANIFEST, zip_of(images)), 403, "scope_missing")
    problem(upload(client, keys["other"], MANIFEST, zip_of(images)), 404, "collection_not_found")
    JobStore(service.gallery.store).create("dedup", "staff", params={}, actor="someone")  # another kind holds it
    problem(upload(client, keys["enroll"], MANIFEST, zip_of(images)), 409, "job_active")
    assert stored(service) == (1, 0)
    r = client.get("/v1/collections/staff/batches/" + "0" * 32, headers=H(keys["enroll"]))
    problem(r, 404, "job_not_found")


def test_cancel_a_queued_batch_deletes_its_uploads(svc, images):
    client, keys, service = svc
    job = upload(client, keys["enroll"], MANIFEST, zip_of(images)).json()
    problem(client.delete(f"/v1/collections/staff/batches/{job['id']}", headers=H(keys["other"])), 404,
            "collection_not_found")
    r = client.delete(f"/v1/collections/staff/batches/{job['id']}", headers=H(keys["enroll"]))
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert stored(service) == (1, 0)
    assert service.registry.run(job["id"]).status == "cancelled"  # and never runs after


def test_a_manifest_may_be_json_lines(svc, images):
    client, keys, service = svc
    lines = "\n".join(json.dumps({"subject": "C9", "image": "b1.jpg", "purposes": ["payroll"], "evidence": "f"})
                      for _ in range(1))
    r = client.post("/v1/collections/staff/batches", headers=H(keys["enroll"]),
                    files={"manifest": ("m.jsonl", lines.encode(), "application/x-ndjson"),
                           "images": ("i.zip", zip_of(images), "application/zip")})
    assert r.status_code == 202, r.text
    assert service.registry.run(r.json()["id"]).result["accepted"] == 1
