"""The liveness routes on the service app (``create_app``), with an in-memory session store, the
audit records collected in a list and a ``ManualClock`` (sessions age by moving it forward).
Frames: the public-domain test clip."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from facegate.clock import ManualClock
from facegate.errors import FacegateError
from facegate.liveness import InMemorySessionStore, create_session
from facegate.liveness.flow import take_best_frame
from facegate.service import Settings, create_app
from facegate.service.auth import StaticKeys


@pytest.fixture(scope="module")
def jpegs(clip):
    quality = [cv2.IMWRITE_JPEG_QUALITY, 90]
    return [cv2.imencode(".jpg", cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR), quality)[1].tobytes() for f in clip]


def _app(tmp_path, engine, clock=None):
    keys = StaticKeys()
    for key in ("key-1", "key-2"):
        keys.add(key, key, ["verify"])  # the secret doubles as the key id: owners read "key-1"
    return create_app(Settings(data_dir=tmp_path, rate_limit_per_s=1000, rate_limit_burst=1000), engine=engine,
                      authenticator=keys, clock=clock or ManualClock())


@pytest.fixture()
def env(tmp_path, engine):
    clock = ManualClock()
    store = InMemorySessionStore(clock=clock)
    audit: list[dict] = []
    app = _app(tmp_path, engine, clock)

    @app.exception_handler(FacegateError)
    async def problem(request: Request, exc: FacegateError):  # the bare code, for short assertions
        return JSONResponse({"type": exc.code, "detail": exc.message}, status_code=exc.http_status)

    live = app.state.service.liveness
    live.store = store
    live.audit = lambda principal, record: audit.append(record)
    with TestClient(app) as client:
        client.headers["X-API-Key"] = "key-1"
        yield client, store, audit, clock


def _session(store, clock, moves, owner="key-1", age_s=10.0, ttl_s=180.0):
    """A session created now, then ``age_s`` seconds of the clock later."""
    s = create_session(moves, owner=owner, ttl_s=ttl_s, clock=clock)
    store.add(s)
    clock.advance(age_s)
    return s


def _ago(clock, seconds):
    return clock.now().timestamp() - seconds


def _multipart(jpegs, clip, nonce, start_s):
    files = [("frames", (f"f{i}.jpg", j, "image/jpeg")) for i, j in enumerate(jpegs)]
    stamps = json.dumps([round((start_s + f.t) * 1000.0, 1) for f in clip[: len(jpegs)]])
    return {"data": {"nonce": nonce, "timestamps": stamps}, "files": files}


def test_a_key_is_required(tmp_path, engine):
    with TestClient(_app(tmp_path, engine)) as client:
        r = client.post("/v1/liveness/sessions")
    assert r.status_code == 401 and r.json()["code"] == "api_key_required"


def test_create_and_read_session(env):
    client, _, audit, _ = env
    r = client.post("/v1/liveness/sessions")
    assert r.status_code == 201, r.text
    body = r.json()
    assert 2 <= len(body["challenges"]) <= 4 and len(body["prompts"]) == len(body["challenges"])
    assert body["nonce"] and body["expires_at"].endswith("Z") and body["state"] == "pending"
    assert body["upload"]["max_frames"] > 0
    assert audit[-1]["event"] == "liveness.session_created" and audit[-1]["actor"] == "key-1"
    got = client.get(f"/v1/liveness/sessions/{body['id']}")
    assert got.status_code == 200 and "nonce" not in got.json()
    other = client.get(f"/v1/liveness/sessions/{body['id']}", headers={"X-API-Key": "key-2"})
    assert other.status_code == 404  # another caller cannot see it
    assert client.get("/v1/liveness/sessions/nope").status_code == 404


def test_multipart_submission_live_then_used(env, clip, jpegs, moves):
    client, store, audit, clock = env
    s = _session(store, clock, moves)
    r = client.post(f"/v1/liveness/sessions/{s.id}/frames", **_multipart(jpegs, clip, s.nonce, _ago(clock, 8)))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["live"] is True and d["decision"] == "live" and d["reasons"] == [] and d["state"] == "passed"
    assert all(c["status"] == "met" for c in d["challenges"])
    assert d["best_face"]["quality"]["inter_eye_px"] > 0
    rec = audit[-1]
    assert rec["event"] == "liveness.decision" and rec["live"] is True and rec["actor"] == "key-1"
    assert not {"landmarks", "box", "best_face", "embedding"} & set(rec)
    again = client.post(f"/v1/liveness/sessions/{s.id}/frames", **_multipart(jpegs, clip, s.nonce, _ago(clock, 8)))
    assert again.status_code == 409 and again.json()["type"] == "liveness_session_used"
    assert audit[-1]["event"] == "liveness.rejected"
    # verify/enrol take the best frame, once
    assert take_best_frame(store, s.id, owner="key-1").ndim == 3


def test_json_submission_and_replay(env, clip, jpegs, moves):
    client, store, _, clock = env
    s = _session(store, clock, moves)
    start = _ago(clock, 8)
    frames = [{"image": base64.b64encode(j).decode(), "timestamp_ms": (start + f.t) * 1000} for j, f in zip(jpegs, clip)]
    r = client.post(f"/v1/liveness/sessions/{s.id}/frames", json={"nonce": s.nonce, "frames": frames})
    assert r.status_code == 200 and r.json()["live"] is True, r.text
    s2 = _session(store, clock, moves)
    frames2 = [{**f, "timestamp_ms": f["timestamp_ms"] + 5000} for f in frames]
    r = client.post(f"/v1/liveness/sessions/{s2.id}/frames", json={"nonce": s2.nonce, "frames": frames2})
    assert r.status_code == 200 and r.json()["live"] is False
    assert "frame_replayed" in r.json()["reasons"]


def test_still_photo_is_not_live(env, moves):
    client, store, _, clock = env
    s = _session(store, clock, moves)
    img = (Path(__file__).parent / "data" / "obama_1.jpg").read_bytes()
    now = clock.now().timestamp()
    files = [("frames", (f"f{i}.jpg", img, "image/jpeg")) for i in range(10)]
    stamps = ",".join(str((now - 5 + i * 0.1) * 1000) for i in range(10))
    r = client.post(f"/v1/liveness/sessions/{s.id}/frames", data={"nonce": s.nonce, "timestamps": stamps}, files=files)
    assert r.status_code == 200
    d = r.json()
    assert d["live"] is False and {"static_frames", "planar_motion", "challenge_not_met"} <= set(d["reasons"])
    assert "frame_replayed" not in d["reasons"]  # duplicates inside one session are not a replay


def test_request_errors(env, clip, jpegs, moves):
    client, store, _, clock = env
    s = _session(store, clock, moves)
    url = f"/v1/liveness/sessions/{s.id}/frames"
    body = _multipart(jpegs[:6], clip, s.nonce, _ago(clock, 5))
    assert client.post(url, **{**body, "data": {**body["data"], "nonce": "x"}}).status_code == 403
    assert client.post(url, **{**body, "data": {**body["data"], "timestamps": "[1,2]"}}).status_code == 422
    assert client.post(url, **{**body, "data": {**body["data"], "timestamps": "a,b"}}).status_code == 422
    assert client.post(url, data={"nonce": s.nonce, "timestamps": "1"}).status_code == 422
    assert client.post(url, content=b"xx", headers={"content-type": "text/plain"}).status_code == 415
    assert client.post(url, content=b"{", headers={"content-type": "application/json"}).status_code == 422
    assert client.post(url, json={"nonce": s.nonce, "frames": [{"image": "***", "timestamp_ms": 1}]}).status_code == 422
    assert client.post(url, json={"nonce": s.nonce, "frames": [{"image": "aGk=", "timestamp_ms": True}]}).status_code == 422
    assert client.post(url, json=[1, 2]).status_code == 422
    huge = {"nonce": s.nonce, "frames": [{"image": "aGk=", "timestamp_ms": 10**400}]}
    assert client.post(url, content=json.dumps(huge), headers={"content-type": "application/json"}).status_code == 422
    assert client.post(url, **{**body, "data": {**body["data"], "timestamps": "[" * 5000 + "]" * 5000}}).status_code == 422
    assert client.post(url, **{**body, "data": {**body["data"], "timestamps": json.dumps([10**400] * 6)}}).status_code == 422
    # Non-finite capture times on otherwise valid frames (the stdlib parser lets NaN/Infinity through).
    start_ms = (_ago(clock, 5)) * 1000.0
    for stamp in ("NaN", "Infinity", "-Infinity"):
        frames = ",".join(
            f'{{"image": "{base64.b64encode(j).decode()}", '
            f'"timestamp_ms": {stamp if i == 3 else round(start_ms + f.t * 1000.0, 1)}}}'
            for i, (j, f) in enumerate(zip(jpegs[:6], clip))
        )
        raw = f'{{"nonce": "{s.nonce}", "frames": [{frames}]}}'
        r = client.post(url, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["type"] == "liveness_bad_frames", (stamp, r.text)
    stamps = [str(round(start_ms + f.t * 1000.0, 1)) for f in clip[:6]]
    for bad in ("nan", "inf"):
        text = ",".join(stamps[:3] + [bad] + stamps[4:])
        r = client.post(url, **{**body, "data": {**body["data"], "timestamps": text}})
        assert r.status_code == 422 and r.json()["type"] == "liveness_bad_frames", (bad, r.text)
    bad_img = {"nonce": s.nonce, "frames": [{"image": base64.b64encode(b"junk").decode(), "timestamp_ms": 1.0}]}
    assert client.post(url, json=bad_img).status_code == 422
    assert store.get(s.id, owner="key-1").state == "pending"  # none of these used the session up
    assert client.post("/v1/liveness/sessions/unknown/frames", **body).status_code == 404
    assert client.post("/v1/liveness/sessions/bad id!/frames", **body).status_code in (404, 422)
    expired = _session(store, clock, moves, age_s=400)
    r = client.post(f"/v1/liveness/sessions/{expired.id}/frames", **_multipart(jpegs[:6], clip, expired.nonce, _ago(clock, 5)))
    assert r.status_code == 410 and r.json()["type"] == "liveness_session_expired"
    mine = _session(store, clock, moves, owner="key-2")
    r = client.post(f"/v1/liveness/sessions/{mine.id}/frames", **_multipart(jpegs[:6], clip, mine.nonce, _ago(clock, 5)))
    assert r.status_code == 404  # someone else's session


def test_openapi_documents_both_bodies(env):
    client, _, _, _ = env
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/liveness/sessions/{session_id}/frames"]["post"]
    assert {"multipart/form-data", "application/json"} <= set(op["requestBody"]["content"])
    assert "/v1/liveness/sessions" in spec["paths"]
