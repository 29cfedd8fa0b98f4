"""Every route, enumerated from the app itself: without a key it is refused (401), and a key
granted another collection (even an admin one) can neither see nor touch this collection.

A new route that is not classified here fails ``test_every_route_is_classified`` — so no
endpoint can be added without deciding who may call it.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key

# Routes anyone may call: operations, docs and the console's static shell (no data).
PUBLIC = {
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/problems"), ("GET", "/problems/{code}"),
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/"), ("GET", "/console"),
}
# Routes not tied to one collection, and what a key limited to another collection gets.
GLOBAL = {
    ("GET", "/v1/me"): 200,
    ("POST", "/v1/detect"): 422,  # allowed (body invalid here)
    ("POST", "/v1/verify"): 404,  # the body names collection bank, not granted
    ("GET", "/v1/collections"): 200,  # lists only granted collections (checked below)
    ("POST", "/v1/collections"): 403,  # may not create a collection outside its grant
    ("GET", "/v1/audit"): 422,  # must name one of its collections
    ("GET", "/v1/audit/verify"): 403,
    ("POST", "/v1/purge"): 403,
    ("GET", "/v1/keys"): 403,
    ("POST", "/v1/keys"): 403,
    ("DELETE", "/v1/keys/{name}"): 403,
}
PARAMS = {"collection": "bank", "subject": "S-1", "purpose": "kyc", "name": "admin", "code": "no_face", "session_id": "s"}


def fill(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PARAMS.get(m.group(1), "x"), path)


def body_for(method: str, path: str) -> dict:
    if method in ("GET", "DELETE"):
        return {}
    if path == "/v1/collections":
        return {"json": {"name": "bank", "purposes": ["kyc"]}}
    if path == "/v1/verify":
        return {"json": {"purpose": "kyc", "collection": "bank", "subject": "S-1", "image": "aGVsbG8="}}
    return {"json": {}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, engine, photos):
    settings = Settings(data_dir=tmp_path_factory.mktemp("routes"), rate_limit_per_s=1000, rate_limit_burst=1000,
                        auth_failures_per_min=10_000)  # every route is probed without a key
    app = create_app(settings, engine=engine)
    with TestClient(app) as client:
        g = app.state.service.gallery
        admin = ensure_admin_key(g)
        client.post("/v1/collections", headers={"X-API-Key": admin}, json={"name": "bank", "purposes": ["kyc"]})
        client.post("/v1/collections", headers={"X-API-Key": admin}, json={"name": "branch", "purposes": ["kyc"]})
        r = client.post("/v1/collections/bank/subjects/S-1/faces", headers={"X-API-Key": admin},
                        files={"images": photos["obama_1"].open("rb")}, data={"purposes": "kyc"})
        assert r.status_code == 201, r.text
        other = g.keys.create("branch-admin", ["verify", "identify", "enroll", "admin"], ["branch"])[1]
        yield app, client, admin, other


def api_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every endpoint, walking included routers (FastAPI keeps them nested)."""
    out = []

    def walk(routes, prefix: str) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                ctx = getattr(route, "include_context", None)
                walk(inner.routes, prefix + (getattr(ctx, "prefix", "") or ""))
                continue
            methods = getattr(route, "methods", None) or set()
            for m in sorted(methods - {"HEAD", "OPTIONS"}):
                out.append((m, prefix + route.path))

    walk(app.router.routes, "")
    return sorted(set(out))


def test_every_route_is_classified(svc):
    app, *_ = svc
    routes = api_routes(app)
    assert len(routes) > 20
    for method, path in routes:
        assert (method, path) in PUBLIC or (method, path) in GLOBAL or "{collection}" in path or "/v1/liveness" in path, (
            f"unclassified route {method} {path}: decide its auth and add it to this test"
        )


def test_every_non_public_route_refuses_requests_without_a_key(svc):
    app, client, *_ = svc
    checked = 0
    for method, path in api_routes(app):
        if (method, path) in PUBLIC:
            continue
        r = client.request(method, fill(path), **body_for(method, path))
        assert r.status_code == 401, f"{method} {path} -> {r.status_code}"
        assert r.json()["code"] == "api_key_required"
        forged = {"Authorization": "Bearer fg_00000000_" + "A" * 43}
        bad = client.request(method, fill(path), headers=forged, **body_for(method, path))
        assert bad.status_code == 401 and bad.json()["code"] == "invalid_api_key", f"{method} {path}"
        checked += 1
    assert checked >= 20


def test_every_collection_route_refuses_a_key_of_another_collection(svc):
    app, client, admin, other = svc
    checked = 0
    for method, path in api_routes(app):
        if "{collection}" not in path:
            continue
        r = client.request(method, fill(path), headers={"X-API-Key": other}, **body_for(method, path))
        assert r.status_code == 404 and r.json()["code"] == "collection_not_found", f"{method} {path} -> {r.status_code} {r.text}"
        checked += 1
    assert checked >= 10
    # and nothing changed: the subject is still there, with its consent
    s = client.get("/v1/collections/bank/subjects/S-1", headers={"X-API-Key": admin}).json()
    assert s["active_purposes"] == ["kyc"]


def test_global_routes_with_a_key_of_another_collection(svc):
    app, client, admin, other = svc
    for (method, path), expected in GLOBAL.items():
        r = client.request(method, fill(path), headers={"X-API-Key": other}, **body_for(method, path))
        assert r.status_code == expected, f"{method} {path} -> {r.status_code} {r.text}"
    names = [c["name"] for c in client.get("/v1/collections", headers={"X-API-Key": other}).json()["collections"]]
    assert names == ["branch"]
    r = client.post("/v1/verify", headers={"X-API-Key": other},
                    json={"purpose": "kyc", "collection": "bank", "subject": "S-1", "image": "aGVsbG8="})
    assert r.status_code == 404 and r.json()["code"] == "collection_not_found"


def test_public_routes_answer_without_a_key(svc):
    app, client, *_ = svc
    for method, path in PUBLIC:
        r = client.request(method, fill(path))
        assert r.status_code == 200, f"{method} {path}"
