"""Liveness endpoints mounted on the service: API-key auth, sessions bound to the key, decisions
in the gallery's audit log, and enrol/verify with a completed session instead of an image.
Frames: the public-domain test clip (tests/data/liveness). The app runs on a ``ManualClock``:
sessions and results age by moving it forward."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from fastapi.testclient import TestClient

from facegate.clock import ManualClock
from facegate.liveness import create_session
from facegate.liveness.challenge import DEFAULT_RESULT_TTL_S
from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key


def _encode(clip, quality: int) -> list[bytes]:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    return [cv2.imencode(".jpg", cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR), params)[1].tobytes() for f in clip]


@pytest.fixture(scope="module")
def jpegs(clip):
    return _encode(clip, 90)


@pytest.fixture(scope="module")
def jpegs_again(clip):
    """The same capture re-encoded: a verbatim replay would be refused (frame_replayed)."""
    return _encode(clip, 84)


@pytest.fixture(scope="module")
def svc(tmp_path_factory, engine):
    settings = Settings(data_dir=tmp_path_factory.mktemp("live"), rate_limit_per_s=1000, rate_limit_burst=1000)
    app = create_app(settings, engine=engine, clock=ManualClock())
    with TestClient(app) as client:
        g = app.state.service.gallery
        admin = ensure_admin_key(g)
        g.create_collection("staff", purposes=["access"])
        keys = {"admin": admin, "verify": g.keys.create("door", ["verify"], ["staff"])[1],
                "enroll": g.keys.create("hr", ["enroll"], ["staff"])[1]}
        yield app, client, keys


def _passed_session(app, client, key, clip, jpegs, moves):
    """A session whose challenges are the clip's own movements, completed with the clip."""
    service = app.state.service
    clock = service.clock
    me = client.get("/v1/me", headers={"X-API-Key": key}).json()
    s = create_session(moves, owner=me["key_id"], clock=clock)
    service.liveness.store.add(s)
    clock.advance(10)  # the capture took place in the session's first seconds
    files = [("frames", (f"f{i}.jpg", j, "image/jpeg")) for i, j in enumerate(jpegs)]
    stamps = json.dumps([round((clock.now().timestamp() - 8 + f.t) * 1000.0, 1) for f in clip])
    r = client.post(f"/v1/liveness/sessions/{s.id}/frames", headers={"X-API-Key": key}, files=files,
                    data={"nonce": s.nonce, "timestamps": stamps})
    assert r.status_code == 200, r.text
    assert r.json()["live"] is True, r.json()["reasons"]
    return s.id


def test_sessions_need_a_key_with_a_biometric_scope(svc):
    app, client, keys = svc
    r = client.post("/v1/liveness/sessions")
    assert r.status_code == 401 and r.json()["code"] == "api_key_required"
    app.state.service.gallery.keys.create("nothing", ["admin"], ["other"])  # admin implies the scopes
    r = client.post("/v1/liveness/sessions", headers={"X-API-Key": keys["verify"]})
    assert r.status_code == 201 and 2 <= len(r.json()["challenges"]) <= 4 and r.json()["nonce"]
    sid = r.json()["id"]
    assert client.get(f"/v1/liveness/sessions/{sid}", headers={"X-API-Key": keys["verify"]}).json()["state"] == "pending"
    # bound to the key that created it
    r = client.get(f"/v1/liveness/sessions/{sid}", headers={"X-API-Key": keys["enroll"]})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


def test_enrol_and_verify_with_liveness_sessions(svc, clip, jpegs, jpegs_again, moves):
    app, client, keys = svc
    sid = _passed_session(app, client, keys["enroll"], clip, jpegs, moves)
    r = client.post("/v1/collections/staff/subjects/E-7/faces", headers={"X-API-Key": keys["enroll"]},
                    json={"liveness_session": sid, "purposes": ["access"], "evidence_ref": "badge-form-7"})
    assert r.status_code == 201, r.text
    assert r.json()["accepted"] == 1 and r.json()["liveness_session"] == sid
    # a session is used once
    r = client.post("/v1/collections/staff/subjects/E-7/faces", headers={"X-API-Key": keys["enroll"]},
                    json={"liveness_session": sid})
    assert r.status_code == 409 and r.json()["code"] == "liveness_session_used"
    sid2 = _passed_session(app, client, keys["verify"], clip, jpegs_again, moves)
    r = client.post("/v1/verify", headers={"X-API-Key": keys["verify"]},
                    json={"purpose": "access", "collection": "staff", "subject": "E-7", "liveness_session": sid2})
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "match" and r.json()["liveness_session"] == sid2
    events = client.get("/v1/audit", headers={"X-API-Key": keys["admin"]}, params={"action": "liveness"}).json()["events"]
    decisions = [e for e in events if e["action"] == "liveness.decision"]
    assert decisions and decisions[0]["decision"] == "live" and decisions[0]["actor"].startswith("key:door")
    assert "best_face" not in json.dumps(decisions)
    # Each use of a passed session is audited (session id, caller, purpose; never the image), and so is a refused one.
    uses = {e["details"]["session_id"]: e for e in events if e["action"] == "liveness.used"}
    assert set(uses) >= {sid, sid2} and uses[sid2]["purpose"] == "access" and uses[sid2]["actor"].startswith("key:door")
    refused = [e for e in events if e["action"] == "liveness.use_refused" and e["details"]["session_id"] == sid]
    assert refused and refused[0]["details"]["code"] == "liveness_session_used"
    assert all(set(e["details"]) <= {"session_id", "code"} for e in [*uses.values(), *refused])


def test_an_unused_result_is_deleted_soon_after_it_expires(svc, clip, moves):
    """The service's sweeper deletes expired results from the database without waiting for a
    request (one sweep of its thread, run now: ``sweep_once``); the session then answers "expired"."""
    app, client, keys = svc
    live = app.state.service.liveness
    sid = _passed_session(app, client, keys["verify"], clip, _encode(clip, 70), moves)
    store = live.store.target
    assert store.counts()["results"] == 1
    live.clock.advance(DEFAULT_RESULT_TTL_S + 1)  # the result's lifetime is over
    live.store.sweep_once()
    assert store.counts()["results"] == 0
    r = client.post("/v1/verify", headers={"X-API-Key": keys["verify"]},
                    json={"purpose": "access", "collection": "staff", "subject": "E-7", "liveness_session": sid})
    assert r.status_code == 410 and r.json()["code"] == "liveness_session_expired"


def test_a_still_photo_does_not_pass_and_cannot_be_used(svc, photos):
    app, client, keys = svc
    h = {"X-API-Key": keys["verify"]}
    s = client.post("/v1/liveness/sessions", headers=h).json()
    jpeg = photos["obama_1"].read_bytes()
    now = app.state.service.clock.now().timestamp() * 1000
    files = [("frames", (f"f{i}.jpg", jpeg, "image/jpeg")) for i in range(20)]
    r = client.post(f"/v1/liveness/sessions/{s['id']}/frames", headers=h, files=files,
                    data={"nonce": s["nonce"], "timestamps": ",".join(str(now - 2000 + 100 * i) for i in range(20))})
    assert r.status_code == 200 and r.json()["live"] is False
    r = client.post("/v1/verify", headers=h,
                    json={"purpose": "access", "collection": "staff", "subject": "E-7", "liveness_session": s["id"]})
    assert r.status_code == 409 and r.json()["code"] == "liveness_not_passed"
    assert 'facegate_decisions_total{operation="liveness",outcome="not_live"}' in client.get("/metrics").text


def test_console_words_every_liveness_reason():
    """The console explains each reason code in words; a new code without wording fails here."""
    import re

    from facegate.liveness.checker import REASONS

    js = (Path(__file__).parents[1] / "src/facegate/service/static/app.js").read_text()
    table = js[js.index("LIVENESS_REASON_TEXT = {"):]
    table = table[: table.index("};")]
    worded = set(re.findall(r"(\w+): '", table))
    assert set(REASONS) - worded == set()
