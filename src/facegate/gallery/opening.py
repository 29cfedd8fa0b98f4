"""Opening a gallery's database and master key: where they are found, migrating the schema,
and checking the key against the one the store was created with."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path

from sqlalchemy.engine import make_url

from ..clock import SYSTEM, Clock
from ..extras import require_postgres
from . import master_key as master_key_files
from .audit import AuditLog
from .crypto import MASTER_KEY_ENV, Crypto, generate_key, load_master_key
from .errors import MasterKeyMismatchError, MasterKeyMissingError
from .ports import TemplateStore
from .store import Store, default_data_dir, sqlite_url

LEGACY_NAMES_META = "legacy_invalid_names"  # written by migration 0006


def open_database(data_dir: str | Path | None = None, *, store: str | None = None,
                  durability: str = "normal") -> tuple[Store, Path]:
    """The gallery database, opened and migrated, and its data directory (where the master key
    and the audit witness live), found as ``Gallery.open`` finds them: ``store`` (default
    $FACEGATE_STORE, else sqlite:///<data_dir>/gallery.db); ``data_dir`` (default
    $FACEGATE_DATA_DIR, else the SQLite file's directory, else ./.facegate). ``data_dir`` may
    also be the URL itself."""
    if isinstance(data_dir, str) and ("://" in data_dir or data_dir == "embedded-postgres"):
        store, data_dir = store or data_dir, None
    url = store or os.environ.get("FACEGATE_STORE") or os.environ.get("FACEGATE_DATABASE_URL") or None
    if data_dir is not None:
        ddir = Path(data_dir)
    elif url is not None and url.startswith("sqlite") and "FACEGATE_DATA_DIR" not in os.environ:
        db = make_url(url).database
        ddir = Path(db).resolve().parent if db and db != ":memory:" else default_data_dir()  # key beside the file
    else:
        ddir = default_data_dir()
    if url is None or url.startswith("sqlite"):
        ddir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if url is not None and not url.startswith("sqlite"):
        from .pg import EMBEDDED, open_store  # "postgresql://…" or "embedded-postgres"

        require_postgres(embedded=url == EMBEDDED)
        st = open_store(url, data_dir=ddir, durability=durability)
    else:
        st = Store(url or sqlite_url(ddir), durability=durability)
    try:
        st.migrate()
    except BaseException:
        st.close()
        raise
    return st, ddir


def open_master_key(st: TemplateStore, ddir: Path, master_key: bytes | str | None = None, *,
                    clock: Clock = SYSTEM) -> Crypto:
    """The store's current master key (``master_key``, else $FACEGATE_MASTER_KEY, else
    ``<ddir>/master.key``, created for a new store, checked against the store's key id), as a
    ``Crypto`` whose ``latest_id`` reads the key id now on record, so that it follows a rotation
    made by another process."""
    crypto = _master(st, ddir, master_key, clock.now())
    crypto.latest_id = lambda: master_key_files._current_id(st)
    return crypto


def _master(st: TemplateStore, ddir: Path, master_key: bytes | str | None, now: dt.datetime) -> Crypto:
    with st.read() as tx:
        known = tx.get_meta("master_key_id")
        previous, rotated_at = tx.get_meta("master_key_previous_id"), tx.get_meta("master_key_rotated_at")
    from_file = master_key is None and not os.environ.get(MASTER_KEY_ENV)
    reload = (lambda kid: master_key_files.load_for_store(ddir, kid)[0]) if from_file else None
    if known is None:
        loaded = load_master_key(ddir, explicit=master_key, create=True)
        assert loaded is not None
        crypto = Crypto(loaded[0], source=loaded[1], reload=reload)
        with st.write() as tx:
            known = tx.get_meta("master_key_id")
            if known is None:
                tx.set_meta("master_key_id", crypto.master_key_id)
                tx.set_meta("created_at", now.isoformat())
                tx.set_meta("deployment_id", uuid.uuid4().hex)
                tx.put_keyring("audit-mac", crypto.master_key_id, crypto.wrap(generate_key(), b"keyring|audit-mac"), now)
                return crypto
    if from_file:  # master.key, or master.key.new after a rotation killed before its rename
        key, path = master_key_files.load_for_store(ddir, known, previous_id=previous, rotated_at=rotated_at)
        if path.endswith(master_key_files.NEW_KEY_FILE):
            master_key_files.finish_if_free(ddir, known)
        return Crypto(key, source=str(ddir / "master.key"), reload=reload)
    loaded = load_master_key(ddir, explicit=master_key, create=False)
    if loaded is None:
        raise MasterKeyMissingError(
            f"this store's templates are encrypted under master key {known}, but no master key was found "
            f"(set $FACEGATE_MASTER_KEY or restore {ddir / 'master.key'})"
        )
    crypto = Crypto(loaded[0], source=loaded[1])
    if crypto.master_key_id != known:
        raise MasterKeyMismatchError(
            master_key_files.mismatch_message(loaded[1], crypto.master_key_id, known, previous, rotated_at)
        )
    return crypto


def audit_legacy_names(st: TemplateStore, audit: AuditLog, now: dt.datetime) -> None:
    """Record once in the audit log the names migration 0006 found invalid (kept for erasure)."""
    with st.read() as tx:  # the common case: nothing to record, no write lock taken
        if tx.get_meta(LEGACY_NAMES_META) is None:
            return
    with st.write() as tx:
        found = tx.get_meta(LEGACY_NAMES_META)
        if found is None:
            return
        items = json.loads(found)
        audit.append(tx, actor="migration", action="store.names_check", now=now, decision="invalid_names_kept",
                     subjects=[i["name"] for i in items if i["kind"] == "subject"][:100],
                     details={"count": len(items), "names": items[:100]})
        tx.delete_meta(LEGACY_NAMES_META)
