"""Template protection: AES-256-GCM under per-subject data keys wrapped by a master key.

Key hierarchy::

    master key (32 B)  — outside the database: $FACEGATE_MASTER_KEY (base64) or
    │                    <data_dir>/master.key (created 0600 on first open)
    ├── subject data key (32 B random, one per subject)   subjects.wrapped_key
    │     └── template ciphertexts                        templates.ciphertext
    └── audit MAC key (32 B random)                       keyring["audit-mac"]

Every ciphertext is bound by associated data to where it belongs (collection, subject, model),
so rows cannot be swapped between subjects without failing authentication. Erasing a subject
deletes its wrapped data key; without it the template ciphertexts (in this database or copied
elsewhere) cannot be decrypted, even with the master key. A copy that also holds the wrapped
key (a backup taken before the erasure) becomes unreadable when the master key is rotated
(master_key.py: every data key re-wrapped under a new master key, the old one destroyed).

Unlinkability across deployments: each deployment has its own random master key and each
subject its own random data key with random nonces, so two deployments' stored templates of the
same face are independent-looking ciphertexts; comparing stolen tables reveals nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .errors import MasterKeyError, TemplateIntegrityError

MASTER_KEY_ENV = "FACEGATE_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
NONCE_BYTES = 12
KEY_BYTES = 32


def _b64decode(text: str) -> bytes:
    text = text.strip()
    pad = "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(text + pad)
    except Exception:
        try:
            return base64.b64decode(text + pad)
        except Exception as exc:  # noqa: BLE001
            raise MasterKeyError("master key is not valid base64") from exc


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_id(master: bytes) -> str:
    """Public fingerprint of a master key (stored to detect a wrong key; reveals nothing)."""
    return hmac.new(master, b"facegate/master-key-id/v1", hashlib.sha256).hexdigest()[:16]


def load_master_key(data_dir: Path | None, *, explicit: bytes | str | None = None, create: bool) -> tuple[bytes, str] | None:
    """The master key and where it came from, or None when absent and ``create`` is False.

    Order: explicit argument, $FACEGATE_MASTER_KEY, <data_dir>/master.key. When creating, the
    file is written atomically with mode 0600 and never overwritten (two processes racing on a
    fresh data dir end up with the same key).
    """
    if explicit is not None:
        key = _b64decode(explicit) if isinstance(explicit, str) else bytes(explicit)
        return _check(key, "argument"), "argument"
    env = os.environ.get(MASTER_KEY_ENV)
    if env:
        return _check(_b64decode(env), MASTER_KEY_ENV), f"${MASTER_KEY_ENV}"
    if data_dir is None:
        if create:
            raise MasterKeyError(f"no master key: set ${MASTER_KEY_ENV} or give a data directory")
        return None
    path = Path(data_dir) / MASTER_KEY_FILE
    if path.exists():
        return _read_key_file(path), str(path)
    if not create:
        return None
    tmp = write_key_tempfile(path, generate_key())
    try:
        os.link(tmp, path)  # atomic, fails if another process created it first
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _read_key_file(path), str(path)


def write_key_tempfile(target: Path, key: bytes) -> Path:
    """A new hidden file beside ``target`` holding ``key`` (mode 0600 from creation, fsynced);
    the caller moves it into place (link or rename) and removes it."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (encode_key(key) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _read_key_file(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise MasterKeyError(f"{path} is readable by others (mode {mode:o}); chmod 600 it", path=str(path))
    return _check(_b64decode(path.read_text()), str(path))


def _check(key: bytes, source: str) -> bytes:
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"master key from {source} must be {KEY_BYTES} bytes (base64), got {len(key)}")
    return key


class Crypto:
    """Wrap/unwrap data keys and encrypt/decrypt templates. Thread-safe (stateless AESGCM).

    The master key can be replaced in place (:meth:`replace`, after a rotation): every holder of
    this object (the gallery, its index, a backend store) sees the new key at once. ``lock`` is
    held by code that unwraps rows read in one snapshot, so that the key is not swapped under
    it; :meth:`ensure` brings the key in line with the id a snapshot says is current, reloading
    it through ``reload`` (set for keys read from the data directory; None for keys given in the
    environment or as an argument, which a running process cannot re-read). ``latest_id`` (set by
    the gallery) reads the store's current id: an unwrap that fails authentication checks it once,
    so a path that did not call ``ensure`` still follows a rotation made by another process.
    """

    def __init__(self, master: bytes, *, source: str | None = None,
                 reload: Callable[[str], bytes] | None = None) -> None:
        self._state = (AESGCM(master), key_id(master), _derive_prk(master))
        self.source = source
        self.reload = reload
        self.latest_id: Callable[[], str | None] | None = None
        self.lock = threading.RLock()

    @property
    def master_key_id(self) -> str:
        return self._state[1]

    def replace(self, master: bytes) -> None:
        """Use ``master`` from now on (the previous key is dropped, not kept as a fallback)."""
        with self.lock:
            self._state = (AESGCM(_check(master, "replacement")), key_id(master), _derive_prk(master))

    def ensure(self, expected_id: str | None) -> bool:
        """Make the key the one with id ``expected_id`` (the store's current id, read in the
        caller's snapshot or write transaction). True when it was reloaded. MasterKeyError
        when it cannot be (a key from the environment, or no such key file)."""
        if expected_id is None or expected_id == self._state[1]:
            return False
        from .errors import MasterKeyMismatchError

        with self.lock:
            if expected_id == self._state[1]:
                return False
            if self.reload is None:
                raise MasterKeyMismatchError(
                    f"the store's master key was rotated (now id {expected_id}); this process holds id {self._state[1]} "
                    f"from {self.source or 'its configuration'}: restart it with the new key (${MASTER_KEY_ENV})",
                    expected=expected_id, held=self._state[1],
                )
            key = self.reload(expected_id)
            if key_id(key) != expected_id:  # pragma: no cover - reload checks it
                raise MasterKeyMismatchError(f"reloaded master key is not id {expected_id}")
            self.replace(key)
            return True

    # --- derived keys ------------------------------------------------------------------------

    def derive_key(self, purpose: bytes) -> tuple[bytes, str]:
        """A 32-byte key for ``purpose`` derived from the master key (HKDF-SHA256, ``info`` =
        ``facegate/derive/v1|`` + purpose) and the id of the master key it came from, read from
        one snapshot. Keys derived for different purposes are independent; a rotation changes
        them all (nothing encrypted under a derived key survives a rotation unless its owner
        re-encrypts it)."""
        state = self._state
        key = HKDFExpand(algorithm=hashes.SHA256(), length=KEY_BYTES, info=b"facegate/derive/v1|" + purpose).derive(state[2])
        return key, state[1]

    # --- key wrapping -----------------------------------------------------------------------

    def wrap(self, key: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._state[0].encrypt(nonce, key, b"facegate/wrap/v1|" + context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        aead, held = self._state[0], self._state[1]
        try:
            return aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"facegate/wrap/v1|" + context)
        except InvalidTag as exc:
            if self._follow_rotation(held):
                return self.unwrap_with_current(wrapped, context)
            raise TemplateIntegrityError("a wrapped key failed authentication (wrong master key or tampered row)") from exc

    def unwrap_with_current(self, wrapped: bytes, context: bytes) -> bytes:
        """``unwrap`` without following a rotation (the rotation itself uses this)."""
        try:
            return self._state[0].decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"facegate/wrap/v1|" + context)
        except InvalidTag as exc:
            raise TemplateIntegrityError("a wrapped key failed authentication (wrong master key or tampered row)") from exc

    def _follow_rotation(self, held: str) -> bool:
        """After a failed unwrap: has the store moved to another master key (rotated by another
        process)? Then load it; True if the key changed since ``held`` was used."""
        if self._state[1] != held:
            return True  # another thread already followed it
        if self.latest_id is None:
            return False
        try:
            latest = self.latest_id()
        except Exception:  # noqa: BLE001 - report the authentication failure instead
            return False
        if latest is None or latest == held:
            return False
        self.ensure(latest)
        return self._state[1] != held

    def new_subject_key(self, collection_id: int, external_id: str) -> tuple[bytes, bytes]:
        """(data key, wrapped data key) for a new subject."""
        key = generate_key()
        return key, self.wrap(key, subject_context(collection_id, external_id))

    def subject_key(self, wrapped: bytes, collection_id: int, external_id: str) -> SubjectCipher:
        return SubjectCipher(self.unwrap(wrapped, subject_context(collection_id, external_id)), collection_id, external_id)


def _derive_prk(master: bytes) -> bytes:
    """HKDF-Extract of the master key (the pseudorandom key ``derive_key`` expands). Extract
    and expand split so the master key itself is not kept beside its AES-GCM object."""
    h = hmac.new(b"facegate/derive/v1", master, hashlib.sha256)
    return h.digest()


def subject_context(collection_id: int, external_id: str) -> bytes:
    return f"subject|{collection_id}|{external_id}".encode()


def keyring_context(name: str) -> bytes:
    """Associated data of keyring entry ``name``: ``keyring|`` + the name with ``:`` as ``|``
    (``audit-mac`` → ``keyring|audit-mac``; the PostgreSQL backend's ``vecrot:<cid>:<version>``
    → ``keyring|vecrot|<cid>|<version>``). A master-key rotation re-wraps every entry with it;
    an entry wrapped otherwise fails authentication and stops the rotation before it commits."""
    return b"keyring|" + name.replace(":", "|").encode()


class SubjectCipher:
    """Encrypts and decrypts one subject's templates (float32 vectors)."""

    def __init__(self, key: bytes, collection_id: int, external_id: str) -> None:
        self._aead = AESGCM(key)
        self._prefix = f"facegate/template/v1|{collection_id}|{external_id}|".encode()

    def encrypt(self, vector: np.ndarray, model_id: str) -> tuple[bytes, bytes]:
        nonce = secrets.token_bytes(NONCE_BYTES)
        data = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        return nonce, self._aead.encrypt(nonce, data, self._prefix + model_id.encode())

    def decrypt(self, nonce: bytes, ciphertext: bytes, model_id: str) -> np.ndarray:
        return np.frombuffer(self.decrypt_bytes(nonce, ciphertext, model_id), dtype="<f4")

    def decrypt_bytes(self, nonce: bytes, ciphertext: bytes, model_id: str) -> bytes:
        """The plaintext float32 little-endian bytes (bulk loading joins these)."""
        try:
            return self._aead.decrypt(nonce, ciphertext, self._prefix + model_id.encode())
        except InvalidTag as exc:
            raise TemplateIntegrityError("a stored template failed authentication (tampered row or wrong key)") from exc
