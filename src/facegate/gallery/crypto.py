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
elsewhere) cannot be decrypted, even with the master key.

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
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
    key = generate_key()
    tmp = path.with_name(f".{MASTER_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (encode_key(key) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, fails if another process created it first
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _read_key_file(path), str(path)


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
    """Wrap/unwrap data keys and encrypt/decrypt templates. Thread-safe (stateless AESGCM)."""

    def __init__(self, master: bytes) -> None:
        self._master = AESGCM(master)
        self.master_key_id = key_id(master)

    # --- key wrapping -----------------------------------------------------------------------

    def wrap(self, key: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._master.encrypt(nonce, key, b"facegate/wrap/v1|" + context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"facegate/wrap/v1|" + context)
        except InvalidTag as exc:
            raise TemplateIntegrityError("a wrapped key failed authentication (wrong master key or tampered row)") from exc

    def new_subject_key(self, collection_id: int, external_id: str) -> tuple[bytes, bytes]:
        """(data key, wrapped data key) for a new subject."""
        key = generate_key()
        return key, self.wrap(key, subject_context(collection_id, external_id))

    def subject_key(self, wrapped: bytes, collection_id: int, external_id: str) -> "SubjectCipher":
        return SubjectCipher(self.unwrap(wrapped, subject_context(collection_id, external_id)), collection_id, external_id)


def subject_context(collection_id: int, external_id: str) -> bytes:
    return f"subject|{collection_id}|{external_id}".encode()


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
