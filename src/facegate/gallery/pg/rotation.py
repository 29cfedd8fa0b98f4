"""Secret per-collection orthogonal rotations of the stored search vectors.

The PostgreSQL backend keeps, next to each AES-GCM template, a *search copy* ``R · v`` that a
starting process loads in one binary COPY and turns back into ``v`` with one matrix product
(``memory.py``), instead of decrypting every template. ``R`` is a random orthogonal matrix
(Haar-distributed, from a 32-byte seed) per collection and key version; orthogonal maps
preserve inner products, so the copy's geometry is the templates'.

The seed is stored only wrapped by the deployment's master key (``keyring`` row
``vecrot:<collection id>:<version>``), and the master key never enters the database: a dump of
the database alone does not give ``R``. Rotating the key (:func:`facegate.gallery.pg.admin.rotate_key`)
draws a new seed, re-transforms every stored vector in place with ``R_new · R_oldᵀ`` in one
transaction (no re-enrolment, no decryption) and deletes the old seed.

What this is and is not (docs/scale-out.md, "Threat model of the search copy"): a rotation hides
the coordinate system, not the geometry. All scores *within* a dump are preserved, so a stolen
table can still be clustered; anyone who learns ``R`` (the master key, or enough known
(template, rotated template) pairs: ≥ d linearly independent ones recover it exactly by
orthogonal Procrustes) can invert it. It is a keyed, revocable transform that makes two
deployments' tables (and old backups after a key rotation) not directly comparable — not
encryption and not irreversibility.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

KEYRING_PREFIX = "vecrot"


def keyring_name(collection_id: int, version: int) -> str:
    return f"{KEYRING_PREFIX}:{collection_id}:{version}"


def wrap_context(collection_id: int, version: int) -> bytes:
    return f"keyring|{KEYRING_PREFIX}|{collection_id}|{version}".encode()


def orthogonal_from_seed(seed: bytes, dim: int) -> np.ndarray:
    """A Haar-random orthogonal ``dim × dim`` matrix (float32) determined by ``seed``.

    Q of the QR decomposition of a Gaussian matrix with R's diagonal made positive (Mezzadri 2007)."""
    digest = hashlib.sha256(b"facegate/vecrot/v1|" + seed + dim.to_bytes(4, "big")).digest()
    rng = np.random.Generator(np.random.PCG64(np.frombuffer(digest, dtype=np.uint64)))
    a = rng.standard_normal((dim, dim))
    # Gram-Schmidt (twice, for float64 orthogonality) gives the QR factor with a positive
    # diagonal of R, i.e. Haar measure, without LAPACK (whose threaded QR can stall for
    # seconds on a loaded machine).
    q = np.zeros((dim, dim))
    for i in range(dim):
        v = a[:, i].copy()
        for _ in range(2):
            v -= q[:, :i] @ (q[:, :i].T @ v)
        q[:, i] = v / np.linalg.norm(v)
    return np.ascontiguousarray(q, dtype=np.float32)


class RotationCache:
    """``(collection id, version) → R`` (process-wide; matrices are small: 64 KiB at 128-d)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> np.ndarray | None:
        return self._cache.get(key)

    def put(self, key: tuple[int, int], matrix: np.ndarray) -> np.ndarray:
        with self._lock:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = matrix
        return matrix

    def forget(self, collection_id: int) -> None:
        with self._lock:
            for k in [k for k in self._cache if k[0] == collection_id]:
                del self._cache[k]
