"""The search copy's table names and binary COPY payloads.

A search vector is stored as ``bytea``: ``dim`` big-endian float32 (the byte order of
PostgreSQL's binary protocol, and of pgvector's binary form that older databases were
converted from), so a collection streams in and out by binary COPY with one numpy view per
chunk and no extension on the server."""

from __future__ import annotations

import numpy as np

from ..errors import StoreError

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def vec_table(collection_id: int) -> str:
    return f"fg_vectors_{int(collection_id)}"


def _row_type(dim: int) -> np.dtype:
    """One binary COPY row of (template_id bigint, subject_id bigint, embedding bytea)."""
    return np.dtype([("nf", ">i2"), ("l1", ">i4"), ("tid", ">i8"), ("l2", ">i4"), ("sid", ">i8"), ("l3", ">i4"),
                     ("v", ">f4", (dim,))])


def copy_rows(tids: np.ndarray, sids: np.ndarray, V: np.ndarray) -> bytes:
    """Binary COPY payload for ``(template_id, subject_id, embedding)``."""
    n, dim = V.shape
    rec = np.empty(n, _row_type(dim))
    rec["nf"], rec["l1"], rec["l2"], rec["l3"] = 3, 8, 8, 4 * dim
    rec["tid"], rec["sid"] = tids, sids
    rec["v"] = V
    return COPY_HEADER + rec.tobytes() + COPY_TRAILER


def parse_copy_rows(data: bytes, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`copy_rows` for ``COPY (SELECT template_id, subject_id, embedding …) TO
    STDOUT (FORMAT BINARY)``: (template ids, subject ids, float32 vectors)."""
    body = data[len(COPY_HEADER): len(data) - len(COPY_TRAILER)]
    row = _row_type(dim)
    if len(body) % row.itemsize:
        raise StoreError(f"the search copy does not hold {dim}-dimensional float32 vectors")
    rec = np.frombuffer(body, row)
    if len(rec) and not (rec["l3"] == 4 * dim).all():
        raise StoreError(f"the search copy does not hold {dim}-dimensional float32 vectors")
    return rec["tid"].astype(np.int64), rec["sid"].astype(np.int64), rec["v"].astype(np.float32)
