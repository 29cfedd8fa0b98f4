"""The in-memory index (``gallery/index.py``: the same design and code as for SQLite) on a
PostgreSQL gallery, loaded from the rotated search copy.

PostgreSQL is the system of record; every ``facegate serve`` process keeps each collection's
index in memory and follows the ``changes`` feed before every search, exactly as with SQLite.
Only the cold load differs: instead of unwrapping every subject key and decrypting every
template (per-row Python and AES-GCM), it streams the collection's search copy ``R · v`` with
binary COPY and undoes the rotation with one matrix product (``Rᵀ R = I``). The copy lives in
the same snapshot as the subjects, consents and feed position the load reads, so the result is
what decryption would give. Templates written later arrive through the feed (decrypted)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..index import GalleryIndex


class PgGalleryMemoryIndex(GalleryIndex):
    """:class:`GalleryIndex` whose cold load reads PostgreSQL's rotated search copy, and whose
    change-feed head read (a round trip) runs beside the search."""

    overlap_head_read = True

    def read_vectors(self, tx: Any, cid: int, dim: int, model_id: str,
                     subjects: dict[int, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        R, _state = tx.current_rotation(cid)
        n = tx.count_vectors(cid)
        tids = np.zeros(n, np.int64)
        sids = np.zeros(n, np.int64)
        X = np.zeros((n, dim), np.float32)
        at = 0
        for t, s, V in tx.stream_vectors(cid):
            X[at : at + len(t)] = V @ R  # v = Rᵀ (R v): the rotation undone
            tids[at : at + len(t)], sids[at : at + len(t)] = t, s
            at += len(t)
        keep = ~np.isin(tids[:at], tx.foreign_template_ids(cid, model_id)) & np.isin(sids[:at], list(subjects))
        if keep.all() and at == n:
            return tids, sids, X
        return tids[:at][keep], sids[:at][keep], X[:at][keep]
