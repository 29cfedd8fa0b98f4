"""Attack: hostile JSON bodies on every route that reads JSON, over HTTP against the real app on
the real gallery. A 2 KB body of nested arrays used to end in a RecursionError and a 500; every
malformed body must now be a 400/422 problem and nothing may be logged as an unhandled error."""

from __future__ import annotations

import base64
import logging

import pytest
from fastapi.testclient import TestClient

from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key
from test_service_gallery import H

DEPTH = 1000
HOSTILE = {
    "nested_arrays": b"[" * DEPTH + b"]" * DEPTH,
    "nested_objects": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
    "nested_in_a_field": (b'{"image":' + b"[" * DEPTH + b"]" * DEPTH
                          + b', "name": ' + b'{"a":' * DEPTH + b"1" + b"}" * DEPTH + b"}"),
    "huge_integer": b'{"image": "x", "name": "n", "threshold": ' + b"9" * 5000 + b"}",
    "float_overflow": b'{"image": "x", "name": "n", "fmr": 1e999}',
    "nan": b'{"image": "x", "name": "n", "fmr": NaN}',
    "infinity": b'{"image": "x", "name": "n", "fmr": -Infinity}',
    "not_utf8": b'{"image": "\xff\xfe", "name": "\xc3"}',
    "lone_surrogate": b'{"image": "\\ud800", "name": "\\udfff"}',
    "truncated": b'{"image": "abc',
    "trailing_garbage": b'{"image": "x"} {"image": "y"}',
    "top_level_scalar": b"123",
}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, engine):
    settings = Settings(data_dir=tmp_path_factory.mktemp("json") / "data", workers=2,
                        rate_limit_per_s=10_000, rate_limit_burst=10_000)
    app = create_app(settings, engine=engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        admin = ensure_admin_key(app.state.service.gallery)
        assert client.post("/v1/collections", headers=H(admin), json={"name": "bank", "purposes": ["kyc"]}).status_code == 201
        session = client.post("/v1/liveness/sessions", headers=H(admin), json={})
        assert session.status_code == 201, session.text
        yield client, admin, session.json()["id"]


def json_routes(client: TestClient, session_id: str) -> list[tuple[str, str]]:
    """Every operation whose OpenAPI request body offers application/json, with its path filled in."""
    fill = {"{collection}": "bank", "{subject}": "s-1", "{session_id}": session_id}
    out = []
    for path, ops in client.get("/openapi.json").json()["paths"].items():
        for method, op in ops.items():
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                for k, v in fill.items():
                    path = path.replace(k, v)
                out.append((method.upper(), path))
    return out


def test_every_json_route_is_covered(svc):
    client, _, session_id = svc
    routes = {p for _, p in json_routes(client, session_id)}
    assert {"/v1/detect", "/v1/verify", "/v1/collections/bank/identify",
            "/v1/collections/bank/subjects/s-1/faces", "/v1/keys"} <= routes
    assert any(p.startswith("/v1/liveness/sessions/") for p in routes)


@pytest.mark.parametrize("shape", sorted(HOSTILE))
def test_hostile_json_is_a_client_error_on_every_route(svc, shape, caplog):
    client, admin, session_id = svc
    caplog.set_level(logging.WARNING, logger="facegate")
    for method, path in json_routes(client, session_id):
        r = client.request(method, path, headers={**H(admin), "Content-Type": "application/json"}, content=HOSTILE[shape])
        assert r.status_code in (400, 422), f"{method} {path}: {r.status_code} {r.text[:200]}"
        assert r.headers["content-type"].startswith("application/problem+json"), path
        assert r.json()["status"] == r.status_code
    unhandled = [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]
    assert not unhandled, [rec.getMessage() for rec in unhandled]


def test_duplicate_keys_take_the_last_value(svc, photos):
    """Duplicate keys are not an attack surface here (nothing inspects the JSON before the
    service); the service reads them like the common parsers do: the last one wins."""
    client, admin, _ = svc
    good = base64.b64encode(photos["obama_1"].read_bytes())
    body = b'{"image": "' + good + b'", "image": "!!!"}'
    r = client.post("/v1/detect", headers={**H(admin), "Content-Type": "application/json"}, content=body)
    assert r.status_code == 400 and r.json()["detail"] == "image is not valid base64", r.text
