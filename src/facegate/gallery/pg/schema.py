"""The PostgreSQL-only objects next to the shared tables, and their upgrade from older layouts.

Created by ``PgStore.migrate()`` under the migration advisory lock and versioned in
``meta.pg_schema``:

* ``fg_vector_collections`` — per collection: dimension and rotation key version.
* ``fg_vectors_<collection id>`` — the search copy, one row per template: ``(template_id,
  subject_id, embedding bytea)``, ``embedding`` the rotated vector ``R · v`` as ``dim``
  big-endian float32 (``vectors.py``). Foreign keys to ``templates`` and ``subjects`` with
  ``ON DELETE CASCADE``: an erased subject's rows go in the transaction that erases it.
* ``fg_consents_purpose`` — ``consents (purpose, subject_id)``, used by the subject listing's
  purpose filter (``count_subjects``/``list_subjects``: a rare purpose is found through it
  instead of a scan of every consent).

No extension is needed. Version 3 removed what only the search inside PostgreSQL used, and is
applied to databases of versions 1–2 here: their IVFFlat (and any HNSW) indexes on the search
copies are dropped, the index bookkeeping columns of ``fg_vector_collections`` go, and each
``embedding vector(dim)`` column becomes ``bytea`` in place (pgvector's binary form minus its
4-byte header is exactly the big-endian float32 array). An upgraded database keeps the
``vector`` extension installed; facegate no longer uses it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from .vectors import vec_table

PG_SCHEMA = "3"  # version of the objects below (meta key "pg_schema")
MIGRATE_LOCK_KEY = 4242001  # the same key Store.migrate() uses

DDL = [
    """CREATE TABLE IF NOT EXISTS fg_vector_collections (
        collection_id BIGINT PRIMARY KEY REFERENCES collections(id) ON DELETE CASCADE,
        dim INTEGER NOT NULL,
        rotation_version INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS fg_consents_purpose ON consents (purpose, subject_id)",
]

# Columns of fg_vector_collections that recorded the in-database index (versions 1–2).
RETIRED_COLUMNS = ("index_name", "index_type", "index_lists", "index_rows", "probes", "recall",
                   "built_at", "build_seconds", "tune_seconds")


def vector_table_ddl(collection_id: int) -> list[str]:
    """Statements creating a collection's search copy."""
    t = vec_table(collection_id)
    return [
        f"CREATE TABLE {t} ("
        f" template_id BIGINT PRIMARY KEY REFERENCES templates(id) ON DELETE CASCADE,"
        f" subject_id BIGINT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,"
        f" embedding bytea NOT NULL)",
        # Random floats do not compress: store them inline, never try.
        f"ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE PLAIN",
        f"CREATE INDEX {t}_subject ON {t} (subject_id)",
    ]


def apply(conn: Any) -> None:
    """Bring the PostgreSQL-only objects to :data:`PG_SCHEMA` in the caller's transaction
    (a SQLAlchemy connection holding the migration lock)."""
    for stmt in DDL:
        conn.exec_driver_sql(stmt)
    search_copies = {"t": r"fg\_vectors\_%"}
    for (index,) in conn.execute(text(
        "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_am a ON a.oid = i.relam "
        "WHERE a.amname IN ('ivfflat', 'hnsw') AND t.relname LIKE :t AND t.relnamespace = current_schema()::regnamespace"
    ), search_copies).all():
        conn.exec_driver_sql(f'DROP INDEX "{index}"')
    conn.exec_driver_sql(
        "ALTER TABLE fg_vector_collections " + ", ".join(f"DROP COLUMN IF EXISTS {c}" for c in RETIRED_COLUMNS)
    )
    for (table,) in conn.execute(text(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name LIKE :t AND column_name = 'embedding' AND udt_name = 'vector'"
    ), search_copies).all():
        conn.exec_driver_sql(
            f'ALTER TABLE "{table}" ALTER COLUMN embedding TYPE bytea USING substring(vector_send(embedding) from 5)'
        )
        conn.exec_driver_sql(f'ALTER TABLE "{table}" ALTER COLUMN embedding SET STORAGE PLAIN')
