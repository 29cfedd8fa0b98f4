"""Attack: framing the console (click-jacking the erase dialog) and caching biometric answers.
The server must send the security headers itself on every response: the console's meta-tag CSP
cannot forbid framing."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key


@pytest.fixture(scope="module")
def svc(tmp_path_factory, engine):
    settings = Settings(data_dir=tmp_path_factory.mktemp("headers") / "data", workers=2,
                        rate_limit_per_s=1000, rate_limit_burst=1000)
    app = create_app(settings, engine=engine)
    with TestClient(app) as client:
        yield client, ensure_admin_key(app.state.service.gallery)


def csp(r) -> dict[str, str]:
    return {d.split()[0]: d.split(" ", 1)[1] if " " in d.strip() else "" for d in
            (part.strip() for part in r.headers["content-security-policy"].split(";")) if d}


def test_every_response_forbids_framing_and_sniffing(svc, photos):
    client, admin = svc
    key = {"Authorization": f"Bearer {admin}"}
    responses = {
        "console": client.get("/"),
        "console asset": client.get("/static/app.js"),
        "docs": client.get("/docs"),
        "openapi": client.get("/openapi.json"),
        "health": client.get("/healthz"),
        "metrics": client.get("/metrics"),
        "api": client.get("/v1/me", headers=key),
        "401": client.get("/v1/me"),
        "404": client.get("/no/such/page"),
        "detect": client.post("/v1/detect", headers=key, files={"image": photos["obama_1"].read_bytes()}),
    }
    for name, r in responses.items():
        assert r.status_code in (200, 401, 404), (name, r.status_code)
        assert r.headers["x-frame-options"] == "DENY", name
        assert csp(r)["frame-ancestors"] == "'none'", name
        assert r.headers["x-content-type-options"] == "nosniff", name
        assert r.headers["referrer-policy"] == "no-referrer", name
        assert "camera=(self)" in r.headers["permissions-policy"] and "microphone=()" in r.headers["permissions-policy"], name
    for name in ("api", "401", "detect", "openapi"):
        assert responses[name].headers["cache-control"] == "no-store", name
        assert csp(responses[name])["default-src"] == "'none'", name


def test_console_policy_lets_the_page_and_its_camera_work(svc):
    client, _ = svc
    policy = csp(client.get("/"))
    assert policy["script-src"] == "'self'" and "'unsafe-inline'" not in policy["style-src"]
    assert "mediastream:" in policy["media-src"] and "blob:" in policy["img-src"]
    assert policy["connect-src"] == "'self'" and policy["object-src"] == "'none'"


def test_docs_inline_script_is_allowed_by_hash_only(svc):
    client, _ = svc
    r = client.get("/docs")
    scripts = re.findall(r"<script>(.*?)</script>", r.text, flags=re.DOTALL)
    assert scripts, "Swagger UI's boot script is inline"
    allowed = csp(r)["script-src"].split()
    for script in scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in allowed
    assert "'unsafe-inline'" not in allowed and "'unsafe-eval'" not in allowed
    for src in re.findall(r'(?:src|href)="([^"]+)"', r.text):
        assert src.startswith("/"), src  # nothing from another origin
        assert client.get(src).status_code == 200, src
