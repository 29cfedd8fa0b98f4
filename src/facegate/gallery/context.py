"""What every gallery operation shares: the store, the master key, the audit log, the vector
index, the face engines and the clock — one small object the concept modules receive, so that
none of them needs the whole ``Gallery``."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..clock import Clock
from .audit import AuditLog
from .crypto import Crypto
from .errors import CollectionNotFoundError, InvalidArgumentError, ModelMismatchError, SubjectNotFoundError
from .names import lookup_forms
from .ports import CollectionRow, StoreTransaction, SubjectRow, TemplateStore, VectorIndex

if TYPE_CHECKING:  # the engine module loads models: imported when an engine is first needed
    from ..engine import FaceEngine

ImageLike = Any  # whatever FaceEngine accepts: a path, bytes, an array, a PIL image, a Chosen face


@dataclass
class EngineCache:
    """The face engine for a collection's pinned model: the one the gallery was given, else one
    loaded per model on first use."""

    engine: FaceEngine | None = None
    allow_noncommercial: bool = False
    _loaded: dict[str, FaceEngine] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def for_collection(self, col: CollectionRow) -> FaceEngine:
        eng = self.engine
        if eng is None:
            with self._lock:
                eng = self._loaded.get(col.model_id)
                if eng is None:
                    from ..engine import FaceEngine

                    eng = self._loaded[col.model_id] = FaceEngine(col.model_id, allow_noncommercial=self.allow_noncommercial)
        if eng.spec.id != col.model_id or eng.spec.sha256 != col.model_sha256:
            raise ModelMismatchError(
                f"collection {col.name!r} is pinned to model {col.model_id} (sha256 {col.model_sha256[:12]}…); "
                f"the engine runs {eng.spec.id} (sha256 {eng.spec.sha256[:12]}…). Templates of two models never mix: "
                "use the pinned model or re-enrol into a new collection",
                collection=col.name, pinned=col.model_id, engine=eng.spec.id,
            )
        return eng


class CollectionChangedError(Exception):
    """The collection row an identification was admitted with is no longer the stored one (raised
    inside its write transaction, which then rolls back: nothing was recorded or returned)."""


@dataclass
class CollectionRows:
    """Collection rows by name for identification, which then opens no read transaction of its
    own. A remembered row is trusted only to *admit* a search, never to refuse one (a refusal is
    judged on a row read afresh), and the write transaction that records the identification
    confirms it is still the stored row (:meth:`confirm`); so a change committed by any process
    (liveness policy, deletion, a name reused) is honoured by the next identification."""

    _rows: dict[str, CollectionRow] = field(default_factory=dict)

    def remembered(self, name: str, index: VectorIndex) -> CollectionRow | None:
        """The row last read for ``name``, while ``index`` holds the collection loaded (it
        follows the change feed and drops a deleted collection: a remembered row never makes
        this process load an index for a collection that is gone)."""
        row = self._rows.get(name)
        if row is None or not any(c.collection_id == row.id for c in index.loaded()):
            return None
        return row

    def read(self, store: TemplateStore, name: str) -> CollectionRow:
        with store.read() as tx:
            row = collection_in(tx, name)
        self._rows[name] = row
        return row

    def confirm(self, tx: StoreTransaction, col: CollectionRow, stored: Sequence[Any] | None) -> None:
        """Inside a write transaction that has read ``stored``, the values of collection
        ``col.id``'s row (None: no such row): CollectionChangedError unless they are ``col``'s
        (then the current row, or none, is what is remembered)."""
        if stored is not None and tuple(stored) == tuple(col):
            return
        current = tx.collection_by_id(col.id) if stored is not None else None
        if current is not None and current.name == col.name:
            self._rows[col.name] = current
        else:
            self._rows.pop(col.name, None)
        raise CollectionChangedError(col.name)


@dataclass
class GalleryContext:
    store: TemplateStore
    crypto: Crypto
    audit: AuditLog
    index: VectorIndex
    engines: EngineCache
    clock: Clock
    collections: CollectionRows = field(default_factory=CollectionRows)

    def now(self) -> dt.datetime:
        return self.clock.now()

    def key_current(self, tx: StoreTransaction) -> None:
        """Inside a write transaction that wraps or unwraps keys: follow a master-key rotation
        committed by another process (the write lock keeps another from committing meanwhile)."""
        self.crypto.ensure(tx.get_meta("master_key_id"))

    def collection_row(self, name: str) -> CollectionRow:
        with self.store.read() as tx:
            return collection_in(tx, name)


def collection_in(tx: StoreTransaction, name: str) -> CollectionRow:
    row = tx.collection_by_name(name)
    if row is None:
        raise CollectionNotFoundError(f"no collection named {name!r}", collection=name)
    return row


def find_subject(tx: StoreTransaction, cid: int, subject: str) -> SubjectRow | None:
    """The stored subject ``subject`` names: exactly (rows created before names.py's rule), else
    its NFC form (how new names are stored)."""
    for form in lookup_forms(subject):
        row = tx.subject(cid, form)
        if row is not None:
            return row
    return None


def subject_in(tx: StoreTransaction, col: CollectionRow, subject: str, *, hint: str = "") -> SubjectRow:
    row = find_subject(tx, col.id, subject)
    if row is None:
        raise SubjectNotFoundError(f"no subject {subject!r} in collection {col.name!r}{hint}", subject=subject)
    return row


def aware(t: dt.datetime | None, what: str) -> dt.datetime | None:
    if t is not None and t.tzinfo is None:
        raise InvalidArgumentError(f"{what} must be timezone-aware (UTC)")
    return t
