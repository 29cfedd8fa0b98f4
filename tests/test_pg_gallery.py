"""The gallery test suite, run again on PostgreSQL: the same test functions
as tests/test_gallery.py, tests/test_gallery_keys.py and
tests/test_gallery_liveness_required.py — not a copy — collected here with
``$FACEGATE_STORE`` pointing every ``Gallery.open`` at a fresh database of the session's real
server. Tests about SQLite internals (file bytes after secure_delete, PRAGMAs, sqlite3-level
edits of the audit table, two data dirs as two deployments) stay SQLite-only; their PostgreSQL
counterparts are in tests/test_pg.py. A test that fails in both modules fails for a reason
unrelated to the backend."""

from __future__ import annotations

import datetime as dt

import pytest

import pg_support
import test_gallery as base

# The same tests, collected again in this module (fixtures resolve here, so the environment
# fixture below puts them on PostgreSQL).
from test_gallery import (  # noqa: F401
    arcface,
    gallery,
    test_collections_subject_listing_and_collection_delete,
    test_consent_expiry,
    test_duplicate_identity_warning,
    test_enroll_identify_verify_real_photos,
    test_enrolment_needs_consent_and_allowed_purposes,
    test_model_pinning_refuses_another_model,
    test_probe_images_are_not_stored,
    test_purge_retention_and_no_consent_idempotent_and_locked,
    test_quality_gate_reason_codes,
    test_search_needs_a_declared_allowed_purpose,
    test_subject_without_consent_for_purpose_is_never_returned,
    test_withdrawal_takes_effect_immediately,
)
from test_gallery_keys import (  # noqa: F401
    clock,
    keys,
    test_key_events_are_audited_without_secrets,
    test_scopes_and_collections,
    test_wrong_malformed_revoked_and_expired_keys,
)
from test_gallery_liveness_required import (  # noqa: F401
    bare_gallery,
    test_collection_setting_default_create_update_and_audit,
    test_identify_vector_obeys_the_identify_requirement,
    test_migration_from_0004_gives_existing_collections_the_empty_default,
    test_nothing_required_by_default_and_liveness_still_recorded_when_given,
    test_override_and_session_id_must_be_explicit_and_well_formed,
    test_required_operation_refuses_a_bare_image_and_accepts_session_or_override,
)


class _PgRaw:
    """What the SQLite tests do with ``sqlite3.connect(path)``, on the PostgreSQL database:
    ``execute`` with ``?`` parameters, ``with db:`` commits. JSON columns come back as text,
    timestamps as aware datetimes."""

    def __init__(self, url: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        u = make_url(url)
        self.conn = psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database)

    def execute(self, sql: str, params: tuple = ()):
        params = tuple(p if not isinstance(p, str) or not _looks_like_naive_ts(p) else p + "+00" for p in params)
        return self.conn.execute(sql.replace("?", "%s").replace("details FROM", "details::text FROM"), params)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        if exc_type is None:
            self.conn.commit()
        else:
            self.conn.rollback()


def _looks_like_naive_ts(s: str) -> bool:
    try:
        return dt.datetime.fromisoformat(s).tzinfo is None and len(s) >= 19
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    """Overrides test_gallery's fixture of the same name: PostgreSQL instead of SQLite."""
    url = pg_support.fresh_database()
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.setenv("FACEGATE_STORE", url)
    monkeypatch.setattr(base, "raw", lambda g: _PgRaw(url))
    yield
    pg_support.drop_database(url)

