"""REST service on the real embedded gallery (SQLite, encrypted templates, hash-chained audit)
with API keys from the gallery's key store, driven with real photos."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def problem(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == code and body["type"] == f"/problems/{code}"
    return body


@pytest.fixture(scope="module")
def svc(tmp_path_factory, engine):
    data = tmp_path_factory.mktemp("gallery-svc")
    app = create_app(Settings(data_dir=data, workers=2, rate_limit_per_s=1000, rate_limit_burst=1000), engine=engine)
    with TestClient(app) as client:
        g = app.state.service.gallery
        keys = {
            "admin": ensure_admin_key(g),
            "enroll": g.keys.create("enroller", ["enroll"], ["bank"])[1],
            "identify": g.keys.create("searcher", ["identify"], ["bank"])[1],
            "verify": g.keys.create("verifier", ["verify"], ["bank"])[1],
            "other": g.keys.create("other-admin", ["admin"], ["other"])[1],
        }
        assert ensure_admin_key(g) is None  # only on a store without keys
        r = client.post("/v1/collections", headers=H(keys["admin"]),
                        json={"name": "bank", "purposes": ["kyc", "fraud"], "description": "retail customers"})
        assert r.status_code == 201, r.text
        client.post("/v1/collections", headers=H(keys["admin"]), json={"name": "other", "purposes": ["access"]})
        yield client, keys, app


def enrol(client, key, subject, *paths, purposes="kyc", expect=(200, 201)):
    files = [("images", p.open("rb")) for p in paths]
    data = {"purposes": purposes, "evidence_ref": f"form-{subject}"} if purposes else {}
    r = client.post(f"/v1/collections/bank/subjects/{subject}/faces", headers=H(key), files=files, data=data)
    assert r.status_code in expect, r.text
    return r


def test_collections_crud_and_visibility(svc):
    client, keys, _ = svc
    admin = H(keys["admin"])
    col = client.get("/v1/collections/bank", headers=admin).json()
    assert col["purposes"] == ["kyc", "fraud"] and col["threshold_source"] in ("calibration", "provisional")
    problem(client.post("/v1/collections", headers=admin, json={"name": "bank", "purposes": ["kyc"]}), 409, "collection_exists")
    problem(client.post("/v1/collections", headers=admin, json={"name": "bad name!", "purposes": ["kyc"]}),
            422, "validation_error")
    problem(client.post("/v1/collections", headers=H(keys["enroll"]), json={"name": "x", "purposes": ["kyc"]}),
            403, "scope_missing")
    assert {c["name"] for c in client.get("/v1/collections", headers=admin).json()["collections"]} >= {"bank", "other"}
    assert [c["name"] for c in client.get("/v1/collections", headers=H(keys["enroll"])).json()["collections"]] == ["bank"]
    assert [c["name"] for c in client.get("/v1/collections", headers=H(keys["other"])).json()["collections"]] == ["other"]
    # A collection the key is not granted reads exactly like a missing one.
    problem(client.get("/v1/collections/bank", headers=H(keys["other"])), 404, "collection_not_found")
    problem(client.get("/v1/collections/nope", headers=admin), 404, "collection_not_found")
    problem(client.post("/v1/collections", headers=H(keys["other"]), json={"name": "newcol", "purposes": ["kyc"]}),
            403, "forbidden")
    r = client.post("/v1/collections", headers=admin,
                    json={"name": "temp", "purposes": ["kyc"], "fmr": 0.001, "retention_days": 30})
    assert r.status_code == 201 and r.json()["fmr"] == 0.001
    erased = client.delete("/v1/collections/temp", headers=admin).json()
    assert erased == {"collection": "temp", "subject": None, "erased": True, "subjects_erased": 0}
    problem(client.get("/v1/collections/temp", headers=admin), 404, "collection_not_found")


def test_enrol_needs_consent_and_reports_quality_and_duplicates(svc, photos):
    client, keys, _ = svc
    k = keys["enroll"]
    problem(enrol(client, k, "C-1", photos["obama_1"], purposes=None, expect=(403,)), 403, "consent_required")
    r = enrol(client, k, "C-1", photos["obama_1"], photos["obama_2"])
    out = r.json()
    assert r.status_code == 201 and out["created"] and out["accepted"] == 2 and out["rejected"] == 0
    face = out["images"][0]["face"]
    assert face["quality_ok"] and len(face["landmarks"]) == 5 and out["images"][0]["template_id"]
    assert [c["purpose"] for c in out["consents"]] == ["kyc"] and out["consents"][0]["evidence_ref"] == "form-C-1"
    # existing subject with an active consent: no new consent needed, answers 200
    r = client.post("/v1/collections/bank/subjects/C-1/faces", headers=H(k), json={"images": [b64(photos["obama_1"])]})
    assert r.status_code == 200 and r.json()["images"][0]["reason"] == "duplicate_image"
    enrol(client, k, "C-2", photos["biden_1"], purposes="kyc,fraud")
    # the same person enrolled again as a new subject, de-duplicating for kyc: accepted and flagged;
    # an enroll-only key is not told who matched (it may not identify)
    r = client.post("/v1/collections/bank/subjects/C-3/faces", headers=H(k), files=[("images", photos["obama_3"].open("rb"))],
                    data={"purposes": "kyc", "dedup_purpose": "kyc"})
    assert r.status_code == 201 and r.json()["flagged_for_review"] and r.json()["duplicates"] == []
    assert client.delete("/v1/collections/bank/subjects/C-3", headers=H(k)).status_code == 200
    problem(client.post("/v1/collections/bank/subjects/C-4/faces", headers=H(k),
                        files=[("images", photos["collins_1"].open("rb"))],
                        data={"purposes": "marketing"}), 422, "purpose_not_allowed")
    problem(client.post("/v1/collections/bank/subjects/C-4/faces", headers=H(k), data={"purposes": "kyc"}),
            422, "validation_error")
    problem(enrol(client, keys["identify"], "C-9", photos["collins_1"], expect=(403,)), 403, "scope_missing")


def test_subjects_listing_and_detail(svc, photos):
    client, keys, _ = svc
    k = H(keys["enroll"])
    if client.get("/v1/collections/bank/subjects/C-1", headers=k).status_code == 404:
        enrol(client, keys["enroll"], "C-1", photos["obama_1"])
    data = client.get("/v1/collections/bank/subjects", headers=k, params={"limit": 10}).json()
    ids = [s["external_id"] for s in data["subjects"]]
    assert "C-1" in ids and data["total"] >= 1
    s = client.get("/v1/collections/bank/subjects/C-1", headers=k).json()
    assert s["active_purposes"] == ["kyc"] and s["templates"] and "vector" not in str(s)
    problem(client.get("/v1/collections/bank/subjects/nobody", headers=k), 404, "subject_not_found")
    problem(client.get("/v1/collections/bank/subjects", headers=H(keys["verify"])), 403, "scope_missing")


def test_identify_respects_purpose_and_consent(svc, photos):
    client, keys, _ = svc
    if client.get("/v1/collections/bank/subjects/C-1", headers=H(keys["enroll"])).status_code == 404:
        enrol(client, keys["enroll"], "C-1", photos["obama_1"])
    k = H(keys["identify"])
    r = client.post("/v1/collections/bank/identify", headers=k, files={"image": photos["obama_3"].open("rb")},
                    data={"purpose": "kyc"})
    res = r.json()
    assert r.status_code == 200 and res["decision"] == "match" and res["candidates"][0]["subject"] == "C-1"
    assert res["candidates"][0]["score"] >= res["threshold"] and len(res["face"]["box"]) == 4
    # C-1 never consented to fraud: not searched, not returned
    res = client.post("/v1/collections/bank/identify", headers=k,
                      json={"image": b64(photos["obama_3"]), "purpose": "fraud"}).json()
    assert res["decision"] == "no_match" and all(c["subject"] != "C-1" for c in res["candidates"])
    problem(client.post("/v1/collections/bank/identify", headers=k,
                        json={"image": b64(photos["obama_3"]), "purpose": "marketing"}), 422, "purpose_not_allowed")
    problem(client.post("/v1/collections/bank/identify", headers=k, json={"image": b64(photos["obama_3"])}),
            422, "validation_error")
    problem(client.post("/v1/collections/bank/identify", headers=H(keys["verify"]),
                        json={"image": b64(photos["obama_3"]), "purpose": "kyc"}), 403, "scope_missing")
    problem(client.post("/v1/collections/other/identify", headers=k, json={"image": b64(photos["obama_3"]), "purpose": "access"}),
            404, "collection_not_found")


def test_verify_against_subject_and_consent_lifecycle(svc, photos):
    client, keys, _ = svc
    if client.get("/v1/collections/bank/subjects/C-1", headers=H(keys["enroll"])).status_code == 404:
        enrol(client, keys["enroll"], "C-1", photos["obama_1"])
    v = H(keys["verify"])

    def verify(path, purpose):
        return client.post("/v1/verify", headers=v, files={"image": path.open("rb")},
                           data={"collection": "bank", "subject": "C-1", "purpose": purpose})

    res = verify(photos["obama_3"], "kyc").json()
    assert res["decision"] == "match" and res["subject"] == "C-1" and res["faces"]["image"]["box"]
    assert verify(photos["biden_1"], "kyc").json()["decision"] == "no_match"
    problem(verify(photos["obama_3"], "fraud"), 403, "consent_required")
    e = H(keys["enroll"])
    r = client.post("/v1/collections/bank/subjects/C-1/consents", headers=e,
                    json={"purposes": ["fraud"], "evidence_ref": "form-7"})
    assert r.status_code == 200 and set(r.json()["active_purposes"]) == {"kyc", "fraud"}
    assert verify(photos["obama_3"], "fraud").json()["decision"] == "match"
    r = client.delete("/v1/collections/bank/subjects/C-1/consents/fraud", headers=e)
    assert r.json()["active_purposes"] == ["kyc"]
    problem(verify(photos["obama_3"], "fraud"), 403, "consent_required")  # withdrawal is immediate
    problem(client.post("/v1/verify", headers=v,
                        json={"purpose": "kyc", "collection": "bank", "subject": "C-1", "image": b64(photos["obama_3"]),
                              "fmr": 0.001}),
            422, "validation_error")
    problem(client.post("/v1/verify", headers=v, json={"purpose": "kyc", "collection": "bank", "image": b64(photos["obama_3"])}),
            422, "validation_error")
    problem(client.post("/v1/collections/bank/subjects/C-1/consents", headers=e,
                        json={"purposes": ["kyc"], "expires_at": "not a time"}), 422, "validation_error")


def test_erasure_is_immediate_and_leaves_a_tombstone(svc, photos):
    client, keys, _ = svc
    enrol(client, keys["enroll"], "E-1", photos["collins_1"])
    k = H(keys["identify"])
    hit = client.post("/v1/collections/bank/identify", headers=k, files={"image": photos["collins_1"].open("rb")},
                      data={"purpose": "kyc"}).json()
    assert hit["candidates"][0]["subject"] == "E-1"
    problem(client.delete("/v1/collections/bank/subjects/E-1", headers=H(keys["verify"])), 403, "scope_missing")
    r = client.delete("/v1/collections/bank/subjects/E-1", headers=H(keys["enroll"]), params={"reason": "gdpr-art17"})
    assert r.status_code == 200 and r.json()["erased"] is True
    after = client.post("/v1/collections/bank/identify", headers=k, files={"image": photos["collins_1"].open("rb")},
                        data={"purpose": "kyc"}).json()
    assert all(c["subject"] != "E-1" for c in after["candidates"])
    problem(client.get("/v1/collections/bank/subjects/E-1", headers=H(keys["enroll"])), 404, "subject_not_found")
    problem(client.delete("/v1/collections/bank/subjects/E-1", headers=H(keys["enroll"])), 404, "subject_not_found")
    events = client.get("/v1/audit", headers=H(keys["admin"]), params={"subject": "E-1"}).json()["events"]
    assert events[0]["action"] == "subject.erase" and events[0]["details"]["reason"] == "gdpr-art17"


def test_audit_log_filters_scopes_and_chain(svc, photos):
    client, keys, _ = svc
    a = H(keys["admin"])
    client.post("/v1/verify", headers=a, files={"image_a": photos["obama_1"].open("rb"), "image_b": photos["obama_2"].open("rb")},
                data={"purpose": "kyc"})
    ev = client.get("/v1/audit", headers=a, params={"action": "verify.images", "limit": 5}).json()["events"]
    assert ev and ev[0]["decision"] == "match" and ev[0]["purpose"] == "kyc" and ev[0]["actor"].startswith("key:admin")
    page1 = client.get("/v1/audit", headers=a, params={"limit": 2}).json()
    assert len(page1["events"]) == 2 and page1["next_before_seq"] == page1["events"][-1]["seq"]
    page2 = client.get("/v1/audit", headers=a, params={"limit": 2, "before_seq": page1["next_before_seq"]}).json()
    assert page2["events"][0]["seq"] < page1["events"][-1]["seq"]
    since = client.get("/v1/audit", headers=a,
                       params={"collection": "bank", "since": "2000-01-01T00:00:00Z", "until": "2999-01-01"}).json()
    assert all(e["collection"] == "bank" for e in since["events"])
    dumped = str(since)
    assert "embedding" not in dumped and "base64" not in dumped
    problem(client.get("/v1/audit", headers=H(keys["enroll"])), 403, "scope_missing")
    problem(client.get("/v1/audit", headers=H(keys["other"])), 422, "validation_error")  # limited key: must name its collection
    assert client.get("/v1/audit", headers=H(keys["other"]), params={"collection": "other"}).status_code == 200
    problem(client.get("/v1/audit", headers=H(keys["other"]), params={"collection": "bank"}), 404, "collection_not_found")
    problem(client.get("/v1/audit", headers=a, params={"since": "yesterday"}), 422, "validation_error")
    report = client.get("/v1/audit/verify", headers=a).json()
    assert report["ok"] is True and report["archived_through"] == 0 and report["anchor_mac"] is None
    problem(client.get("/v1/audit/verify", headers=H(keys["other"])), 403, "forbidden")


def test_keys_api_create_shows_secret_once_and_revoke(svc):
    client, keys, _ = svc
    a = H(keys["admin"])
    r = client.post("/v1/keys", headers=a, json={"name": "kiosk-1", "scopes": ["verify"], "collections": ["bank"]})
    assert r.status_code == 201
    secret = r.json()["secret"]
    assert secret.startswith("fg_") and r.json()["key"]["scopes"] == ["verify"]
    listed = client.get("/v1/keys", headers=a).json()["keys"]
    assert any(k["name"] == "kiosk-1" for k in listed) and secret not in str(listed)
    me = client.get("/v1/me", headers=H(secret)).json()
    assert me["name"] == "kiosk-1" and me["collections"] == ["bank"]
    problem(client.post("/v1/keys", headers=a, json={"name": "kiosk-1", "scopes": ["verify"]}), 409, "api_key_exists")
    problem(client.post("/v1/keys", headers=a, json={"name": "x", "scopes": ["root"]}), 422, "validation_error")
    problem(client.get("/v1/keys", headers=H(keys["enroll"])), 403, "scope_missing")
    assert client.delete("/v1/keys/kiosk-1", headers=a).json()["active"] is False
    problem(client.get("/v1/me", headers=H(secret)), 401, "api_key_revoked")
    problem(client.delete("/v1/keys/nobody", headers=a), 404, "api_key_not_found")


def test_purge_dry_run(svc):
    client, keys, _ = svc
    r = client.post("/v1/purge", headers=H(keys["admin"]), params={"dry_run": "true"})
    assert r.status_code == 200 and r.json()["dry_run"] is True
    problem(client.post("/v1/purge", headers=H(keys["other"])), 403, "forbidden")


def test_typed_client_round_trip(svc, photos):
    from facegate.client import Client
    from facegate.gallery.errors import ConsentRequiredError, LivenessRequiredError

    client, keys, _ = svc
    admin = Client(http=client, api_key=keys["admin"])
    admin.create_collection("clientcol", purposes=["kyc"])
    out = admin.enroll("clientcol", "P-1", [photos["obama_1"]], purposes=["kyc"], evidence_ref="f-1")
    assert out.created and out.accepted == 1
    assert admin.identify("clientcol", photos["obama_2"], purpose="kyc").candidates[0].subject == "P-1"
    assert admin.verify_subject("clientcol", "P-1", photos["obama_3"], purpose="kyc").decision == "match"
    assert admin.subjects("clientcol").subjects[0].external_id == "P-1"
    admin.withdraw_consent("clientcol", "P-1")
    with pytest.raises(ConsentRequiredError):
        admin.verify_subject("clientcol", "P-1", photos["obama_3"], purpose="kyc")
    assert admin.erase_subject("clientcol", "P-1").erased
    assert any(e.action == "subject.erase" for e in admin.audit(collection="clientcol").events)
    # A collection that requires a liveness check refuses a bare photo; turning it off lifts that.
    assert admin.update_collection("clientcol", liveness_required=["verify"]).liveness_required == ["verify"]
    assert admin.enroll("clientcol", "P-2", [photos["obama_1"]], purposes=["kyc"], evidence_ref="f-2").accepted == 1
    with pytest.raises(LivenessRequiredError):
        admin.verify_subject("clientcol", "P-2", photos["obama_3"], purpose="kyc")
    assert admin.update_collection("clientcol", liveness_required=[]).liveness_required == []
    assert admin.verify_subject("clientcol", "P-2", photos["obama_3"], purpose="kyc").decision == "match"
    assert admin.create_collection("livecol", purposes=["kyc"], liveness_required=["enroll"]).liveness_required == ["enroll"]
    assert admin.delete_collection("clientcol").erased


def test_detect_judges_quality_by_the_collections_policy(svc, photos):
    client, keys, _ = svc
    admin = H(keys["admin"])
    r = client.post("/v1/collections", headers=admin, json={"name": "strict", "purposes": ["kyc"],
                                                           "quality_policy": {"min_inter_eye_px": 500}})
    assert r.status_code == 201, r.text
    loose = client.post("/v1/detect", headers=admin, files={"image": photos["obama_1"].open("rb")}).json()
    strict = client.post("/v1/detect", headers=admin, files={"image": photos["obama_1"].open("rb")},
                         data={"collection": "strict"}).json()
    assert loose["faces"][0]["quality_ok"] and not strict["faces"][0]["quality_ok"]
    assert strict["faces"][0]["quality_reasons"] == ["face_too_small"]
    # and enrolment agrees with the preview
    r = client.post("/v1/collections/strict/subjects/X/faces", headers=admin, files={"images": photos["obama_1"].open("rb")},
                    data={"purposes": "kyc"})
    assert r.json()["images"][0]["reason"] == "face_too_small"
    problem(client.post("/v1/detect", headers=H(keys["other"]), files={"image": photos["obama_1"].open("rb")},
                        data={"collection": "strict"}),
            404, "collection_not_found")


def test_a_dot_id_is_addressed_by_query(svc):
    """A legacy subject '..' (stored before names were checked) is read and erased through
    /subject?id=, which a browser cannot fold into the collection; only it goes."""
    from test_security_gallery import legacy_subject

    client, keys, app = svc
    legacy_subject(app.state.service.gallery, "bank", "..", "kyc")
    before = client.get("/v1/collections/bank", headers=H(keys["admin"])).json()["subjects"]
    got = client.get("/v1/collections/bank/subject", params={"id": ".."}, headers=H(keys["enroll"]))
    assert got.status_code == 200 and got.json()["external_id"] == ".." and got.json()["active_purposes"] == ["kyc"]
    problem(client.get("/v1/collections/bank/subject", params={"id": ".."}, headers=H(keys["identify"])), 403, "scope_missing")
    gone = client.delete("/v1/collections/bank/subject", params={"id": "..", "reason": "legacy"}, headers=H(keys["enroll"]))
    assert gone.status_code == 200 and gone.json()["subject"] == ".."
    assert client.get("/v1/collections/bank", headers=H(keys["admin"])).json()["subjects"] == before - 1
    problem(client.get("/v1/collections/bank/subject", params={"id": ".."}, headers=H(keys["enroll"])), 404, "subject_not_found")
