"""API keys stored in the gallery database: hashed, shown once, scoped, revocable."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from facegate.clock import ManualClock
from facegate.gallery import (
    ApiKeyExistsError,
    ApiKeyNotFoundError,
    CollectionForbiddenError,
    ExpiredApiKeyError,
    Gallery,
    InvalidApiKeyError,
    InvalidArgumentError,
    RevokedApiKeyError,
    ScopeMissingError,
)

UTC = dt.UTC


@pytest.fixture
def clock():
    return ManualClock(dt.datetime.now(UTC))


@pytest.fixture
def keys(tmp_path, monkeypatch, clock):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    g = Gallery.open(tmp_path / "d", clock=clock)
    yield g.keys
    g.close()


def test_create_authenticate_and_store_only_a_hash(keys, tmp_path):
    record, secret = keys.create("kiosk-1", ["verify", "identify"], ["staff"], actor="cli:alice")
    assert secret.startswith(f"fg_{record.prefix}_") and len(secret) == 3 + 8 + 1 + 43
    assert record.scopes == ("verify", "identify") and record.collections == ("staff",) and record.created_by == "cli:alice"
    got = keys.authenticate(secret)
    assert got.id == record.id and got.actor == f"key:kiosk-1({record.prefix})"
    db = sqlite3.connect(tmp_path / "d" / "gallery.db")
    blob = b"".join(p.read_bytes() for p in (tmp_path / "d").glob("gallery.db*"))
    random_part = secret[len(f"fg_{record.prefix}_"):]  # whole: base64url may itself contain "_"
    assert secret.encode() not in blob and random_part.encode() not in blob
    assert db.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 1
    assert keys.get("kiosk-1").last_used_at is not None  # recorded (at most once a minute)


def test_wrong_malformed_revoked_and_expired_keys(keys, clock):
    record, secret = keys.create("svc", ["identify"])
    for bad in ("", "garbage", secret[:-1] + ("A" if secret[-1] != "A" else "B"), f"fg_00000000_{'x' * 43}", secret + "x"):
        with pytest.raises(InvalidApiKeyError):
            keys.authenticate(bad)
    keys.revoke("svc")
    with pytest.raises(RevokedApiKeyError) as exc:
        keys.authenticate(secret)
    assert exc.value.code == "api_key_revoked" and exc.value.http_status == 401
    assert keys.revoke(record.prefix).revoked_at is not None  # idempotent, by prefix too
    assert keys.list() == [] and len(keys.list(include_revoked=True)) == 1

    _, old = keys.create("temp", ["verify"], expires_at=clock.now() + dt.timedelta(milliseconds=300))
    keys.authenticate(old)
    clock.advance(0.4)
    with pytest.raises(ExpiredApiKeyError):
        keys.authenticate(old)


def test_scopes_and_collections(keys):
    rec, _ = keys.create("door", ["verify"], ["lobby"])
    rec.require("verify", "lobby")
    with pytest.raises(ScopeMissingError):
        rec.require("identify", "lobby")
    with pytest.raises(CollectionForbiddenError):
        rec.require("verify", "vault")
    admin, _ = keys.create("root", ["admin"])
    assert admin.allows("enroll", "anything") and admin.allows("identify") and admin.collections is None
    with pytest.raises(InvalidArgumentError):
        keys.create("bad", ["read"])
    with pytest.raises(InvalidArgumentError):
        keys.create("bad", [])
    with pytest.raises(ApiKeyExistsError):
        keys.create("door", ["verify"])
    with pytest.raises(ApiKeyNotFoundError):
        keys.revoke("nobody")


def test_key_events_are_audited_without_secrets(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    g = Gallery.open(tmp_path / "d")
    _, secret = g.keys.create("a", ["verify"], actor="cli:bob")
    g.keys.revoke("a", actor="cli:bob")
    events = g.audit_list(action="key")
    assert [e.action for e in events] == ["key.revoke", "key.create"]
    assert all(secret not in str(e.to_dict()) for e in events)
    assert g.audit_verify().ok
    g.close()
