"""Master-key rotation: re-wrap every data key under a new master key, destroy the old one.

Why: erasing a subject deletes its wrapped data key from the live store, but a backup of the
database taken earlier still holds that wrapped key, and the master key opens it. After a
rotation the live store holds only keys wrapped by the new master key and the old master key
no longer exists, so every copy made before the rotation — the erased subject's included — is
unreadable. Erasure is immediate for the live store and complete for backups at the next
rotation.

Files in the data directory (the default key source)::

    master.key          the current key (0600); may be a symlink to another volume, in which
                        case the files below live beside its target and the link stays
    master.key.new      a new key while a rotation runs (0600); never there otherwise
    .master.key.lock    flock(2) held by whoever moves key files (rotation, finishing one)

Protocol (``rotate``), crash-safe at every point because **the database decides which key is
current** (``meta.master_key_id``, committed in the same transaction as the re-wrapped keys):

1. under the lock, finish whatever an interrupted rotation left (below);
2. write the new key to ``master.key.new`` (temporary file, fsync, rename, fsync directory);
3. one transaction, committed durably (fsync even when the store runs ``synchronous=NORMAL``):
   unwrap each subject key and keyring secret with the old key, wrap it with the new one,
   set ``master_key_id`` (and ``master_key_previous_id``), add a change-feed row (other
   processes reload their key before their next decrypt) and an audit event (fingerprints and
   counts only);
4. overwrite ``master.key`` (the old key) in place with zeros and fsync it, then rename
   ``master.key.new`` over it and fsync the directory.

A process killed anywhere leaves one of: (before 3) the database on the old key, which is in
``master.key`` — a leftover ``master.key.new`` was never used and is destroyed by the next
rotation; (after 3) the database on the new key, which is in ``master.key.new`` until step 4
completes and in ``master.key`` after. Opening picks the file whose fingerprint the database
names (``load_for_store``) and, when it is ``master.key.new``, finishes step 4 if no rotation
holds the lock. The old key is never destroyed before the commit that stops it being needed,
and the current key is never overwritten (each file's fingerprint is checked before).

Keys from ``$FACEGATE_MASTER_KEY`` (or ``Gallery.open(master_key=...)``) are not files this code
can replace: the operator generates the new key, passes it (``new_key=`` / ``--new-key-env``),
and after the rotation commits puts it where the old one was and restarts the services that
hold the old one (they report ``master_key_mismatch`` with the new fingerprint meanwhile).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .crypto import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE,
    Crypto,
    _b64decode,
    _check,
    generate_key,
    key_id,
    keyring_context,
    subject_context,
    write_key_tempfile,
)
from .errors import (
    InvalidArgumentError,
    LockedError,
    MasterKeyError,
    MasterKeyMismatchError,
    MasterKeyMissingError,
    TemplateIntegrityError,
)
from .fsync import fsync_dir
from .types import MasterKeyRotation, utcnow

NEW_KEY_FILE = MASTER_KEY_FILE + ".new"
LOCK_FILE = "." + MASTER_KEY_FILE + ".lock"
REWRAP_BATCH = 5000

Step = Callable[[str], None]


def _noop(_name: str) -> None:
    pass


# --- key files --------------------------------------------------------------------------------


def key_paths(data_dir: Path) -> tuple[Path, Path]:
    """(the current key file, where the new one goes). ``master.key`` may be a symlink to
    another volume (so that a copy of the data directory is not a copy of the key): then the
    rotation works beside its target and the link stays."""
    cur = Path(data_dir) / MASTER_KEY_FILE
    if cur.is_symlink():
        cur = cur.resolve()
    return cur, cur.with_name(cur.name + ".new")


def _tmp_glob(directory: Path, cur: Path) -> list[Path]:
    return list(directory.glob(f".{cur.name}.new.*"))


def _read(path: Path) -> bytes | None:
    """The key in ``path``; None if missing or not a key (e.g. overwritten by a rotation).
    MasterKeyError if the file is readable by others (as when opening)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & 0o077:
        raise MasterKeyError(f"{path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it", path=str(path))
    try:
        return _check(_b64decode(path.read_text()), str(path))
    except (FileNotFoundError, MasterKeyError, UnicodeDecodeError, ValueError):
        return None


def load_for_store(data_dir: Path, expected_id: str, *, previous_id: str | None = None, rotated_at: str | None = None,
                   attempts: int = 3) -> tuple[bytes, str]:
    """The data directory's key whose fingerprint is ``expected_id`` (the store's current id)
    and its path: ``master.key``, else ``master.key.new`` (a rotation committed, its rename not
    done yet). Retried briefly: a rotation may be renaming at this moment."""
    cur, new = key_paths(data_dir)
    seen: dict[str, str] = {}
    for attempt in range(attempts):
        for path in (cur, new):
            key = _read(path)
            if key is None:
                continue
            kid = key_id(key)
            if kid == expected_id:
                return key, str(path)
            seen[str(path)] = kid
        if attempt + 1 < attempts:
            time.sleep(0.05)
    if not seen:
        raise MasterKeyMissingError(
            f"this store's templates are encrypted under master key {expected_id}, but no master key was found "
            f"(set ${MASTER_KEY_ENV} or restore {cur})"
        )
    where, kid = next(iter(seen.items()))
    raise MasterKeyMismatchError(mismatch_message(where, kid, expected_id, previous_id, rotated_at))


def mismatch_message(source: str, held: str, expected: str, previous_id: str | None, rotated_at: str | None) -> str:
    msg = f"the master key from {source} (id {held}) is not this store's (id {expected})"
    if previous_id is not None and held == previous_id:
        msg += (f": it is the previous key, retired by the master-key rotation of {rotated_at or 'an earlier run'} — "
                "use the current key (a backup of the database is readable only with the key current when it was taken)")
    return msg


def _shred(path: Path, *, unlink: bool) -> None:
    """Overwrite a key file in place with zeros, fsync, and (``unlink``) remove it. Best effort
    against recovery from the disk: copy-on-write file systems and SSD wear levelling may keep
    old blocks, which is why the key must stay out of backups in the first place."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.write(fd, b"\0" * max(size, 64))
        os.fsync(fd)
    finally:
        os.close(fd)
    if unlink:
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)


def write_new_key(data_dir: Path, key: bytes) -> Path:
    """``master.key.new`` holding ``key`` (0600), complete and on disk when this returns."""
    cur, new = key_paths(data_dir)
    os.replace(write_key_tempfile(new, key), new)
    fsync_dir(cur.parent)
    return new


@contextlib.contextmanager
def key_files_lock(data_dir: Path, *, blocking: bool) -> Iterator[bool]:
    """flock(2) on ``.master.key.lock``; yields False (non-blocking and held elsewhere). Released
    by the kernel if the holder dies, so a killed rotation never leaves it behind."""
    import fcntl

    fd = os.open(Path(data_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def finish(data_dir: Path, current_id: str | None, step: Step = _noop) -> bool:
    """Bring the key files in line with the store's current key id (caller holds the lock).

    * ``master.key.new`` is the current key: the rotation committed. Overwrite the old key in
      ``master.key``, then rename the new one over it.
    * ``master.key.new`` is another key: a rotation died before committing; that key was never
      used. Overwrite and remove it (only if ``master.key`` is the current key).
    * Temporary files of a rotation killed while writing ``master.key.new``: overwritten, removed.

    ``current_id`` None (no key id recorded) makes neither key current: only temporary files go.
    Returns True when an old key was destroyed."""
    cur, new = key_paths(data_dir)
    d = cur.parent
    for tmp in _tmp_glob(d, cur):
        _shred(tmp, unlink=True)
    new_key, cur_key = _read(new), _read(cur)
    cur_is_current = cur_key is not None and key_id(cur_key) == current_id
    if new_key is None:
        if new.exists() and cur_is_current:
            _shred(new, unlink=True)  # an unreadable leftover next to a good current key
        return False
    if key_id(new_key) == current_id:
        destroyed = False
        if cur.exists() and not cur_is_current and not os.path.samefile(cur, new):
            _shred(cur, unlink=False)  # the retired key: gone before the rename replaces the name
            destroyed = True
        step("old_key_overwritten")
        os.replace(new, cur)
        fsync_dir(d)
        step("renamed")
        return destroyed
    if cur_is_current:
        _shred(new, unlink=True)
    return False


def finish_if_free(data_dir: Path, current_id: str) -> bool:
    """``finish`` when no rotation holds the lock (e.g. when opening finds ``master.key.new``
    current); best effort: a read-only data directory just keeps using ``master.key.new``."""
    try:
        with key_files_lock(data_dir, blocking=False) as got:
            if got:
                return finish(data_dir, current_id)
    except OSError:
        pass
    return False


def decode_key(value: bytes | str) -> bytes:
    return _check(_b64decode(value) if isinstance(value, str) else bytes(value), "the new master key")


# --- rotation ---------------------------------------------------------------------------------


def check_rotatable(gallery: Any, new_key: bytes | str | None) -> bool:
    """True if the key lives in the data directory (rotation replaces the file). A key from the
    environment or an argument needs ``new_key``: MasterKeyError with what to do otherwise."""
    crypto: Crypto = gallery.crypto
    file_mode = crypto.reload is not None and gallery.data_dir is not None
    if not file_mode and new_key is None:
        raise MasterKeyError(
            f"the master key comes from {crypto.source or 'the caller'}, which facegate cannot replace: generate a new key "
            "(facegate master-key generate), pass it with --new-key-env VAR (library: new_key=...), then store it "
            f"as ${MASTER_KEY_ENV} wherever the old one was and restart the services using the store"
        )
    if new_key is not None:
        decode_key(new_key)
    return file_mode


def rotate(gallery: Any, *, actor: str, new_key: bytes | str | None = None, step: Step = _noop) -> MasterKeyRotation:
    """See the module docstring; ``Gallery.rotate_master_key`` is the public entry point."""
    crypto: Crypto = gallery.crypto
    store = gallery.store
    # The data directory when the key lives there as a file (rotation replaces it), else None.
    ddir: Path | None = gallery.data_dir if check_rotatable(gallery, new_key) else None
    new = decode_key(new_key) if new_key is not None else generate_key()
    new_id = key_id(new)
    t0 = time.perf_counter()
    lock = key_files_lock(ddir, blocking=False) if ddir is not None else contextlib.nullcontext(True)
    with lock as got:
        if not got:
            raise LockedError("another master-key rotation is running on this data directory; try again later")
        crypto.ensure(_current_id(store))  # another process may have rotated since this one opened
        if new_id == crypto.master_key_id:
            raise InvalidArgumentError("the new master key is the current one")
        if ddir is not None:
            finish(ddir, crypto.master_key_id)  # leftovers of an interrupted rotation
            write_new_key(ddir, new)
            step("new_key_written")
        try:
            old_id, n_subjects, n_keyring, now = _rewrap(gallery, new, actor, step)
        except BaseException:
            if ddir is not None:  # tidy up according to what the store says now (normally: the old key, so
                with contextlib.suppress(Exception):  # the unused new key file is destroyed)
                    finish(ddir, _current_id(store))
            raise
        step("committed")
        destroyed = finish(ddir, new_id, step) if ddir is not None else False
    store.checkpoint()
    gallery.index.sync()
    return MasterKeyRotation(
        old_key_id=old_id, new_key_id=new_id, subjects=n_subjects, keyring_entries=n_keyring,
        key_file=str(ddir / MASTER_KEY_FILE) if ddir is not None else None, old_key_destroyed=destroyed,
        seconds=round(time.perf_counter() - t0, 3), at=now,
    )


def _current_id(store: Any) -> str | None:
    with store.read() as tx:
        return tx.get_meta("master_key_id")


def _rewrap(gallery: Any, new_key: bytes, actor: str, step: Step) -> tuple[str, int, int, Any]:
    """The one transaction: every subject key and keyring secret re-wrapped, the new id recorded.

    This process's key is swapped at the end of the transaction and ``crypto.lock`` is held
    from the swap through the commit (taken after the write lock, the order enrolment uses), so
    no thread of this process unwraps with a key that does not match the snapshot it read."""
    crypto: Crypto = gallery.crypto
    new = Crypto(new_key)
    now = utcnow()
    saved = None
    locked = False
    try:
        with gallery.store.durable_write() as tx:
            # The write lock is held: the store's key cannot change before this commits, so
            # this process's key is the current one from here on (no other thread swaps it).
            crypto.ensure(tx.get_meta("master_key_id"))
            old_id = crypto.master_key_id
            names = {c.id: c.name for c in tx.collections()}
            n, last = 0, 0
            while True:
                rows = tx.subject_keys(last, REWRAP_BATCH)
                if not rows:
                    break
                out = []
                for r in rows:
                    ctx = subject_context(r.collection_id, r.external_id)
                    try:
                        dek = crypto.unwrap_with_current(r.wrapped_key, ctx)
                    except TemplateIntegrityError:
                        raise TemplateIntegrityError(
                            f"subject {r.external_id!r} in collection {names.get(r.collection_id, r.collection_id)!r}: "
                            f"its data key "
                            f"fails authentication under the current master key {old_id}; nothing was changed. Erase the "
                            "subject (its templates are unreadable anyway), then rotate again",
                            collection=names.get(r.collection_id),
                            subject=r.external_id,
                        ) from None
                    out.append((r.id, new.wrap(dek, ctx), new.master_key_id))
                tx.set_wrapped_keys(out)
                n += len(rows)
                last = rows[-1].id
                step("rewrapped_batch")
            entries = tx.keyring_entries()
            for e in entries:
                ctx = keyring_context(e.name)
                try:
                    secret = crypto.unwrap_with_current(e.wrapped, ctx)
                except TemplateIntegrityError:
                    raise TemplateIntegrityError(
                        f"keyring entry {e.name!r} fails authentication under the current master key {old_id}; "
                        "nothing was changed",
                        entry=e.name,
                    ) from None
                tx.set_keyring_wrapped(e.name, new.master_key_id, new.wrap(secret, ctx))
            tx.set_meta("master_key_id", new.master_key_id)
            tx.set_meta("master_key_previous_id", old_id)
            tx.set_meta("master_key_rotated_at", now.isoformat())
            tx.add_change(0, None, "master_key", now)  # collection 0: no index applies it; it moves max(seq)
            gallery.audit.append(
                tx,
                actor=actor,
                action="master_key.rotate",
                now=now,
                decision="rotated",
                details={
                    "old_key_id": old_id,
                    "new_key_id": new.master_key_id,
                    "subjects": n,
                    "keyring_entries": len(entries),
                    "key_source": "data_dir" if crypto.reload else "caller",
                },
            )
            step("before_commit")
            crypto.lock.acquire()  # no snapshot-based unwrap runs from the swap until after the commit
            locked = True
            saved = crypto._state
            crypto.replace(new_key)
        saved = None  # committed
    except BaseException:
        if saved is not None:
            crypto._state = saved  # the commit failed: the store is still on the old key
        raise
    finally:
        if locked:
            crypto.lock.release()
    return old_id, n, len(entries), now


def status(gallery: Any) -> dict[str, Any]:
    """Current and previous key ids, when the last rotation ran, where this process's key came
    from, how many subject keys each master key id wraps (all under the current one after a
    rotation), and leftovers of an interrupted rotation in the data directory."""
    with gallery.store.read() as tx:
        out: dict[str, Any] = {
            "key_id": tx.get_meta("master_key_id"),
            "previous_key_id": tx.get_meta("master_key_previous_id"),
            "rotated_at": tx.get_meta("master_key_rotated_at"),
            "created_at": tx.get_meta("created_at"),
        }
        out["subject_keys_by_master_key"] = tx.count_subject_keys_by_master()
        out["keyring_entries"] = len(tx.keyring_entries())
    out["source"] = gallery.crypto.source
    out["held_key_id"] = gallery.crypto.master_key_id
    ddir = gallery.data_dir
    if ddir is not None and gallery.crypto.reload is not None:
        d = Path(ddir)
        cur, new = key_paths(d)
        out["key_file"] = str(d / MASTER_KEY_FILE) + (f" -> {cur}" if cur != d / MASTER_KEY_FILE else "")
        out["interrupted_rotation_files"] = sorted(str(p) for p in [new, *_tmp_glob(cur.parent, cur)] if p.exists())
    return out
