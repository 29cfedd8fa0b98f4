"""API-key authentication, scopes and collection grants.

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are stored
hashed by the gallery (``facegate.gallery.keys``); this module only asks it who a key is.

Scopes are the library's (``facegate.gallery.SCOPES``): ``verify``, ``identify``,
``enroll``, ``admin``; ``admin`` implies the others.
Collections: a key is granted a list of collections (or all). A collection the key is not
granted behaves exactly like one that does not exist (404), so keys cannot probe names.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from ..gallery import ADMIN, ApiKey, scope_granted
from ..gallery import SCOPES as SCOPES
from .errors import ApiKeyRequiredError, CollectionNotFoundError, InvalidApiKeyError, ScopeMissingError

ALL = "*"


@dataclass(frozen=True)
class Principal:
    """Who is calling: never holds the secret itself."""

    key_id: str
    name: str = ""
    scopes: frozenset[str] = field(default_factory=frozenset)
    collections: frozenset[str] | None = None  # None: every collection
    actor: str = ""  # what the audit log records for this caller

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.scopes

    def has(self, scope: str) -> bool:
        return scope_granted(self.scopes, scope)

    def sees(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def require(self, *scopes: str) -> None:
        """Any one of ``scopes`` suffices."""
        if not any(self.has(s) for s in scopes):
            raise ScopeMissingError(
                f"this API key lacks the {' or '.join(scopes)} scope", required=list(scopes), granted=sorted(self.scopes)
            )

    def require_collection(self, collection: str) -> None:
        if not self.sees(collection):
            raise collection_not_found(collection)

    def audit_actor(self) -> str:
        return self.actor or f"key:{self.name or self.key_id}"

    def visible(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if self.sees(n)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "collections": None if self.collections is None else sorted(self.collections),
        }


def collection_not_found(name: str) -> CollectionNotFoundError:
    """A collection the key is not granted reads exactly like one that does not exist."""
    return CollectionNotFoundError(f"collection {name!r} not found", collection=name)


def extract_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = request.headers.get("x-api-key")
    if key and key.strip():
        return key.strip()
    return None


def principal_from_key(key: ApiKey) -> Principal:
    """The caller a gallery key record stands for; a key granted ``*`` sees every collection."""
    cols = key.collections
    return Principal(
        key_id=key.prefix,
        name=key.name,
        scopes=frozenset(key.scopes),
        collections=None if cols is None or ALL in cols else frozenset(cols),
        actor=key.actor,
    )


Authenticator = Callable[[str], "Principal | None"]


class StaticKeys:
    """An in-memory authenticator (tests, or embedding the app without the gallery)."""

    def __init__(self) -> None:
        self._keys: dict[str, Principal] = {}

    def add(
        self, secret: str, key_id: str, scopes: Iterable[str], collections: Iterable[str] | None = None, name: str = ""
    ) -> None:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        self._keys[digest] = Principal(key_id, name, frozenset(scopes), None if collections is None else frozenset(collections))

    def __call__(self, secret: str) -> Principal | None:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        for known, principal in self._keys.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None


def unauthenticated(message: str | None = None) -> ApiKeyRequiredError | InvalidApiKeyError:
    if message is None:
        return ApiKeyRequiredError("an API key is required (Authorization: Bearer <key> or X-API-Key)")
    return InvalidApiKeyError(message)
