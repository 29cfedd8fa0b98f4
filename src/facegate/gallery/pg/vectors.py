"""pgvector helpers shared by the PostgreSQL store, its index and admin tools: table names,
the vector text form and binary COPY payloads."""

from __future__ import annotations

import numpy as np

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def vec_table(collection_id: int) -> str:
    return f"fg_vectors_{int(collection_id)}"


def vector_literal(v: np.ndarray) -> str:
    """pgvector's text form; 9 significant digits round-trip float32 exactly."""
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(v, np.float32).tolist()) + "]"


def copy_rows(tids: np.ndarray, sids: np.ndarray, V: np.ndarray) -> bytes:
    """Binary COPY payload for (template_id bigint, subject_id bigint, embedding vector(dim))."""
    n, dim = V.shape
    dt_ = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("tid", ">i8"), ("l2", ">i4"), ("sid", ">i8"), ("l3", ">i4"),
                    ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (dim,))])
    rec = np.empty(n, dt_)
    rec["nf"], rec["l1"], rec["l2"], rec["l3"] = 3, 8, 8, 4 + 4 * dim
    rec["tid"], rec["sid"] = tids, sids
    rec["dim"], rec["unused"] = dim, 0
    rec["v"] = V
    return COPY_HEADER + rec.tobytes() + COPY_TRAILER


def parse_copy_rows(data: bytes, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`copy_rows` for ``COPY (SELECT template_id, subject_id, embedding …) TO
    STDOUT (FORMAT BINARY)``: (template ids, subject ids, float32 vectors)."""
    body = data[len(COPY_HEADER): len(data) - len(COPY_TRAILER)]
    dt_ = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("tid", ">i8"), ("l2", ">i4"), ("sid", ">i8"), ("l3", ">i4"),
                    ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (dim,))])
    rec = np.frombuffer(body, dt_)
    return rec["tid"].astype(np.int64), rec["sid"].astype(np.int64), rec["v"].astype(np.float32)
