"""Encryption of a passed liveness session's best-frame crop while it waits in the database for
its one use (``db_store``): sealed under a key derived from the gallery's master key, bound to the
session id."""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import FacegateError


class MasterKeyCrypto(Protocol):
    """What the cipher needs of the gallery's ``Crypto`` (``gallery.crypto``)."""

    # Reads the master key id now on record (set when the key lives in the data directory).
    latest_id: Callable[[], str | None] | None

    def derive_key(self, purpose: bytes) -> tuple[bytes, str]: ...

    def ensure(self, expected_id: str | None) -> bool: ...


RESULT_KEY_PURPOSE = b"liveness-result/v1"
_AAD_PREFIX = b"facegate/liveness-result/v1|"
_NONCE = 12


class ResultUnreadable(Exception):
    """A stored result cannot be opened: ``reason`` is ``master_key_rotated`` or ``integrity``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ResultCipher:
    """Seals a passed session's best-frame crop for the database and opens it again.

    Key: 32 bytes from HKDF-SHA256 over the gallery's master key (``Crypto.derive_key``, info
    ``facegate/derive/v1|liveness-result/v1``): no second key store, and independent of every
    other key derived or wrapped under the master key. Ciphertext: 12-byte random nonce +
    AES-256-GCM of the crop's lossless PNG, with ``facegate/liveness-result/v1|<session id>``
    as associated data, so a row copied under another session id fails authentication. The
    master key's fingerprint is stored beside it: after a rotation the derived key is gone
    with the old master key and opening says so (``master_key_rotated``) instead of reporting
    tampering."""

    def __init__(self, crypto: MasterKeyCrypto) -> None:
        self.crypto = crypto
        self._lock = threading.Lock()
        self._cached: tuple[str, AESGCM] | None = None

    def _current(self) -> tuple[str, AESGCM]:
        key, kid = self.crypto.derive_key(RESULT_KEY_PURPOSE)
        with self._lock:
            if self._cached is None or self._cached[0] != kid:
                self._cached = (kid, AESGCM(key))
            return self._cached

    def _follow_rotation(self) -> None:
        """Load the store's current master key if another process rotated it (files in the data
        directory); MasterKeyMismatchError when this process cannot (a key from the environment)."""
        latest = self.crypto.latest_id
        if latest is not None:
            self.crypto.ensure(latest())

    @staticmethod
    def aad(session_id: str) -> bytes:
        return _AAD_PREFIX + session_id.encode()

    def seal(self, session_id: str, image: np.ndarray) -> tuple[str, bytes]:
        """(master key id, nonce + ciphertext) of ``image`` (an RGB uint8 array) for ``session_id``."""
        import cv2

        rgb = np.ascontiguousarray(image)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"best image must be an RGB uint8 array, not {rgb.dtype} {rgb.shape}")
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:  # pragma: no cover - OpenCV encodes every uint8 image
            raise ValueError("could not encode the best image")
        self._follow_rotation()
        kid, aead = self._current()
        nonce = secrets.token_bytes(_NONCE)
        blob = nonce + aead.encrypt(nonce, png.tobytes(), self.aad(session_id))
        del png
        return kid, blob

    def open(self, session_id: str, key_id: str, blob: bytes) -> np.ndarray:
        """The RGB crop sealed for ``session_id``; ResultUnreadable when it cannot be."""
        import cv2

        kid, aead = self._current()
        if key_id != kid:
            with contextlib.suppress(FacegateError):
                self._follow_rotation()
            kid, aead = self._current()
        if key_id != kid:
            raise ResultUnreadable(
                "master_key_rotated",
                f"it was encrypted under master key {key_id}, and the gallery's master key is now {kid} (rotated since)",
            )
        try:
            png = aead.decrypt(bytes(blob[:_NONCE]), bytes(blob[_NONCE:]), self.aad(session_id))
        except (InvalidTag, ValueError):
            raise ResultUnreadable(
                "integrity", "its ciphertext failed authentication (altered, or moved from another session)"
            ) from None
        bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:  # pragma: no cover - authenticated data is what seal() wrote
            raise ResultUnreadable("integrity", "its plaintext is not an image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
