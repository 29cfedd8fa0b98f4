"""Importing ready-made templates (moving a gallery between backends, benchmarks): no images,
so no quality gate; batched, each batch one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import numpy as np

from .consent import check_spec, consent_rows
from .context import GalleryContext, collection_in
from .crypto import SubjectCipher
from .errors import ConsentRequiredError, InvalidArgumentError, ModelMismatchError
from .names import check_name
from .ports import CollectionRow, StoreTransaction
from .types import ConsentSpec

Item = tuple[str, np.ndarray, ConsentSpec | None]


def import_templates(ctx: GalleryContext, collection: str, items: Iterable[Item], *, model_id: str, actor: str,
                     batch: int) -> int:
    col = ctx.collection_row(collection)
    if model_id != col.model_id:
        raise ModelMismatchError(
            f"collection {collection!r} is pinned to {col.model_id}; refusing templates of {model_id}",
            collection=collection, pinned=col.model_id, given=model_id,
        )
    total = 0
    buf: list[Item] = []
    for ext, vecs, cons in items:
        buf.append((check_name("subject", ext), vecs, cons))
        if len(buf) >= batch:
            total += _store_batch(ctx, collection, buf, model_id, actor)
            buf.clear()
    if buf:
        total += _store_batch(ctx, collection, buf, model_id, actor)
    ctx.index.sync()
    return total


def _new_subjects(ctx: GalleryContext, tx: StoreTransaction, c: CollectionRow, buf: list[Item], exts: list[str],
                  now: dt.datetime) -> dict[str, SubjectCipher]:
    """Insert the batch's subjects not stored yet (each needs a consent); their ciphers."""
    have = tx.subjects_by_external(c.id, exts)
    new_rows = []
    ciphers = {}
    for ext, _v, cons in buf:
        if ext in have:
            continue
        if cons is None:
            raise ConsentRequiredError(f"new subject {ext!r} needs a consent", subject=ext)
        dek, wrapped = ctx.crypto.new_subject_key(c.id, ext)
        ciphers[ext] = SubjectCipher(dek, c.id, ext)
        new_rows.append(dict(collection_id=c.id, external_id=ext, label=None, created_at=now, last_seen_at=now,
                             wrapped_key=wrapped, master_key_id=ctx.crypto.master_key_id))
    tx.insert_subjects_many(new_rows)
    return ciphers


def _store_batch(ctx: GalleryContext, collection: str, buf: list[Item], model_id: str, actor: str) -> int:
    now = ctx.now()
    with ctx.store.write() as tx:
        ctx.key_current(tx)
        c = collection_in(tx, collection)
        exts = [e for e, _v, _c in buf]
        if len(set(exts)) != len(exts):
            raise InvalidArgumentError("a subject appears twice in one import batch")
        ciphers = _new_subjects(ctx, tx, c, buf, exts, now)
        have = tx.subjects_by_external(c.id, exts)
        consents: list[dict[str, Any]] = []
        templates: list[dict[str, Any]] = []
        for ext, vecs, cons in buf:
            s = have[ext]
            cipher = ciphers.get(ext) or ctx.crypto.subject_key(s.wrapped_key, c.id, ext)
            if cons is not None:
                check_spec(c, cons, now)
                consents.extend(consent_rows(s.id, cons, actor, now))
            V = np.asarray(vecs, np.float32).reshape(-1, c.embedding_dim)
            V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
            for v in V:
                nonce, ct = cipher.encrypt(v, c.model_id)
                templates.append(dict(subject_id=s.id, collection_id=c.id, model_id=c.model_id, nonce=nonce,
                                      ciphertext=ct, quality={}, created_at=now))
        tx.insert_consents(consents)
        tx.insert_templates_many(templates)
        tx.add_changes_many(c.id, [have[e].id for e in exts], "subject", now)
        ctx.audit.append(tx, actor=actor, action="enroll.import", now=now, collection=collection, subjects=exts,
                         decision="enrolled", details={"templates": len(templates), "model": model_id})
    return len(templates)
