"""Names check: subject ids, collection names and API-key names created before gallery/names.py
that the rule now refuses ('.', '..', '/', control or bidi characters …). No schema change and
no row is renamed or removed (they stay reachable for erasure by their stored name): each one is
logged, and the list is kept in ``meta.legacy_invalid_names`` for ``Gallery.open`` to record in
the audit log (the migration has no audit key).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa
from alembic import op

from facegate.gallery.names import NameKind, legacy_problems

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

log = logging.getLogger("facegate.gallery")
META_KEY = "legacy_invalid_names"  # Gallery.open audits it, then removes it


def upgrade() -> None:
    conn = op.get_bind()
    rows: list[tuple[NameKind, str | None, str]]
    rows = [("collection", None, name) for (name,) in conn.execute(sa.text("SELECT name FROM collections"))]
    rows += [("subject", col, ext) for col, ext in conn.execute(sa.text(
        "SELECT c.name, s.external_id FROM subjects s JOIN collections c ON c.id = s.collection_id"))]
    rows += [("key", None, name) for (name,) in conn.execute(sa.text("SELECT name FROM api_keys"))]
    found = legacy_problems(rows)
    for item in found:
        where = f" in collection {item['collection']!r}" if item.get("collection") else ""
        log.warning("existing %s name %r%s is no longer valid (%s); it stays reachable for erasure by that exact name",
                    item["kind"], item["name"], where, item["problem"])
    if found:
        meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
        conn.execute(sa.delete(meta).where(meta.c.key == META_KEY))
        conn.execute(sa.insert(meta).values(key=META_KEY, value=json.dumps(found[:1000])))


def downgrade() -> None:
    op.execute(f"DELETE FROM meta WHERE key = '{META_KEY}'")
