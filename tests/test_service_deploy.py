"""Deployment settings: believing X-Forwarded-For only from trusted proxies, and a token on
/metrics. Through the real app (TestClient), with the real engine."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from facegate.service import Settings, create_app
from test_service import H, make_keys, settings


def _guesses(client: TestClient, n: int, forwarded_for: str | None) -> list[int]:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return [client.get("/v1/me", headers={**H(f"guess-{i}"), **headers}).status_code for i in range(n)]


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(tmp_path, engine):
    app = create_app(settings(tmp_path, auth_failures_per_min=2, trusted_proxies="10.0.0.0/8"),
                     engine=engine, authenticator=make_keys())
    with TestClient(app, client=("10.1.2.3", 40000)) as proxy:
        # Two clients behind the proxy have their own sign-in throttles.
        assert _guesses(proxy, 3, "203.0.113.7")[-1] == 429
        assert _guesses(proxy, 2, "203.0.113.8") == [401, 401]
    with TestClient(app, client=("198.51.100.9", 40000)) as direct:
        # A client that is not a trusted proxy cannot pick its own address to dodge the throttle.
        assert _guesses(direct, 3, "203.0.113.99")[-1] == 429
        assert _guesses(direct, 1, "203.0.113.100") == [429]


def test_forwarded_for_is_ignored_without_trusted_proxies(tmp_path, engine):
    app = create_app(settings(tmp_path, auth_failures_per_min=2), engine=engine, authenticator=make_keys())
    with TestClient(app, client=("10.1.2.3", 40000)) as c:
        assert _guesses(c, 3, "203.0.113.7")[-1] == 429
        assert _guesses(c, 1, "203.0.113.8") == [429]  # same connecting address, same throttle


def test_trusted_proxies_must_be_addresses():
    with pytest.raises(ValidationError, match="not an IP address or network"):
        Settings(trusted_proxies="10.0.0.1, proxy.example")
    assert Settings(trusted_proxies="10.0.0.1, 192.168.0.0/16, ::1").trusted_proxies


def test_metrics_token(tmp_path, engine):
    app = create_app(settings(tmp_path, metrics_token="scrape-me"), engine=engine, authenticator=make_keys())
    with TestClient(app) as c:
        r = c.get("/metrics")
        assert r.status_code == 401 and r.json()["code"] == "metrics_token_required"
        assert c.get("/metrics", headers=H("wrong")).status_code == 401
        assert c.get("/metrics", headers=H("admin-secret")).status_code == 401  # an API key is not the token
        ok = c.get("/metrics", headers=H("scrape-me"))
        assert ok.status_code == 200 and "facegate_http_requests_total" in ok.text


def test_metrics_open_without_token(tmp_path, engine):
    app = create_app(settings(tmp_path), engine=engine, authenticator=make_keys())
    with TestClient(app) as c:
        assert c.get("/metrics").status_code == 200
