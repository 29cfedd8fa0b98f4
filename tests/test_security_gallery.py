"""Attacks on the gallery through the real interfaces (the REST app on the real SQLite gallery
with keys from its key store, the typed client, the CLI in-process): a subject named '..'
erasing a collection, template poisoning by an enroll-only key, the duplicate warning as an
identification oracle, audit truncation behind a rewritten head."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest
from fastapi.testclient import TestClient

from cli_support import Ran, invoke
from facegate.client import Client
from facegate.errors import FacegateError
from facegate.gallery import ConsentSpec, Gallery
from facegate.gallery.names import check_name
from facegate.gallery.store import SCHEMA_HEAD
from facegate.gallery.types import utcnow
from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key
from store_support import downgrade

GENESIS = "0" * 64


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def problem(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code
    return r.json()


def app_for(data, engine):
    return create_app(Settings(data_dir=data, workers=2, rate_limit_per_s=1000, rate_limit_burst=1000), engine=engine)


def cli(data, *args: object) -> Ran:
    return invoke(*args, env={"FACEGATE_DATA_DIR": str(data), "COLUMNS": "200", "FACEGATE_STORE": None,
                              "FACEGATE_MASTER_KEY": None})


def legacy_subject(g: Gallery, collection: str, external_id: str, purpose: str) -> None:
    """A subject row as stored before names were checked (no templates: erasure needs none)."""
    now = utcnow()
    with g.store.write() as tx:
        col = tx.collection_by_name(collection)
        _dek, wrapped = g.crypto.new_subject_key(col.id, external_id)
        sid = tx.insert_subject(collection_id=col.id, external_id=external_id, label=None, created_at=now, last_seen_at=now,
                                wrapped_key=wrapped, master_key_id=g.crypto.master_key_id)
        tx.insert_consents([dict(subject_id=sid, purpose=purpose, granted_at=now, expires_at=None, evidence_ref=None,
                                 withdrawn_at=None, actor="legacy")])
        tx.add_change(col.id, sid, "subject", now)
    g.index.sync()


@pytest.fixture
def svc(tmp_path, engine, monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    data = tmp_path / "data"
    app = app_for(data, engine)
    with TestClient(app) as client:
        g = app.state.service.gallery
        keys = {"admin": ensure_admin_key(g)}
        r = client.post("/v1/collections", headers=H(keys["admin"]), json={"name": "bank", "purposes": ["kyc", "fraud"]})
        assert r.status_code == 201, r.text
        for name, scopes in (("enroller", ["enroll"]), ("verifier", ["verify"]), ("searcher", ["enroll", "identify"])):
            r = client.post("/v1/keys", headers=H(keys["admin"]), json={"name": name, "scopes": scopes, "collections": ["bank"]})
            assert r.status_code == 201, r.text
            keys[name] = r.json()["secret"]
        yield client, keys, g, data


def enrol(client, key, subject, photo, **data):
    return client.post(f"/v1/collections/bank/subjects/{subject}/faces", headers=H(key),
                       files=[("images", photo.open("rb"))], data=data)


# --- 1. names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [".", "..", "a/b", "x\x00y", "tab\there", "\x85next", "evil\u202eexe.jpg", "iso\u2066late",
                                  "non\ufdd0char", "end\uffff", "sur\ud800rogate", " padded", "x" * 257, ""])
def test_name_rule_refuses(name):
    with pytest.raises(FacegateError) as exc:
        check_name("subject", name)
    assert exc.value.code == "invalid_name" and exc.value.http_status == 422


def test_name_rule_normalises_to_nfc():
    assert check_name("subject", "Jose\u0301") == "Jos\u00e9" and check_name("subject", "C-1.2") == "C-1.2"
    assert check_name("subject", "...") == "..."  # not a dot segment


def test_dot_dot_subject_is_refused_and_a_legacy_one_erases_only_itself(svc, photos):
    client, keys, g, _ = svc
    admin = Client(http=client, api_key=keys["admin"])
    admin.enroll("bank", "C-1", photos["obama_1"], purposes=["kyc"])
    admin.enroll("bank", "C-2", photos["biden_1"], purposes=["kyc"])
    # Creating '..' is refused, through the typed client and as a raw %2E%2E path segment.
    with pytest.raises(FacegateError) as exc:
        admin.enroll("bank", "..", photos["collins_1"], purposes=["kyc"])
    assert exc.value.code == "invalid_name" and exc.value.status == 422  # type: ignore[attr-defined]
    problem(enrol(client, keys["enroller"], "%2E%2E", photos["collins_1"], purposes="kyc"), 422, "invalid_name")
    problem(enrol(client, keys["enroller"], "evil%E2%80%AEgpj.exe", photos["collins_1"], purposes="kyc"), 422, "invalid_name")
    # A '..' row from before the rule: the client reaches exactly it, the collection survives.
    legacy_subject(g, "bank", "..", "kyc")
    assert admin.subject("bank", "..").external_id == ".."
    assert admin.erase_subject("bank", "..").erased
    assert sorted(s.external_id for s in admin.subjects("bank").subjects) == ["C-1", "C-2"]
    assert admin.collection("bank").subjects == 2
    erased = [e for e in admin.audit(collection="bank", action="subject.erase").events]
    assert [e.subjects for e in erased] == [[".."]]
    # Every '.' goes percent-encoded; names with dots still reach their routes.
    assert admin.create_key("ops.team", scopes=["verify"]).key.name == "ops.team"
    assert admin.revoke_key("ops.team").active is False
    assert admin.create_collection("eu.bank", purposes=["kyc"]).name == "eu.bank"
    assert admin.enroll("eu.bank", "a.b", photos["obama_1"], purposes=["kyc"]).subject == "a.b"
    assert admin.erase_subject("eu.bank", "a.b").erased and admin.collection("eu.bank").subjects == 0
    with pytest.raises(FacegateError) as exc:
        g.keys.create("..", ["verify"])
    assert exc.value.code == "invalid_name"


def test_legacy_invalid_names_are_reported_at_upgrade_and_erasable_by_cli(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    data = tmp_path / "data"
    with Gallery.open(data) as g:
        g.create_collection("bank", purposes=["kyc"])
        for ext in ("..", "ok-1", "rtl\u202egnp"):
            legacy_subject(g, "bank", ext, "kyc")
        downgrade(g.store, "0005")  # the store as a facegate before migration 0006 left it
    with caplog.at_level(logging.WARNING, logger="facegate.gallery"), Gallery.open(data) as g:
        assert g.store.schema_version() == SCHEMA_HEAD
        ev = g.audit_list(action="store.names_check")[0]
        assert sorted(ev.subjects) == ["..", "rtl\u202egnp"] and ev.details["count"] == 2
        assert g.audit_verify().ok
    assert "'..'" in caplog.text and "ok-1" not in caplog.text
    with Gallery.open(data) as g:  # reported once
        assert len(g.audit_list(action="store.names_check")) == 1
    r = cli(data, "subject", "delete", "bank", "..", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["erased"] is True
    with Gallery.open(data) as g:
        assert sorted(s.external_id for s in g.list_subjects("bank")) == ["ok-1", "rtl\u202egnp"]


# --- 2. template poisoning -----------------------------------------------------------------------


def test_enroll_key_cannot_add_another_persons_face_to_a_subject(svc, photos):
    client, keys, _, _ = svc
    assert enrol(client, keys["enroller"], "V-1", photos["obama_1"], purposes="kyc").status_code == 201
    # The attacker's face added to V-1: refused, nothing stored.
    r = enrol(client, keys["enroller"], "V-1", photos["biden_1"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 0 and out["images"][0]["reason"] == "face_mismatch" and out["images"][0]["template_id"] is None
    r = client.post("/v1/verify", headers=H(keys["verifier"]), files={"image": photos["biden_1"].open("rb")},
                    data={"purpose": "kyc", "collection": "bank", "subject": "V-1"})
    assert r.status_code == 200 and r.json()["decision"] == "no_match", r.text
    ev = client.get("/v1/audit", headers=H(keys["admin"]), params={"action": "enroll", "limit": 1}).json()["events"][0]
    assert ev["decision"] == "rejected" and "face_mismatch" in ev["details"]["reasons"]
    assert ev["details"]["face_mismatch"][0]["score"] < r.json()["threshold"]
    # A genuine new photo of the same person is accepted.
    assert enrol(client, keys["enroller"], "V-1", photos["obama_2"]).json()["accepted"] == 1
    # Forcing needs an admin key and a reason; the reason is audited.
    problem(enrol(client, keys["enroller"], "V-1", photos["biden_1"], force_mismatch="twin"), 403, "scope_missing")
    out = enrol(client, keys["admin"], "V-1", photos["biden_1"], force_mismatch="ticket 42: photo after surgery").json()
    assert out["accepted"] == 1
    ev = client.get("/v1/audit", headers=H(keys["admin"]), params={"action": "enroll", "limit": 1}).json()["events"][0]
    assert ev["details"]["forced_mismatch"] == "ticket 42: photo after surgery" and ev["details"]["face_mismatch"]


def test_images_of_one_new_subject_must_agree(svc, photos):
    client, keys, _, _ = svc
    r = client.post("/v1/collections/bank/subjects/N-1/faces", headers=H(keys["enroller"]),
                    files=[("images", photos["obama_1"].open("rb")), ("images", photos["collins_1"].open("rb")),
                           ("images", photos["obama_3"].open("rb"))], data={"purposes": "kyc"})
    assert r.status_code == 201, r.text
    assert [i["reason"] for i in r.json()["images"]] == [None, "face_mismatch", None]


# --- 3. duplicate warning as an identification oracle ------------------------------------------------


def test_duplicate_warning_is_no_identification_oracle(svc, photos):
    client, keys, _, _ = svc
    # The victim consented to kyc only.
    assert enrol(client, keys["admin"], "VICTIM-7", photos["obama_1"], purposes="kyc").status_code == 201
    attacker = keys["enroller"]
    problem(client.post("/v1/collections/bank/identify", headers=H(attacker), files={"image": photos["obama_2"].open("rb")},
                        data={"purpose": "kyc"}), 403, "scope_missing")
    seen = []
    for n, extra in enumerate(({}, {"dedup_purpose": "fraud"}, {"dedup_purpose": "kyc"})):
        r = enrol(client, attacker, f"probe-{n}", photos["obama_2"], purposes="fraud", **extra)
        assert r.status_code == 201, r.text
        assert "VICTIM" not in r.text
        out = r.json()
        assert out["duplicates"] == [] and all(i["duplicates"] == [] for i in out["images"])
        seen.append(out["flagged_for_review"])
        assert client.delete(f"/v1/collections/bank/subjects/probe-{n}", headers=H(attacker)).status_code == 200
    # No declared purpose: no search; a purpose the victim never consented to: not compared;
    # kyc: only a flag for review, without ids or scores.
    assert seen == [False, False, True]
    # The auditor sees who matched; a key allowed to identify is told.
    ev = client.get("/v1/audit", headers=H(keys["admin"]), params={"action": "enroll", "limit": 2}).json()["events"]
    flagged = next(e for e in ev if e["subjects"][0] == "probe-2")
    assert "VICTIM-7" in flagged["subjects"] and flagged["details"]["duplicates"] == ["VICTIM-7"]
    assert flagged["details"]["duplicates_disclosed"] is False and flagged["score"] > 0
    out = enrol(client, keys["searcher"], "probe-3", photos["obama_2"], purposes="kyc", dedup_purpose="kyc").json()
    assert out["flagged_for_review"] and out["duplicates"][0]["subject"] == "VICTIM-7"
    problem(enrol(client, attacker, "probe-4", photos["obama_2"], purposes="kyc", dedup_purpose="marketing"), 422,
            "purpose_not_allowed")


# --- 6. audit truncation ---------------------------------------------------------------------------


def _tamper(data, *sql: str) -> None:
    db = sqlite3.connect(data / "gallery.db")
    with db:
        db.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        for s in sql:
            db.execute(s)
    db.close()


def _truncate_newest(data, n: int) -> None:
    db = sqlite3.connect(data / "gallery.db")
    (top,) = db.execute("SELECT max(seq) FROM audit_events").fetchone()
    db.close()
    _tamper(data, f"DELETE FROM audit_events WHERE seq > {top - n}",
            "UPDATE audit_head SET seq = (SELECT max(seq) FROM audit_events), "
            "mac = (SELECT mac FROM audit_events ORDER BY seq DESC LIMIT 1)")


def _audit_some(client, keys, photos) -> None:
    enrol(client, keys["enroller"], "T-1", photos["obama_1"], purposes="kyc")
    for _ in range(3):
        client.post("/v1/collections/bank/identify", headers=H(keys["searcher"]), files={"image": photos["obama_2"].open("rb")},
                    data={"purpose": "kyc"})


def _cli_verify(data) -> dict:
    r = cli(data, "audit", "verify", "--json")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)


def test_truncated_tail_with_rewritten_head_is_detected(svc, photos):
    client, keys, _, data = svc
    _audit_some(client, keys, photos)
    before = client.get("/v1/audit/verify", headers=H(keys["admin"])).json()
    assert before["ok"]
    _truncate_newest(data, 3)
    rep = client.get("/v1/audit/verify", headers=H(keys["admin"])).json()
    assert not rep["ok"] and rep["head_seq"] == before["head_seq"] - 3 and "removed" in rep["problem"]
    assert before["witnessed_seq"] == before["head_seq"]
    rep = _cli_verify(data)
    assert not rep["ok"] and rep["witnessed_seq"] == before["head_seq"]
    # A head recorded elsewhere says the same through the API (typed client).
    (data / "audit.witness").rename(data / "audit.witness.moved")
    admin = Client(http=client, api_key=keys["admin"])
    assert admin.audit_verify().ok  # without the witness the shortened chain looks whole …
    rep = admin.audit_verify(expect_head=before["head_mac"])
    assert not rep.ok and "rewritten" in rep.problem  # … but not to an anchor kept elsewhere


def test_log_wiped_back_to_genesis_is_detected(svc, photos):
    client, keys, _, data = svc
    _audit_some(client, keys, photos)
    _tamper(data, "DELETE FROM audit_events", f"UPDATE audit_head SET seq = 0, mac = '{GENESIS}'")
    rep = client.get("/v1/audit/verify", headers=H(keys["admin"])).json()
    assert not rep["ok"] and rep["head_seq"] == 0 and rep["events"] == 0 and "removed" in rep["problem"]
    assert not _cli_verify(data)["ok"]


def test_missing_audit_head_is_a_clean_tampered_report_and_refuses_audited_writes(svc, photos):
    client, keys, _, data = svc
    _audit_some(client, keys, photos)
    _tamper(data, "DELETE FROM audit_head")
    rep = client.get("/v1/audit/verify", headers=H(keys["admin"]))
    assert rep.status_code == 200 and not rep.json()["ok"] and "head row is missing" in rep.json()["problem"]
    problem(enrol(client, keys["enroller"], "T-2", photos["biden_1"], purposes="kyc"), 503, "audit_tampered")
    problem(client.post("/v1/collections/bank/identify", headers=H(keys["searcher"]),
                        files={"image": photos["obama_2"].open("rb")}, data={"purpose": "kyc"}), 503, "audit_tampered")
    assert client.get("/v1/collections/bank", headers=H(keys["admin"])).status_code == 200  # reads still work
    rep = _cli_verify(data)
    assert not rep["ok"] and "head row is missing" in rep["problem"]
    r = cli(data, "collection", "create", "x", "--purposes", "kyc")
    assert r.returncode != 0 and "audit_tampered" in r.stderr and "Traceback" not in r.stderr


def test_witness_survives_rotation_and_archival_and_catches_a_forged_file(tmp_path, engine, photos, monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    data = tmp_path / "data"
    with Gallery.open(data, engine=engine) as g:
        g.create_collection("c", purposes=["access"])
        g.enroll("c", "E1", photos["obama_1"], consent=ConsentSpec(("access",)))
        g.rotate_master_key()
        rep = g.audit_verify()
        assert rep.ok and rep.witnessed_seq == rep.head_seq
        arch = g.audit_archive(utcnow(), tmp_path / "a.jsonl")
        assert arch.count > 0
        rep = g.audit_verify()
        assert rep.ok and rep.archived_through == arch.last_seq and rep.witnessed_seq == rep.head_seq
    assert (data / "audit.witness").stat().st_mode & 0o777 == 0o600
    # A checkpoint line written without the key (to make a truncation look witnessed) is caught.
    with open(data / "audit.witness", "a") as f:
        f.write(f"1 {GENESIS} 2026-01-01T00:00:00.000000Z {'0' * 64}\n")
    with Gallery.open(data, engine=engine) as g:
        rep = g.audit_verify()
        assert not rep.ok and "witness file was modified" in rep.problem


def test_cli_refuses_another_face_unless_forced_with_a_reason(tmp_path, photos, monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    data = tmp_path / "data"
    assert cli(data, "collection", "create", "staff", "--purposes", "access").returncode == 0
    assert cli(data, "enroll", "staff", "E1", photos["obama_1"], "-p", "access").returncode == 0
    r = cli(data, "enroll", "staff", "E1", photos["biden_1"], "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["images"][0]["reason"] == "face_mismatch"
    r = cli(data, "enroll", "staff", "E1", photos["biden_1"], "--force-mismatch", "ticket 7: new photo after surgery", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["accepted"] == 1
    with Gallery.open(data) as g:
        forced, refused = g.audit_list(action="enroll", limit=2)
        assert forced.details["forced_mismatch"] == "ticket 7: new photo after surgery"
        assert refused.decision == "rejected" and refused.details["face_mismatch"][0]["index"] == 0
