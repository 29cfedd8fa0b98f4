"""API keys for the REST service, stored in the gallery database.

Usage (the service holds one ``Gallery``; ``gallery.keys`` is an :class:`ApiKeys`)::

    record, secret = gallery.keys.create("kiosk-1", scopes=["verify"], collections=["staff"])
    print(secret)                      # fg_3f9a1c2b_…  shown once, never stored
    key = gallery.keys.authenticate(secret)   # -> ApiKey, or raises:
        # InvalidApiKeyError (malformed / unknown / wrong secret, 401)
        # RevokedApiKeyError (401), ExpiredApiKeyError (401)
    key.require("verify", "staff")     # ScopeMissingError / CollectionForbiddenError (403)
    gallery.verify("staff", "E123", img, purpose="access", actor=key.actor)
    gallery.keys.list(); gallery.keys.revoke("kiosk-1")

Scopes: ``verify``, ``identify``, ``enroll``, ``admin`` (admin implies the other three).
``collections=None`` grants every collection, present and future.

Storage: the secret is ``fg_<prefix>_<32 random bytes, base64url>``; the table keeps the public
prefix (for lookup and for logs) and ``sha256(secret)``. A 256-bit random secret needs no slow
password hash: there is nothing to brute-force. Comparison is ``hmac.compare_digest``; an
unknown prefix still performs one comparison so timing does not reveal which prefixes exist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from ..clock import SYSTEM, Clock
from .audit import AuditLog
from .errors import (
    ApiKeyExistsError,
    ApiKeyNotFoundError,
    ExpiredApiKeyError,
    InvalidApiKeyError,
    InvalidArgumentError,
    RevokedApiKeyError,
    StoreUnavailableError,
)
from .names import check_name
from .store import Store
from .transaction import DuplicateRow
from .types import SCOPES, ApiKey

SECRET_RE = re.compile(r"^fg_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
LAST_USED_EVERY = dt.timedelta(seconds=60)
_DUMMY = hashlib.sha256(b"facegate-dummy").hexdigest()

__all__ = ["SCOPES", "ApiKey", "ApiKeys", "hash_secret"]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _record(row) -> ApiKey:  # noqa: ANN001
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=tuple(row.scopes),
        collections=None if row.collections is None else tuple(row.collections),
        created_at=row.created_at,
        created_by=row.created_by,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        expires_at=row.expires_at,
    )


class ApiKeys:
    """Create, list, revoke and authenticate API keys. Thread-safe."""

    def __init__(self, store: Store, audit: AuditLog, *, clock: Clock = SYSTEM) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock  # key expiry and the last-used throttle

    def create(
        self,
        name: str,
        scopes: Iterable[str],
        collections: Iterable[str] | None = None,
        *,
        expires_at: dt.datetime | None = None,
        actor: str = "library",
    ) -> tuple[ApiKey, str]:
        """A new key and its secret. The secret is returned only here: store it now."""
        name = check_name("key", name)
        scopes = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise InvalidArgumentError(
                f"scopes must be a non-empty subset of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}"
            )
        cols = None if collections is None else sorted(set(collections))
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidArgumentError("expires_at must be timezone-aware")
        now = self._clock.now()
        for _attempt in range(5):
            prefix = secrets.token_hex(4)
            secret = f"fg_{prefix}_{secrets.token_urlsafe(32)}"
            try:
                with self._store.write() as tx:
                    if tx.api_key_by_name(name) is not None:
                        raise ApiKeyExistsError(f"an API key named {name!r} already exists", name=name)
                    if tx.api_key_by_prefix(prefix) is not None:
                        continue
                    tx.insert_api_key(
                        name=name,
                        prefix=prefix,
                        secret_sha256=hash_secret(secret),
                        scopes=list(scopes),
                        collections=cols,
                        created_at=now,
                        created_by=actor,
                        expires_at=expires_at,
                    )
                    self._audit.append(
                        tx,
                        actor=actor,
                        action="key.create",
                        now=now,
                        details={"name": name, "prefix": prefix, "scopes": list(scopes), "collections": cols},
                    )
                    row = tx.api_key_by_prefix(prefix)
                return _record(row), secret
            except DuplicateRow:
                raise ApiKeyExistsError(f"an API key named {name!r} already exists", name=name) from None
        raise InvalidArgumentError("could not allocate a unique key prefix")  # pragma: no cover

    def list(self, include_revoked: bool = False) -> list[ApiKey]:
        with self._store.read() as tx:
            return [_record(r) for r in tx.api_keys(include_revoked)]

    def get(self, name_or_prefix: str) -> ApiKey:
        with self._store.read() as tx:
            row = tx.api_key_by_name(name_or_prefix) or tx.api_key_by_prefix(name_or_prefix)
        if row is None:
            raise ApiKeyNotFoundError(f"no API key named {name_or_prefix!r}", key=name_or_prefix)
        return _record(row)

    def revoke(self, name_or_prefix: str, *, actor: str = "library") -> ApiKey:
        """Revoke a key (idempotent). Effective for the very next ``authenticate``."""
        now = self._clock.now()
        with self._store.write() as tx:
            row = tx.api_key_by_name(name_or_prefix) or tx.api_key_by_prefix(name_or_prefix)
            if row is None:
                raise ApiKeyNotFoundError(f"no API key named {name_or_prefix!r}", key=name_or_prefix)
            if row.revoked_at is None:
                tx.update_api_key(row.id, revoked_at=now)
                self._audit.append(
                    tx, actor=actor, action="key.revoke", now=now, details={"name": row.name, "prefix": row.prefix}
                )
            row = tx.api_key_by_prefix(row.prefix)
        return _record(row)

    def authenticate(self, secret: str) -> ApiKey:
        """The key's record if ``secret`` is valid, active and unexpired; else a specific AuthError."""
        m = SECRET_RE.match(secret.strip() if isinstance(secret, str) else "")
        if m is None:
            hmac.compare_digest(_DUMMY, _DUMMY)
            raise InvalidApiKeyError("invalid API key")
        with self._store.read() as tx:
            row = tx.api_key_by_prefix(m.group(1))
        stored = row.secret_sha256 if row is not None else _DUMMY
        if not hmac.compare_digest(hash_secret(secret.strip()), stored) or row is None:
            raise InvalidApiKeyError("invalid API key")
        now = self._clock.now()
        if row.revoked_at is not None:
            raise RevokedApiKeyError(f"API key {row.name!r} was revoked", name=row.name)
        if row.expires_at is not None and row.expires_at <= now:
            raise ExpiredApiKeyError(f"API key {row.name!r} expired", name=row.name)
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
            try:
                with self._store.write() as tx:
                    tx.update_api_key(row.id, last_used_at=now)
            except StoreUnavailableError:
                pass  # bookkeeping only; never fail a request for it
        return _record(row)
