"""Bulk enrolment (registry/manifest.py, registry/batch.py, `facegate enroll-batch`) on the
public-domain photos in tests/data: whole-manifest validation with line numbers, path attacks
through the CLI, per-row outcomes with single enrolment's reason codes, the report, the audit
events, and idempotent re-runs."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
from sqlalchemy import func, select

from cli_support import invoke
from facegate.gallery import Gallery
from facegate.gallery.transaction import T
from facegate.registry.batch import I
from facegate.registry.jobs import J

HEADER = "subject,image,purposes,evidence,label,expires\n"


@pytest.fixture
def batch_dir(tmp_path, photos):
    d = tmp_path / "batch"
    (d / "img").mkdir(parents=True)
    for name in ("obama_1", "obama_2", "obama_3", "biden_1", "collins_1"):
        shutil.copy(photos[name], d / "img" / f"{name}.jpg")
    (d / "img" / "junk.jpg").write_bytes(b"this is not a photo")
    return d


@pytest.fixture
def data(tmp_path, engine):
    d = tmp_path / "gallery"
    with Gallery.open(d, engine=engine) as g:
        g.create_collection("staff", purposes=["access", "payroll"])
    return d


def fg(data, *args):
    return invoke(*args, "--data-dir", data)


def counts(data, engine):
    with Gallery.open(data, engine=engine) as g, g.store.read() as tx:
        return (tx.execute(select(func.count()).select_from(T)).scalar(),
                tx.execute(select(func.count()).select_from(J)).scalar())


GOOD = (HEADER
        + "O1,img/obama_1.jpg,access,form-1,Barack,\n"
        + "O1,img/obama_2.jpg,access,form-1,Barack,\n"
        + "O1,img/obama_3.jpg,access,form-1,Barack,\n"
        + "B1,img/biden_1.jpg,access;payroll,form-2,,2030-01-01\n"
        + "C1,img/collins_1.jpg,access,form-3,,\n"
        + "J1,img/junk.jpg,access,form-4,,\n")


def test_enroll_batch_enrols_each_row_with_single_enrolment_reasons_and_reports(batch_dir, data, engine):
    (batch_dir / "m.csv").write_text(GOOD)
    out = batch_dir / "report.csv"
    r = fg(data, "enroll-batch", batch_dir / "m.csv", "--collection", "staff", "--report", out, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    job = summary["job"]
    assert job["status"] == "succeeded" and (job["done"], job["total"]) == (6, 6)
    assert (job["result"]["accepted"], job["result"]["rejected"], job["result"]["skipped"]) == (5, 1, 0)
    assert job["result"]["flagged"] == 0  # no --dedup-purpose: no duplicate search, nothing flagged
    rows = list(csv.DictReader(out.open()))
    assert [r["line"] for r in rows] == ["2", "3", "4", "5", "6", "7"]
    junk = rows[-1]
    assert (junk["outcome"], junk["reason"]) == ("rejected", "not_an_image")  # the code single enrolment gives
    assert all(r["outcome"] == "accepted" and r["template_id"] for r in rows[:5])
    with Gallery.open(data, engine=engine) as g:
        assert g.get_subject("staff", "O1").label == "Barack" and len(g.get_subject("staff", "O1").templates) == 3
        assert {c.purpose for c in g.get_subject("staff", "B1").consents} == {"access", "payroll"}
        assert {c.evidence_ref for c in g.get_subject("staff", "C1").consents} == {"form-3"}
        batch_events = g.audit_list(action="enroll.batch", limit=10)
        per_subject = g.audit_list(action="enroll", limit=10)
        assert g.audit_verify().ok
    assert len(batch_events) == 1 and batch_events[0].details["job"] == job["id"]
    import hashlib

    assert batch_events[0].details["manifest_sha256"] == hashlib.sha256((batch_dir / "m.csv").read_bytes()).hexdigest()
    assert sorted(e.subjects[0] for e in per_subject if e.action == "enroll") == ["B1", "C1", "J1", "O1"]


def test_a_rerun_skips_what_was_enrolled_and_never_duplicates_a_template(batch_dir, data, engine):
    (batch_dir / "m.csv").write_text(GOOD)
    assert fg(data, "enroll-batch", batch_dir / "m.csv", "-c", "staff").returncode == 0
    before = counts(data, engine)[0]
    out = batch_dir / "again.json"
    r = fg(data, "enroll-batch", batch_dir / "m.csv", "-c", "staff", "--report", out, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert [(x["outcome"], x["reason"]) for x in rows[:5]] == [("skipped", "already_enrolled")] * 5
    assert rows[5]["outcome"] == "rejected"
    assert counts(data, engine)[0] == before == 5


def test_jsonl_manifest_and_duplicate_flags(batch_dir, data, engine):
    with Gallery.open(data, engine=engine) as g:  # someone already enrolled under another id
        from facegate.gallery import ConsentSpec

        g.enroll("staff", "OTHER", [str(batch_dir / "img" / "obama_1.jpg")], consent=ConsentSpec(("access",), evidence_ref="f"))
    lines = [{"subject": "O9", "image": "img/obama_2.jpg", "purposes": ["access"], "evidence": "form-9"}]
    (batch_dir / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = fg(data, "enroll-batch", batch_dir / "m.jsonl", "-c", "staff", "--dedup-purpose", "access", "--json",
           "--report", batch_dir / "r.json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads((batch_dir / "r.json").read_text())
    assert row["outcome"] == "accepted" and row["flagged"] and row["duplicates"][0]["subject"] == "OTHER"
    assert json.loads(r.stdout)["job"]["result"]["flagged"] == 1


def test_every_bad_row_is_reported_with_its_line_and_nothing_is_enrolled(batch_dir, data, engine, tmp_path):
    outside = tmp_path / "outside.jpg"
    shutil.copy(batch_dir / "img" / "obama_1.jpg", outside)
    os.symlink(outside, batch_dir / "img" / "link.jpg")
    bad = (HEADER
           + "O1,img/obama_1.jpg,access,form-1,,\n"                   # 2 fine
           + "../x,img/obama_2.jpg,access,form-1,,\n"                 # 3 subject name
           + "O2,../outside.jpg,access,form-1,,\n"                    # 4 leaves the directory
           + f"O3,{outside},access,form-1,,\n"                         # 5 absolute
           + "O4,img/link.jpg,access,form-1,,\n"                      # 6 symlink out of the tree
           + "O5,img/missing.jpg,access,form-1,,\n"                   # 7 no such file
           + "O6,img/biden_1.jpg,marketing,form-1,,\n"                # 8 purpose not in the collection
           + "O7,img/collins_1.jpg,access,,,\n"                       # 9 no evidence
           + "O1,img/obama_3.jpg,payroll,form-1,,\n"                  # 10 another consent for O1
           + "O1,img/obama_1.jpg,access,form-1,,\n"                   # 11 the same row again
           + "O8,img/obama_3.jpg,access,form-1,,yesterday\n"          # 12 bad time
           + "O9,https://example.org/a.jpg,access,form-1,,\n")        # 13 a URL
    (batch_dir / "bad.csv").write_text(bad)
    r = fg(data, "enroll-batch", batch_dir / "bad.csv", "-c", "staff", "--json")
    assert r.returncode == 3
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "invalid_manifest" and err["count"] == 11
    assert [e["line"] for e in err["errors"]] == list(range(3, 14))  # every bad row, the good one not
    fields = {e["line"]: e["field"] for e in err["errors"]}
    assert fields[3] == "subject" and fields[4] == fields[5] == fields[6] == fields[7] == "image"
    assert fields[8] == "purposes" and fields[9] == "evidence" and fields[12] == "expires" and fields[13] == "image"
    assert "outside the manifest's directory" in next(e["message"] for e in err["errors"] if e["line"] == 6)
    assert "line 6" in r.stderr and "line 13" in r.stderr
    assert counts(data, engine) == (0, 0)  # nothing enrolled, no job


def test_a_busy_collection_refuses_a_second_batch(batch_dir, data, engine):
    from facegate.registry.jobs import JobStore

    (batch_dir / "m.csv").write_text(GOOD)
    with Gallery.open(data, engine=engine) as g:
        JobStore(g.store).create("dedup", "staff", params={}, actor="someone")
    r = fg(data, "enroll-batch", batch_dir / "m.csv", "-c", "staff", "--json")
    assert r.returncode == 5 and json.loads(r.stdout)["error"]["code"] == "job_active"
    assert counts(data, engine)[0] == 0


def test_enroll_batch_on_postgresql_is_idempotent_too(batch_dir, tmp_path, engine):
    import pg_support

    url = pg_support.fresh_database()
    data = tmp_path / "pg"
    try:
        with Gallery.open(data, store=url, engine=engine) as g:
            g.create_collection("staff", purposes=["access", "payroll"])
        (batch_dir / "m.csv").write_text(GOOD)
        args = ("enroll-batch", batch_dir / "m.csv", "-c", "staff", "--data-dir", data, "--store", url, "--json")
        first = json.loads(invoke(*args).stdout)["job"]["result"]
        again = json.loads(invoke(*args).stdout)["job"]["result"]
        assert (first["accepted"], first["rejected"]) == (5, 1)
        assert (again["accepted"], again["skipped"], again["rejected"]) == (0, 5, 1)
        with Gallery.open(data, store=url, engine=engine) as g, g.store.read() as tx:
            assert tx.execute(select(func.count()).select_from(T)).scalar() == 5
    finally:
        pg_support.drop_database(url)


def test_erasing_a_subject_erases_its_batch_rows(batch_dir, data, engine):
    (batch_dir / "m.csv").write_text(GOOD)
    r = fg(data, "enroll-batch", batch_dir / "m.csv", "-c", "staff", "--json")
    job = json.loads(r.stdout)["job"]["id"]
    from facegate.registry.batch import report

    with Gallery.open(data, engine=engine) as g:
        g.delete_subject("staff", "O1")
        left = [(x["subject"], x["outcome"]) for x in report(g, job)]
    # J1 never became a subject (its only image was rejected): its row stays with the job's report
    assert left == [("B1", "accepted"), ("C1", "accepted"), ("J1", "rejected")]


def test_a_row_interrupted_after_its_enrolment_committed_is_not_enrolled_twice(batch_dir, data, engine):
    """The crash window between a subject's enrolment and its rows' outcome: the rows are still
    'pending' though the templates are stored. On resume single enrolment refuses the same photo
    and the row is reported accepted; the template count does not change."""
    import subprocess
    import sys

    from sqlalchemy import update

    from facegate.registry.batch import INTERRUPTED, report

    (batch_dir / "m.csv").write_text(GOOD)
    job = json.loads(fg(data, "enroll-batch", batch_dir / "m.csv", "-c", "staff", "--json").stdout)["job"]
    before = counts(data, engine)[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    import socket

    with Gallery.open(data, engine=engine) as g, g.store.write() as tx:  # back to the moment of the crash
        tx.execute(update(I).where(I.c.job_id == job["id"], I.c.subject == "O1")
                   .values(outcome="pending", reason=None, template_id=None))
        tx.execute(update(J).where(J.c.id == job["id"]).values(
            status="running", active_collection="staff", owner=f"{socket.gethostname()}:{dead}:x"))
    r = fg(data, "enroll-batch", batch_dir / "m.csv", "-c", "staff", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["job"]["attempts"] == 2
    with Gallery.open(data, engine=engine) as g:
        rows = [x for x in report(g, job["id"]) if x["subject"] == "O1"]
    assert [(x["outcome"], x["message"]) for x in rows] == [("accepted", INTERRUPTED)] * 3
    assert counts(data, engine)[0] == before
