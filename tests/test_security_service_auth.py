"""Attack: guessing API keys. Well-formed ``fg_<prefix>_<secret>`` guesses against the real
gallery-backed key store must hit the per-address sign-in throttle (they used to get 401 forever,
because the store raises instead of returning None)."""

from __future__ import annotations

import secrets

import pytest
from fastapi.testclient import TestClient

from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key
from test_service_gallery import H, problem

LIMIT = 30  # failed sign-ins per address per minute


def guess(prefix: str | None = None) -> str:
    """A key in the store's own format; with ``prefix``, one of a real key (wrong secret)."""
    return f"fg_{prefix or secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


@pytest.fixture
def keyed(tmp_path, engine):
    """The real app on the real embedded gallery, its key store, and a fake clock for the throttle."""
    settings = Settings(data_dir=tmp_path / "data", workers=2, auth_failures_per_min=LIMIT,
                        rate_limit_per_s=1000, rate_limit_burst=1000, trusted_proxies="10.0.0.0/8")
    app = create_app(settings, engine=engine)
    now = [1000.0]
    app.state.service.auth_failures.clock = lambda: now[0]
    with TestClient(app, client=("198.51.100.9", 40000)) as attacker:
        gallery = app.state.service.gallery
        admin = ensure_admin_key(gallery)
        verifier = gallery.keys.create("verifier", ["verify"], None)[1]
        yield app, attacker, {"admin": admin, "verify": verifier}, now


def test_well_formed_wrong_keys_are_throttled(keyed):
    app, attacker, keys, now = keyed
    real_prefix = keys["verify"].split("_")[1]
    guesses = [guess(real_prefix if i % 2 else None) for i in range(320)]
    codes = [attacker.get("/v1/me", headers=H(g)).status_code for g in guesses]
    assert codes[:LIMIT] == [401] * LIMIT
    assert set(codes[LIMIT:]) == {429}, codes[LIMIT:LIMIT + 5]

    r = attacker.get("/v1/me", headers=H(guess()))
    body = problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 60 and body["retry_after_s"] > 0

    # Another address is unaffected, and a correct key from it works.
    bystander = TestClient(app, client=("203.0.113.20", 40000))
    assert bystander.get("/v1/me", headers=H(keys["verify"])).status_code == 200
    # The throttled address is refused even with a correct key: a different answer for a right
    # guess would make the throttle an oracle.
    problem(attacker.get("/v1/me", headers=H(keys["admin"])), 429, "rate_limited")
    # Once the bucket refills, a correct key from that address works again.
    now[0] += 60
    assert attacker.get("/v1/me", headers=H(keys["admin"])).status_code == 200


@pytest.mark.parametrize("where", ["bearer", "x-api-key"])
def test_throttle_counts_every_route_and_header(keyed, where):
    _, attacker, _, _ = keyed
    def send(i: int):
        headers = H(guess()) if where == "bearer" else {"X-API-Key": guess()}
        if i % 2:
            return attacker.post("/v1/detect", headers={**headers, "Content-Type": "application/json"}, content=b"{}")
        return attacker.get("/v1/collections", headers=headers)
    codes = [send(i).status_code for i in range(LIMIT + 3)]
    assert codes[:LIMIT] == [401] * LIMIT and codes[LIMIT:] == [429] * 3


def test_revoked_key_counts_as_a_failed_sign_in(keyed):
    app, attacker, keys, _ = keyed
    gallery = app.state.service.gallery
    record, secret = gallery.keys.create("leaked", ["verify"], None)
    gallery.keys.revoke(record.prefix)
    codes = [attacker.get("/v1/me", headers=H(secret)).status_code for _ in range(LIMIT + 1)]
    assert codes[:LIMIT] == [401] * LIMIT and codes[LIMIT] == 429


def test_throttle_is_per_client_behind_a_trusted_proxy(keyed):
    app, _, keys, _ = keyed
    proxy = TestClient(app, client=("10.0.0.5", 40000))
    fwd = {"X-Forwarded-For": "192.0.2.66"}
    codes = [proxy.get("/v1/me", headers={**H(guess()), **fwd}).status_code for _ in range(LIMIT + 1)]
    assert codes[-1] == 429
    # Another client behind the same proxy keeps its own count.
    r = proxy.get("/v1/me", headers={**H(keys["verify"]), "X-Forwarded-For": "192.0.2.67"})
    assert r.status_code == 200
