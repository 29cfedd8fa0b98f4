"""``Gallery``: consented enrolment, purpose-bound 1:N identification, 1:1 against a subject,
erasure, consent management, retention purge and the audit log — over a template store (the
database) and a vector index kept in step with it (``ports.py``).

    >>> g = Gallery.open()                               # ./.facegate or $FACEGATE_DATA_DIR
    >>> g.create_collection("staff", purposes=["access"])
    >>> g.enroll("staff", "E1001", ["a.jpg", "b.jpg"], consent=ConsentSpec(["access"], evidence_ref="form-77"))
    >>> g.identify("staff", "door-cam.jpg", purpose="access").candidates

Probe images are never stored, enrolment photos are not stored, and templates are stored only
encrypted (see crypto.py). This class is the front: each concept lives in its own module
(collections, enrolment, search, consent, subjects, retention, audit_access), all sharing one
``GalleryContext``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..clock import SYSTEM, Clock
from . import audit_access, collections, enrolment, retention, search, subjects, template_import
from . import consent as consents
from . import master_key as master_key_files
from .audit import AuditLog
from .context import EngineCache, GalleryContext, ImageLike, collection_in
from .crypto import Crypto
from .index import IndexConfig
from .keys import ApiKeys
from .liveness_gate import Liveness
from .opening import audit_legacy_names, open_database, open_master_key
from .ports import CollectionRow, CollectionVectors, VectorIndex
from .store import Store
from .types import (
    AuditArchiveCheck,
    AuditArchiveReport,
    AuditEvent,
    AuditReport,
    Collection,
    ConsentSpec,
    EnrollResult,
    IdentifyResult,
    MasterKeyRotation,
    PurgeReport,
    QualityPolicy,
    Subject,
    SubjectVerifyResult,
)
from .witness import WITNESS_FILE

if TYPE_CHECKING:  # loaded on first use: opening a gallery does not load a model
    from ..engine import FaceEngine

__all__ = ["Gallery"]


class Gallery:
    """Thread-safe; open one per process and share it (the REST service and the CLI do)."""

    def __init__(
        self,
        store: Store,
        crypto: Crypto,
        audit: AuditLog,
        *,
        data_dir: Path | None,
        engine: FaceEngine | None = None,
        allow_noncommercial: bool = False,
        index_config: IndexConfig | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.store = store
        self.crypto = crypto
        self.audit = audit
        self.data_dir = data_dir
        self.index: VectorIndex = store.make_index(crypto, index_config)
        self.keys = ApiKeys(store, audit, clock=clock)
        if crypto.latest_id is None:  # an unwrap that fails checks whether another process rotated the key
            crypto.latest_id = lambda: master_key_files._current_id(store)
        self._ctx = GalleryContext(store, crypto, audit, self.index, EngineCache(engine, allow_noncommercial), clock)

    @property
    def context(self) -> GalleryContext:
        """What the gallery's operations share (store, keys, audit log, index, engines, clock):
        for peers built on the gallery, such as the registry's de-duplication."""
        return self._ctx

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | Path | None = None,
        *,
        store: str | None = None,
        engine: FaceEngine | None = None,
        master_key: bytes | str | None = None,
        allow_noncommercial: bool = False,
        durability: str = "normal",
        index_config: IndexConfig | None = None,
        clock: Clock = SYSTEM,
    ) -> Gallery:
        """Open (creating and migrating if needed) the gallery.

        ``data_dir``: default $FACEGATE_DATA_DIR, else ./.facegate. ``store``: a database URL
        (default $FACEGATE_STORE, else sqlite:///<data_dir>/gallery.db). ``engine``: the
        FaceEngine to use (None: each collection's pinned model is loaded on first use).
        ``master_key``: 32 bytes or base64 (default $FACEGATE_MASTER_KEY, else
        <data_dir>/master.key, created 0600 for a new store). ``durability="full"`` makes
        SQLite fsync every commit (default: WAL + synchronous=NORMAL, safe against crashes of
        the process, may lose the last commits on power loss). The first argument may also be
        the URL itself: ``Gallery.open("postgresql://…")``, ``Gallery.open("sqlite:///x/g.db")``.
        """
        st, ddir = open_database(data_dir, store=store, durability=durability)
        try:
            crypto = open_master_key(st, ddir, master_key, clock=clock)
            with st.read() as tx:
                entry = tx.get_keyring("audit-mac")
            assert entry is not None  # open_database creates it with the store
            audit = AuditLog(crypto.unwrap(entry.wrapped, b"keyring|audit-mac"), witness_path=ddir / WITNESS_FILE)
            audit_legacy_names(st, audit, clock.now())
        except BaseException:
            st.close()
            raise
        return cls(st, crypto, audit, data_dir=ddir, engine=engine, allow_noncommercial=allow_noncommercial,
                   index_config=index_config, clock=clock)

    def rotate_master_key(self, *, actor: str = "library", new_key: bytes | str | None = None) -> MasterKeyRotation:
        """Replace the master key: every subject data key and keyring secret re-wrapped under a
        new key in one durable transaction, the new key's fingerprint recorded, then the old key
        file overwritten and removed. Afterwards no copy of the database made before (a backup)
        can be decrypted — erasures made before the rotation are then complete in backups too.

        Key in the data directory (default): a new random key is generated (or ``new_key``) and
        replaces ``master.key``; crash-safe at every point (see ``master_key.py``). Key from
        $FACEGATE_MASTER_KEY or ``Gallery.open(master_key=...)``: ``new_key`` is required (32
        bytes or base64; MasterKeyError otherwise) and the caller stores it where the old one was.
        Other processes using the store load the new key file before their next decrypt (keys
        from the environment: they must be restarted with the new key). LockedError if another
        rotation is running on the data directory."""
        return master_key_files.rotate(self, actor=actor, new_key=new_key)

    def master_key_status(self) -> dict[str, Any]:
        """Current/previous key ids, last rotation time, key source, subject keys per master key
        id, and files left by an interrupted rotation (never key material)."""
        return master_key_files.status(self)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- collections --------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        purposes: Iterable[str],
        model: str | None = None,
        fmr: float = 1e-4,
        threshold: float | None = None,
        retention_days: int = collections.DEFAULT_RETENTION_DAYS,
        quality_policy: QualityPolicy | None = None,
        description: str | None = None,
        liveness_required: Iterable[str] | str | None = (),
        actor: str = "library",
    ) -> Collection:
        """A new collection pinned to ``model`` (id and weights sha256; default: the gallery's
        engine's model, else sface). ``liveness_required``: operations of ("enroll", "verify",
        "identify") that need a passed liveness check (see ``set_collection_liveness``)."""
        return collections.create(self._ctx, name, purposes=purposes, model=model, fmr=fmr, explicit=threshold,
                                  retention_days=retention_days, quality_policy=quality_policy, description=description,
                                  liveness_required=liveness_required, actor=actor)

    def set_collection_liveness(self, name: str, operations: Iterable[str] | str | None, *,
                                actor: str = "library") -> Collection:
        """Set which operations of the collection need a passed liveness check: a subset of
        ("enroll", "verify", "identify"); empty turns the requirement off. Effective for the
        next call in every process (identification confirms it in the database inside the
        transaction that records it; the other operations read it on each call).
        Audited as ``collection.update`` with the old and new setting."""
        return collections.set_liveness(self._ctx, name, operations, actor=actor)

    def list_collections(self) -> list[Collection]:
        return collections.list_all(self._ctx)

    def get_collection(self, name: str) -> Collection:
        return collections.get(self._ctx, name)

    def delete_collection(self, name: str, *, actor: str = "library") -> int:
        """Erase every subject of the collection, then the collection. Returns subjects erased."""
        return collections.delete(self._ctx, name, actor=actor)

    def _col_row(self, name: str) -> CollectionRow:
        return self._ctx.collection_row(name)

    # --- enrolment ----------------------------------------------------------------------------

    def enroll(
        self,
        collection: str,
        subject: str,
        images: ImageLike | Sequence[ImageLike],
        *,
        consent: ConsentSpec | None = None,
        label: str | None = None,
        liveness: Liveness = None,
        dedup_purpose: str | None = None,
        disclose_duplicates: bool = True,
        force_mismatch: str | None = None,
        actor: str = "library",
        progress: Callable[[int, int | None], None] | None = None,
    ) -> EnrollResult:
        """Quality-gate each image and store the accepted faces' templates for ``subject``.

        A new subject needs ``consent`` (ConsentRequiredError otherwise); an existing one needs
        an active consent or a new ``consent``. Each image is accepted or rejected with a reason
        code.

        Same person: a face must match the subject's enrolled templates, and the faces accepted
        before it in this call, at the collection's threshold (best score); otherwise it is
        rejected with ``face_mismatch`` (the first accepted face of a new subject sets who the
        subject is). ``force_mismatch``: the reason an operator accepts such faces anyway
        (e.g. a re-enrolment after surgery); audited with the scores.

        Duplicates: with ``dedup_purpose`` (one of the collection's purposes) each accepted face
        is compared, like an identification for that purpose, with the other subjects whose
        active consent covers it; matches above the threshold flag the enrolment for review
        (``flagged_for_review``; the enrolment still happens: the operator decides). No
        ``dedup_purpose``: no duplicate search. ``disclose_duplicates=False`` (a caller not
        allowed to identify) leaves the matched subjects and scores out of the result; the
        audit event names them either way.

        ``liveness``: the id of the liveness session whose best frame ``images`` is (consumed by
        the caller), or a supervised ``LivenessOverride``; required (LivenessRequiredError) when
        the collection requires liveness for enrolment. Recorded in the audit event.

        ``progress(done, total)``: called after each image is screened.
        """
        req = enrolment.Request(collection, subject, consent, label, dedup_purpose, force_mismatch, actor)
        return enrolment.enroll(self._ctx, req, images, liveness=liveness, disclose_duplicates=disclose_duplicates,
                                progress=progress)

    def import_templates(
        self,
        collection: str,
        items: Iterable[template_import.Item],
        *,
        model_id: str,
        actor: str = "library",
        batch: int = 1000,
    ) -> int:
        """Store ready-made templates (e.g. moving a gallery between backends, or benchmarks).

        ``items``: (subject external id, vectors (m × dim) of ``model_id``, consent or None).
        Refuses templates of a model other than the collection's (ModelMismatchError). A new
        subject needs a consent. No quality gate (there are no images). Returns templates stored.
        """
        return template_import.import_templates(self._ctx, collection, items, model_id=model_id, actor=actor, batch=batch)

    # --- search -------------------------------------------------------------------------------

    def identify(
        self, collection: str, image: ImageLike, *, purpose: str, top_k: int = 5, liveness: Liveness = None,
        actor: str = "library",
    ) -> IdentifyResult:
        """Who is this? Candidates at or above the collection's threshold among subjects whose
        consent covers ``purpose`` right now, best first (empty: no match). The probe is not stored.
        ``liveness`` as in ``enroll`` (required when the collection requires it for identify)."""
        return search.identify(self._ctx, collection, image, purpose=purpose, top_k=top_k, liveness=liveness, actor=actor)

    def identify_vector(self, collection: str, vector: np.ndarray, *, purpose: str, top_k: int = 5,
                        model_id: str, liveness: Liveness = None, actor: str = "library") -> IdentifyResult:
        """``identify`` for a template computed elsewhere (same model required; the collection's
        liveness requirement applies as to ``identify``)."""
        return search.identify_vector(self._ctx, collection, vector, purpose=purpose, top_k=top_k, model_id=model_id,
                                      liveness=liveness, actor=actor)

    def verify(
        self, collection: str, subject: str, image: ImageLike, *, purpose: str, liveness: Liveness = None,
        actor: str = "library",
    ) -> SubjectVerifyResult:
        """1:1: is the person in ``image`` the enrolled ``subject``? Best score over the subject's
        templates against the collection threshold. ConsentRequiredError if the subject's
        consent does not cover ``purpose`` now. ``liveness`` as in ``enroll`` (required when the
        collection requires it for verify)."""
        return search.verify(self._ctx, collection, subject, image, purpose=purpose, liveness=liveness, actor=actor)

    # --- subjects and consent -----------------------------------------------------------------

    def list_subjects(self, collection: str, *, limit: int = 100, offset: int = 0, purpose: str | None = None,
                      after: str | None = None) -> list[Subject]:
        """Subjects ordered by external id (``after`` for keyset paging); ``purpose`` keeps those
        whose consent covers it now."""
        return subjects.list_page(self._ctx, collection, limit=limit, offset=offset, purpose=purpose, after=after)

    def count_subjects(self, collection: str, *, purpose: str | None = None) -> int:
        return subjects.count(self._ctx, collection, purpose=purpose)

    def get_subject(self, collection: str, subject: str) -> Subject:
        return subjects.get(self._ctx, collection, subject)

    def delete_subject(self, collection: str, subject: str, *, actor: str = "library", reason: str = "request") -> None:
        """Erase a subject: templates, consents and data key deleted in one transaction; every
        process's index drops it before its next search. An audit tombstone remains.

        Erasure is immediate for the live store. For backups it completes at the next master-key
        rotation (``rotate_master_key``, or ``purge(rotate_master_key=True)`` from cron): a
        backup taken before this call still holds the wrapped data key, which the current master
        key opens until it is rotated away."""
        retention.delete_subject(self._ctx, collection, subject, actor=actor, reason=reason)

    def grant_consent(self, collection: str, subject: str, consent: ConsentSpec, *, actor: str = "library") -> Subject:
        return consents.grant(self._ctx, collection, subject, consent, actor=actor)

    def withdraw_consent(self, collection: str, subject: str, purposes: Iterable[str] | None = None, *,
                         actor: str = "library") -> Subject:
        """Withdraw consent for ``purposes`` (None: all). Effective for the very next search in
        every process. A subject left with no active consent is erased by the next purge."""
        return consents.withdraw(self._ctx, collection, subject, purposes, actor=actor)

    # --- retention ----------------------------------------------------------------------------

    def purge(self, *, dry_run: bool = False, actor: str = "purge", now: dt.datetime | None = None,
              rotate_master_key: bool = False, new_key: bytes | str | None = None,
              progress: Callable[[int, int | None], None] | None = None) -> PurgeReport:
        """Erase subjects past their collection's retention (time since last interaction) or
        with no active consent left. Idempotent and safe from cron: a lease lock in the
        database keeps two purges from running at once (LockedError for the second).

        ``rotate_master_key=True``: then rotate the master key (``rotate_master_key``; ``new_key``
        is passed on), so this purge's erasures and every earlier one are complete in backups
        too. The report's ``rotation`` says what it did. Ignored with ``dry_run``.

        ``progress(done, total)``: called after each subject due is judged (not with ``dry_run``)."""
        if rotate_master_key and not dry_run:
            master_key_files.check_rotatable(self, new_key)  # refuse before erasing anything
        erased, at = retention.purge(self._ctx, dry_run=dry_run, actor=actor, now=now, progress=progress)
        rotation = self.rotate_master_key(actor=actor, new_key=new_key) if rotate_master_key and not dry_run else None
        return PurgeReport(dry_run, erased, at, rotation)

    # --- audit --------------------------------------------------------------------------------

    def audit_list(self, *, collection: str | None = None, subject: str | None = None, action: str | None = None,
                   since: dt.datetime | None = None, until: dt.datetime | None = None, limit: int = 100,
                   before_seq: int | None = None) -> list[AuditEvent]:
        """Events newest first. ``action`` matches exactly or as a prefix ("subject" → subject.*)."""
        return audit_access.query(self._ctx, collection=collection, subject=subject, action=action, since=since,
                                  until=until, limit=limit, before_seq=before_seq)

    def audit_record(self, *, actor: str, action: str, collection: str | None = None, subjects: Sequence[str] = (),
                     purpose: str | None = None, decision: str | None = None, score: float | None = None,
                     details: dict[str, Any] | None = None) -> int:
        """Record a decision made outside the gallery (e.g. the service's image-vs-image verify
        or a liveness check) in the same hash-chained log. Never pass pixels or templates.
        Returns the event's seq."""
        return audit_access.record(self._ctx, actor=actor, action=action, collection=collection, subjects=subjects,
                                   purpose=purpose, decision=decision, score=score, details=details)

    def audit_verify(self, *, expect_head: str | None = None) -> AuditReport:
        return self.audit.verify(self.store, expect_head=expect_head)

    def audit_archive(self, before: dt.datetime, path: str | os.PathLike[str], *, actor: str = "archive",
                      batch: int = 5000, progress: Callable[[int, int | None], None] | None = None) -> AuditArchiveReport:
        """Move every audit event older than ``before`` (the oldest run of the chain whose
        events all are: an older event appended after a newer one waits for the next run) to
        the JSON Lines file ``path``, verify the file against the database, then delete those
        events in one durable transaction that records the chain's new anchor and appends an
        ``audit.archive`` event. Crash-safe at every point (see ``audit_archive.archive``); a rerun
        replaces a file left by an interrupted run, never a committed archive. Count 0 and no
        file when nothing is old enough. LockedError while another archival runs.
        ``progress(done, total)``: the events written so far, after each ``batch``."""
        return audit_access.archive(self._ctx, before, path, actor=actor, batch=batch, progress=progress)

    def audit_verify_archive(self, paths: Sequence[str | os.PathLike[str]], *, with_database: bool = True,
                             expect_head: str | None = None) -> AuditArchiveCheck:
        """Verify archive files (MACs, order, completeness of each), and with the database
        (default) that they are the archivals it recorded, join each other, and end at the
        database chain's anchor — files + database prove the whole chain (``complete``)."""
        return audit_access.verify_archive(self._ctx, paths, with_database=with_database, expect_head=expect_head)

    # --- index --------------------------------------------------------------------------------

    def warm(self, collection: str | None = None, *, wait: bool = False) -> None:
        """Load (decrypt and index) one or every collection now instead of at its first search;
        ``wait=True`` also waits for approximate indexes being built in the background."""
        with self.store.read() as tx:
            rows = [collection_in(tx, collection)] if collection else list(tx.collections())
        for r in rows:
            idx = self.index.get(r.id, r.embedding_dim, r.model_id)
            if wait:
                idx.wait_for_build()

    def index_stats(self, collection: str) -> dict[str, Any]:
        col = self._col_row(collection)
        idx: CollectionVectors = self.index.get(col.id, col.embedding_dim, col.model_id)
        return idx.stats()
