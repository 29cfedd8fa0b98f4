"""A collection that requires liveness, through the REST service: the setting on create and
PATCH (admin), a bare image refused with the ``liveness_required`` problem (403), a completed
liveness session accepted and recorded in the operation's audit event, and no way for an API
client to claim liveness without a session (no override field, no unconsumed id)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from facegate.clock import ManualClock
from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key
from test_service_liveness import _encode, _passed_session, jpegs, jpegs_again  # noqa: F401


@pytest.fixture(scope="module")
def jpegs_third(clip):  # noqa: F811
    return _encode(clip, 78)


@pytest.fixture(scope="module")
def svc(tmp_path_factory, engine):
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("livereq"), rate_limit_per_s=1000, rate_limit_burst=1000),
                     engine=engine, clock=ManualClock())  # the sessions' times, as _passed_session moves them
    with TestClient(app) as client:
        g = app.state.service.gallery
        admin = ensure_admin_key(g)
        keys = {"admin": admin, "ops": g.keys.create("ops", ["verify", "identify", "enroll"], ["door"])[1]}
        yield app, client, keys


def _events(client, admin, action):
    r = client.get("/v1/audit", headers={"X-API-Key": admin}, params={"collection": "door", "action": action})
    return [e for e in r.json()["events"] if e["action"] == action]


def test_setting_on_create_get_patch_and_scope(svc):
    app, client, keys = svc
    h = {"X-API-Key": keys["admin"]}
    r = client.post("/v1/collections", headers=h, json={"name": "door", "purposes": ["access"],
                                                        "liveness_required": ["identify", "enroll"]})
    assert r.status_code == 201, r.text
    assert r.json()["liveness_required"] == ["enroll", "identify"]
    assert client.get("/v1/collections/door", headers=h).json()["liveness_required"] == ["enroll", "identify"]
    r = client.post("/v1/collections", headers=h, json={"name": "x", "purposes": ["access"], "liveness_required": ["erase"]})
    assert r.status_code == 422
    r = client.post("/v1/collections", headers=h, json={"name": "plain", "purposes": ["access"]})
    assert r.json()["liveness_required"] == []
    # PATCH: admin only; fields left out stay; the change is audited
    r = client.patch("/v1/collections/door", headers={"X-API-Key": keys["ops"]}, json={"liveness_required": []})
    assert r.status_code == 403 and r.json()["code"] == "scope_missing"
    r = client.patch("/v1/collections/door", headers=h, json={})
    assert r.status_code == 200 and r.json()["liveness_required"] == ["enroll", "identify"]
    r = client.patch("/v1/collections/door", headers=h, json={"liveness_required": ["verify"]})
    assert r.status_code == 200 and r.json()["liveness_required"] == ["verify"]
    r = client.patch("/v1/collections/door", headers=h, json={"liveness_required": ["enroll", "identify"], "fmr": 0.001})
    assert r.status_code == 422  # only the settings that may change are accepted
    r = client.patch("/v1/collections/door", headers=h, json={"liveness_required": ["enroll", "identify"]})
    assert r.json()["liveness_required"] == ["enroll", "identify"]
    ev = _events(client, keys["admin"], "collection.update")[0]
    assert ev["details"] == {"liveness_required": ["enroll", "identify"], "previous": ["verify"]}
    assert ev["actor"].startswith("key:admin")


def test_required_operations_refuse_photos_and_accept_sessions(svc, photos, clip, jpegs, jpegs_again, jpegs_third, moves):  # noqa: F811
    app, client, keys = svc
    h = {"X-API-Key": keys["ops"]}
    # enrolment: a photo is refused with the liveness_required problem
    r = client.post("/v1/collections/door/subjects/E-1/faces", headers=h, files={"images": photos["obama_1"].open("rb")},
                    data={"purposes": "access"})
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    p = r.json()
    assert p["code"] == "liveness_required" and p["type"] == "/problems/liveness_required"
    assert "liveness" in p["detail"] and p.get("operation") == "enroll"
    assert client.get("/problems/liveness_required").status_code == 200
    assert _events(client, keys["admin"], "enroll")[0]["decision"] == "refused_liveness_required"
    # … and no client can claim liveness: an override field is not part of the API, an id that
    # was never a passed session of this key is refused by the liveness store
    r = client.post("/v1/collections/door/subjects/E-1/faces", headers=h,
                    json={"purposes": ["access"], "liveness_override": "trust me"})
    assert r.status_code == 422
    r = client.post("/v1/collections/door/subjects/E-1/faces", headers=h,
                    json={"purposes": ["access"], "liveness_session": "made-up"})
    assert r.status_code == 404 and r.json()["code"].startswith("liveness_session")
    # with a passed session: accepted, and the enrol event names the session
    sid = _passed_session(app, client, keys["ops"], clip, jpegs, moves)
    r = client.post("/v1/collections/door/subjects/E-1/faces", headers=h,
                    json={"liveness_session": sid, "purposes": ["access"], "evidence_ref": "form-1"})
    assert r.status_code == 201 and r.json()["accepted"] == 1, r.text
    ev = _events(client, keys["admin"], "enroll")[0]
    assert ev["decision"] == "enrolled" and ev["details"]["liveness"] == "session" and ev["details"]["liveness_session"] == sid

    # verify is not required: a photo is accepted (E-1 is the clip's person: no match) and records no liveness
    body = {"purpose": "access", "collection": "door", "subject": "E-1"}
    r = client.post("/v1/verify", headers=h, files={"image": photos["obama_2"].open("rb")}, data=body)
    assert r.status_code == 200 and r.json()["decision"] == "no_match"
    assert "liveness" not in _events(client, keys["admin"], "verify")[0]["details"]

    # identify is required
    r = client.post("/v1/collections/door/identify", headers=h, files={"image": photos["obama_3"].open("rb")},
                    data={"purpose": "access"})
    assert r.status_code == 403 and r.json()["code"] == "liveness_required"
    sid2 = _passed_session(app, client, keys["ops"], clip, jpegs_again, moves)
    r = client.post("/v1/collections/door/identify", headers=h, json={"purpose": "access", "liveness_session": sid2})
    assert r.status_code == 200, r.text
    assert [c["subject"] for c in r.json()["candidates"]] == ["E-1"]
    assert _events(client, keys["admin"], "identify")[0]["details"]["liveness_session"] == sid2

    # now require verify too: the photo is refused, a session is accepted
    client.patch("/v1/collections/door", headers={"X-API-Key": keys["admin"]}, json={"liveness_required": ["verify"]})
    r = client.post("/v1/verify", headers=h, files={"image": photos["obama_2"].open("rb")}, data=body)
    assert r.status_code == 403 and r.json()["code"] == "liveness_required"
    sid3 = _passed_session(app, client, keys["ops"], clip, jpegs_third, moves)
    r = client.post("/v1/verify", headers=h, json={**body, "liveness_session": sid3})
    assert r.status_code == 200 and r.json()["decision"] == "match", r.text
    assert _events(client, keys["admin"], "verify")[0]["details"]["liveness_session"] == sid3
    # enrolment is no longer required: a photo passes the liveness gate again and reaches the face
    # check (E-1 is the clip's person, so Obama's photo is refused as another person's face)
    r = client.post("/v1/collections/door/subjects/E-1/faces", headers=h, files={"images": photos["obama_2"].open("rb")})
    assert r.status_code == 200 and r.json()["images"][0]["reason"] == "face_mismatch", r.text
    assert client.get("/v1/audit/verify", headers={"X-API-Key": keys["admin"]}).json()["ok"] is True
