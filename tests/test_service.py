"""REST service core: problems, auth, limits, detect/verify, operations (real engine, real photos).

Keys come from an in-memory authenticator here; tests/test_service_gallery.py runs the same app
on the real SQLite gallery and its key store.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facegate.clock import ManualClock
from facegate.errors import FacegateError
from facegate.service import Settings, create_app
from facegate.service.auth import StaticKeys
from facegate.service.limits import RateLimiter, TokenBucket, WorkerPool
from facegate.service.observability import JsonFormatter, request_id_var
from facegate.service.problems import PROBLEM_MEDIA_TYPE, problem_response, registry

ADMIN, VERIFY, NOSCOPE = "admin-secret", "verify-secret", "noscope-secret"


def make_keys() -> StaticKeys:
    keys = StaticKeys()
    keys.add(ADMIN, "k-admin", ["admin"], name="admin")
    keys.add(VERIFY, "k-verify", ["verify"], name="verifier")
    keys.add(NOSCOPE, "k-none", [], name="nothing")
    return keys


def settings(tmp_path, **kw) -> Settings:
    base = {"data_dir": tmp_path / "data", "workers": 2, "rate_limit_per_s": 1000, "rate_limit_burst": 1000}
    base.update(kw)
    return Settings(**base)


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def client(tmp_path_factory, engine):
    app = create_app(settings(tmp_path_factory.mktemp("svc")), engine=engine, authenticator=make_keys())
    with TestClient(app) as c:
        yield c


def assert_problem(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    body = r.json()
    assert body["type"] == f"/problems/{code}", body
    assert body["code"] == code and body["status"] == status
    assert body["title"] and body["detail"]
    assert body["request_id"] == r.headers["x-request-id"]
    return body


# --- operations --------------------------------------------------------------------------------


def test_health_ready_openapi_docs(client):
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["engine"]
    spec = client.get("/openapi.json").json()
    assert "/v1/verify" in spec["paths"] and "/v1/detect" in spec["paths"]
    body = spec["paths"]["/v1/verify"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert body["multipart/form-data"]["schema"]["properties"]["image_a"]["format"] == "binary"
    assert {"bearer", "apiKey"} <= set(spec["components"]["securitySchemes"])
    docs = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_console_served_without_external_urls(client):
    index = client.get("/")
    assert index.status_code == 200 and "facegate" in index.text
    for asset in ("/static/app.js", "/static/app.css", "/static/favicon.svg"):
        # The SVG namespace is an identifier, never fetched; any other absolute URL would be.
        text = client.get(asset).text.replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text, asset
    assert "https://" not in index.text and "http://" not in index.text


def test_request_id_echoed_or_generated(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32


def test_metrics_count_requests_and_decisions_without_biometrics(client, photos):
    client.post("/v1/verify", headers=H(VERIFY),
                files={"image_a": photos["obama_1"].open("rb"), "image_b": photos["obama_2"].open("rb")}, data={"purpose": "kyc"})
    text = client.get("/metrics").text
    assert 'facegate_http_requests_total{method="POST",route="/v1/verify",status="200"}' in text
    assert 'facegate_decisions_total{operation="verify",outcome="match"}' in text
    assert "facegate_http_request_duration_seconds_bucket" in text
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert all(f.startswith("facegate_") for f in families)
    assert "subject" not in text and "embedding" not in text


# --- problems ----------------------------------------------------------------------------------


def test_every_error_code_has_a_stable_problem_type():
    reg = registry()
    for code in ("no_face", "ambiguous_face", "too_many_faces", "too_large", "not_an_image", "unsupported_format",
                 "calibration_error", "api_key_required", "invalid_api_key", "scope_missing", "collection_not_found",
                 "consent_required", "rate_limited", "body_too_large", "busy", "timeout", "internal_error"):
        assert code in reg, code
    for code, entry in reg.items():
        assert entry["type"] == f"/problems/{code}"
        module, _, name = entry["exception"].rpartition(".")
        cls = getattr(__import__(module, fromlist=[name]), name)
        exc = cls.__new__(cls)
        FacegateError.__init__(exc, f"test {code}")
        if code == "rate_limited":
            exc.retry_after = 1.0
        r = problem_response(exc, instance="/x", request_id="rid")
        body = json.loads(r.body)
        assert r.status_code == cls.http_status == body["status"]
        assert body["type"] == entry["type"] and body["code"] == code
        assert r.media_type == PROBLEM_MEDIA_TYPE


def test_problem_type_documents_are_served(client):
    listing = client.get("/problems").json()
    assert any(p["code"] == "no_face" for p in listing)
    assert client.get("/problems/no_face").json()["status"] == 422
    assert_problem(client.get("/problems/nope"), 404, "not_found")


def test_unknown_route_and_method(client):
    assert_problem(client.get("/v1/nothing-here", headers=H(VERIFY)), 404, "not_found")
    assert_problem(client.get("/v1/nothing-here"), 401, "api_key_required")  # /v1 asks for the key first
    assert_problem(client.get("/nothing-here"), 404, "not_found")
    assert_problem(client.get("/v1/verify", headers=H(VERIFY)), 405, "method_not_allowed")


# --- auth --------------------------------------------------------------------------------------


def test_detect_requires_a_key(client, photos):
    files = {"image": photos["obama_1"].open("rb")}
    body = assert_problem(client.post("/v1/detect", files=files), 401, "api_key_required")
    assert body["instance"] == "/v1/detect"
    r = client.post("/v1/detect", files={"image": photos["obama_1"].open("rb")}, headers=H("wrong"))
    assert_problem(r, 401, "invalid_api_key")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.post("/v1/detect", files={"image": photos["obama_1"].open("rb")}, headers={"X-API-Key": NOSCOPE})
    assert_problem(r, 403, "scope_missing")


def test_me_and_both_key_headers(client):
    assert client.get("/v1/me", headers=H(VERIFY)).json()["scopes"] == ["verify"]
    assert client.get("/v1/me", headers={"X-API-Key": ADMIN}).json()["collections"] is None
    assert_problem(client.get("/v1/me", headers={"Authorization": "Basic abc"}), 401, "api_key_required")


# --- detect / verify ---------------------------------------------------------------------------


def test_detect_multipart_and_base64(client, photos):
    r = client.post("/v1/detect", headers=H(VERIFY), files={"image": photos["obama_1"].open("rb")})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["count"] == 1 and d["subject"] == 0
    face = d["faces"][0]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5
    assert face["quality_ok"] is True and face["quality_reasons"] == []
    r2 = client.post("/v1/detect", headers=H(VERIFY), json={"image": b64(photos["obama_1"])})
    assert r2.json()["faces"][0]["box"] == face["box"]
    r3 = client.post("/v1/detect", headers=H(VERIFY), json={"image": "data:image/jpeg;base64," + b64(photos["obama_1"])})
    assert r3.status_code == 200


def test_verify_pair_match_and_no_match(client, photos):
    r = client.post("/v1/verify", headers=H(VERIFY),
                    json={"purpose": "kyc", "image_a": b64(photos["obama_1"]), "image_b": b64(photos["obama_3"])})
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["decision"] == "match" and v["match"] is True and v["score"] >= v["threshold"]
    assert v["fmr"] == 1e-4 and v["purpose"] == "kyc" and "score_at_or_above_threshold" in v["reasons"]
    assert set(v["faces"]) == {"image_a", "image_b"}
    r = client.post("/v1/verify", headers=H(VERIFY),
                    files={"image_a": photos["obama_1"].open("rb"), "image_b": photos["biden_1"].open("rb")},
                    data={"purpose": "kyc", "fmr": "0.001"})
    v = r.json()
    assert v["decision"] == "no_match" and v["score"] < v["threshold"] and v["fmr"] == 1e-3


def test_verify_input_errors(client, photos):
    h = H(VERIFY)
    a = b64(photos["obama_1"])
    body = assert_problem(client.post("/v1/verify", headers=h, json={"image_a": a, "image_b": a}), 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "purpose"]
    assert_problem(client.post("/v1/verify", headers=h, json={"purpose": "kyc", "image_a": a}), 422, "validation_error")
    assert_problem(client.post("/v1/verify", headers=h, json={"purpose": "kyc", "image_a": "%%%", "image_b": a}),
                   400, "invalid_request")
    assert_problem(client.post("/v1/verify", headers=h, json={"purpose": "kyc", "image_a": a, "image_b": a, "fmr": 0.3}),
                   400, "calibration_error")
    not_image = base64.b64encode(b"hello, not an image").decode()
    assert_problem(client.post("/v1/verify", headers=h, json={"purpose": "kyc", "image_a": not_image, "image_b": a}),
                   422, "not_an_image")
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 120, 120)).save(blank, "PNG")
    r = client.post("/v1/verify", headers=h, files={"image_a": blank.getvalue(), "image_b": photos["obama_1"].read_bytes()},
                    data={"purpose": "kyc"})
    assert_problem(r, 422, "no_face")
    assert_problem(client.post("/v1/verify", headers={**h, "Content-Type": "text/plain"}, content=b"x"),
                   415, "unsupported_media_type")
    assert_problem(client.post("/v1/verify", headers={**h, "Content-Type": "application/json"}, content=b"{nope"),
                   400, "invalid_request")
    assert_problem(client.post("/v1/verify", headers=h, json={"purpose": "kyc", "image_a": a, "image_b": a, "extra": 1}),
                   422, "validation_error")


def _side_by_side(*paths) -> bytes:
    ims = [Image.open(p).convert("RGB").resize((400, 400)) for p in paths]
    canvas = Image.new("RGB", (400 * len(ims), 400), "white")
    for i, im in enumerate(ims):
        canvas.paste(im, (400 * i, 0))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_ambiguous_photo_is_reported_not_guessed(client, photos):
    two = _side_by_side(photos["obama_1"], photos["obama_1"])  # two equally prominent faces
    d = client.post("/v1/detect", headers=H(VERIFY), files={"image": two}).json()
    assert d["count"] == 2 and d["subject"] is None and d["reasons"] == ["ambiguous_face"]
    r = client.post("/v1/verify", headers=H(VERIFY), files={"image_a": two, "image_b": photos["obama_2"].read_bytes()},
                    data={"purpose": "kyc"})
    assert_problem(r, 422, "ambiguous_face")


# --- limits ------------------------------------------------------------------------------------


def test_pixel_faces_and_body_limits(tmp_path, engine, photos):
    from facegate import FaceEngine

    small_engine = FaceEngine(max_pixels=300_000, max_faces=1)
    app = create_app(settings(tmp_path, max_body_bytes=200_000, max_pixels=300_000, max_faces=1), engine=small_engine,
                     authenticator=make_keys())
    with TestClient(app) as c:
        big = io.BytesIO()
        Image.new("RGB", (800, 600), "white").save(big, "PNG")
        body = assert_problem(c.post("/v1/detect", headers=H(VERIFY), files={"image": big.getvalue()}), 413, "too_large")
        assert body["max_pixels"] == 300_000
        two = _side_by_side(photos["obama_1"], photos["biden_1"])
        small = Image.open(io.BytesIO(two)).resize((600, 300))
        buf = io.BytesIO()
        small.save(buf, "JPEG")
        assert_problem(c.post("/v1/detect", headers=H(VERIFY), files={"image": buf.getvalue()}), 422, "too_many_faces")
        r = c.post("/v1/detect", headers={**H(VERIFY), "Content-Type": "application/json"}, content=b" " * 300_000)
        assert_problem(r, 413, "body_too_large")

        def chunks():  # no Content-Length: the limit applies while streaming
            for _ in range(40):
                yield b" " * 10_000

        r = c.post("/v1/detect", headers={**H(VERIFY), "Content-Type": "application/json"}, content=chunks())
        assert_problem(r, 413, "body_too_large")
        # A route whose body FastAPI parses (it turns any read error into a 400) gets the 413 too.
        r = c.post("/v1/keys", headers={**H(ADMIN), "Content-Type": "application/json"}, content=chunks())
        assert_problem(r, 413, "body_too_large")


def test_rate_limit_per_key(tmp_path, engine):
    clock = ManualClock()  # the bucket refills only when the test says so
    app = create_app(settings(tmp_path, rate_limit_per_s=0.5, rate_limit_burst=3), engine=engine, authenticator=make_keys(),
                     clock=clock)
    with TestClient(app) as c:
        codes = [c.get("/v1/me", headers=H(VERIFY)).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        r = c.get("/v1/me", headers=H(VERIFY))
        assert_problem(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
        assert c.get("/v1/me", headers=H(ADMIN)).status_code == 200  # another key has its own bucket
        assert "facegate_rate_limited_total 3.0" in c.get("/metrics").text
        clock.advance(2.0)  # one token at 0.5 per second
        assert c.get("/v1/me", headers=H(VERIFY)).status_code == 200


def test_failed_sign_ins_are_throttled_per_address(tmp_path, engine):
    app = create_app(settings(tmp_path, auth_failures_per_min=3), engine=engine, authenticator=make_keys(),
                     clock=ManualClock())
    with TestClient(app) as c:
        codes = [c.get("/v1/me", headers=H(f"guess-{i}")).status_code for i in range(5)]
        assert codes[:3] == [401, 401, 401] and 429 in codes[3:]


def test_token_bucket_refills():
    now = [0.0]
    rl = RateLimiter(rate=2, burst=2, clock=lambda: now[0])
    assert rl.check("a") == 0 and rl.check("a") == 0
    assert rl.check("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert rl.check("a") == 0
    b = TokenBucket(1, 1, 0.0)
    assert b.take(0.0) == 0 and b.take(0.0) > 0


class GatedEngine:
    """The real engine, with detection held until the test opens ``gate`` (to test timeouts and
    event-loop freedom without waiting on the wall clock); ``entered`` is set when one starts."""

    GATED = ("detect", "detect_subject")

    def __init__(self, engine) -> None:
        self._engine, self.gate, self.entered = engine, threading.Event(), threading.Event()

    def __getattr__(self, name):
        work = getattr(self._engine, name)
        if name not in self.GATED:
            return work

        def gated(*args, **kwargs):
            self.entered.set()
            assert self.gate.wait(60), "the test never opened the gate"
            return work(*args, **kwargs)

        return gated


def test_slow_work_does_not_stall_the_event_loop(tmp_path, engine, photos):
    gated = GatedEngine(engine)
    app = create_app(settings(tmp_path, workers=2), engine=gated, authenticator=make_keys())

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            probe = photos["obama_1"].read_bytes()
            slow = asyncio.create_task(ac.post("/v1/detect", headers=H(VERIFY), files={"image": probe}))
            assert await asyncio.to_thread(gated.entered.wait, 60)  # the detection is running in a worker
            t0 = time.perf_counter()
            health = await ac.get("/healthz")
            me = await ac.get("/v1/me", headers=H(VERIFY))
            fast = time.perf_counter() - t0
            assert not slow.done()
            gated.gate.set()
            r = await slow
            return health.status_code, me.status_code, fast, r.status_code

    h, m, fast, slow_status = asyncio.run(scenario())
    assert (h, m, slow_status) == (200, 200, 200)
    assert fast < 0.5


def test_request_timeout_returns_504(tmp_path, engine, photos):
    gated = GatedEngine(engine)
    app = create_app(settings(tmp_path, request_timeout_s=0.3, workers=1), engine=gated, authenticator=make_keys())
    with TestClient(app) as c:
        try:
            r = c.post("/v1/detect", headers=H(VERIFY), files={"image": photos["obama_1"].read_bytes()})
        finally:
            gated.gate.set()  # let the worker finish so the app shuts down
        assert_problem(r, 504, "timeout")


def test_worker_pool_queue_bound_and_side_effects():
    async def scenario():
        pool = WorkerPool(workers=1, max_queue=1, timeout=0.2)
        gate = threading.Event()
        first = asyncio.create_task(pool.run(gate.wait, 5, side_effects=True))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(pool.run(lambda: "queued"))
        await asyncio.sleep(0.05)
        with pytest.raises(FacegateError) as busy:
            await pool.run(lambda: "third")
        assert busy.value.code == "busy"
        with pytest.raises(FacegateError) as timeout:  # never started: dropped
            await second
        assert timeout.value.code == "timeout"
        gate.set()
        assert await first is True  # a started write is awaited past the timeout, never half-reported
        pool.shutdown()

    asyncio.run(scenario())


# --- logs --------------------------------------------------------------------------------------


def test_json_log_lines_carry_request_id():
    record = logging.LogRecord("facegate.service", logging.INFO, __file__, 1, "POST %s %s", ("/v1/verify", 200), None)
    record.route, record.status, record.key_id = "/v1/verify", 200, "k1"
    token = request_id_var.set("rid-1")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "POST /v1/verify 200" and line["request_id"] == "rid-1"
    assert line["route"] == "/v1/verify" and line["key_id"] == "k1" and line["level"] == "info"


def test_access_log_has_no_biometric_payload(client, photos, caplog):
    caplog.set_level(logging.INFO, logger="facegate")
    logger = logging.getLogger("facegate")
    old = logger.propagate
    logger.propagate = True
    try:
        client.post("/v1/detect", headers=H(VERIFY), json={"image": b64(photos["obama_1"])})
    finally:
        logger.propagate = old
    records = [r for r in caplog.records if getattr(r, "route", None) == "/v1/detect"]
    assert records and records[-1].status == 200 and records[-1].key_id == "k-verify"
    dumped = JsonFormatter().format(records[-1])
    assert "landmarks" not in dumped and b64(photos["obama_1"])[:40] not in dumped


# --- client ------------------------------------------------------------------------------------


def test_typed_client_maps_problems_to_library_errors(client, photos):
    from facegate.client import Client
    from facegate.errors import NoFaceError
    from facegate.gallery.errors import ScopeMissingError

    fg = Client(http=client, api_key=VERIFY)
    res = fg.verify(photos["obama_1"], photos["obama_2"], purpose="kyc")
    assert res.decision == "match" and res.score >= res.threshold
    assert fg.detect(photos["biden_1"]).count == 1
    blank = io.BytesIO()
    Image.new("RGB", (120, 120), "gray").save(blank, "PNG")
    with pytest.raises(NoFaceError) as err:
        fg.verify(blank.getvalue(), photos["obama_1"], purpose="kyc")
    assert err.value.status == 422 and err.value.problem["type"] == "/problems/no_face"
    with pytest.raises(ScopeMissingError):
        Client(http=client, api_key=NOSCOPE).detect(photos["obama_1"])


def test_wait_ready_stops_early_and_times_out():
    from facegate.client import wait_ready

    def exited() -> None:
        raise RuntimeError("server exited")

    with pytest.raises(RuntimeError, match="server exited"):
        wait_ready("http://127.0.0.1:9", timeout=5, alive=exited)
    with pytest.raises(TimeoutError, match="did not become ready"):
        wait_ready("http://127.0.0.1:9", timeout=0.5, interval=0.1)  # nothing listens on port 9
