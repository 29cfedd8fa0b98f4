"""``Gallery``: consented enrolment, purpose-bound 1:N identification, 1:1 against a subject,
erasure, consent management, retention purge and the audit log — over a :class:`Store` (the
database) and a :class:`GalleryIndex` (in-memory vector search kept in step with the store).

    >>> g = Gallery.open()                               # ./.facegate or $FACEGATE_DATA_DIR
    >>> g.create_collection("staff", purposes=["access"])
    >>> g.enroll("staff", "E1001", ["a.jpg", "b.jpg"], consent=ConsentSpec(["access"], evidence_ref="form-77"))
    >>> g.identify("staff", "door-cam.jpg", purpose="access").candidates

Probe images are never stored, enrolment photos are not stored, and templates are stored only
encrypted (see crypto.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import SUPPORTED_FMRS, calibration_for
from ..engine import Chosen
from ..errors import CalibrationError, FacegateError
from ..results import Face
from ..vision.subject import SubjectRule
from .audit import ARCHIVE_ACTION, AuditLog, row_to_event
from .audit import archive as _archive_audit
from .audit import verify_archive as _verify_audit_archive
from . import master_key as master_key_files
from .crypto import MASTER_KEY_ENV, Crypto, generate_key, load_master_key
from .errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    ConsentRequiredError,
    InvalidArgumentError,
    LivenessRequiredError,
    LockedError,
    MasterKeyMismatchError,
    MasterKeyMissingError,
    ModelMismatchError,
    PurposeNotAllowedError,
    PurposeRequiredError,
    SubjectNotFoundError,
)
from .index import CollectionIndex, GalleryIndex, IndexConfig
from .witness import WITNESS_FILE
from .keys import ApiKeys
from .names import check_name, lookup_forms
from sqlalchemy.engine import make_url

from .store import Store, StoreTx, _Duplicate, default_data_dir, sqlite_url
from .types import (
    AuditArchiveCheck,
    AuditArchiveReport,
    AuditEvent,
    AuditReport,
    Candidate,
    Collection,
    Consent,
    ConsentSpec,
    DuplicateMatch,
    EnrollResult,
    IdentifyResult,
    ImageOutcome,
    LIVENESS_OPERATIONS,
    LivenessOverride,
    MasterKeyRotation,
    PurgeItem,
    PurgeReport,
    QualityPolicy,
    Subject,
    SubjectVerifyResult,
    TemplateInfo,
    utcnow,
)

log = logging.getLogger("facegate.gallery")

LEGACY_NAMES_META = "legacy_invalid_names"  # written by migration 0006
AUDIT_ACTION_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
PURPOSE_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
DEFAULT_RETENTION_DAYS = 3 * 365
MAX_TEMPLATES_PER_SUBJECT = 20
DUPLICATE_IMAGE_COSINE = 0.98  # a new template this close to one of the subject's own is the same photo
MAX_TOP_K = 100
PURGE_LOCK_TTL = dt.timedelta(minutes=15)
CHANGE_FEED_KEEP = dt.timedelta(days=1)

# Used only when the calibration table has no entry for a model and the collection sets no
# explicit threshold; results say threshold_source="provisional". SFace: OpenCV Zoo's published
# cosine threshold (0.363, LFW) is too lenient for 1:N; 0.42 is the FMR 1e-4 point measured on
# faces-dev (src/facegate/data/calibration.json), kept here in case that table is replaced.
PROVISIONAL_THRESHOLDS: dict[str, float] = {"sface-2021dec-int8bq": 0.42}

ImageLike = Any
# What ``enroll``/``verify``/``identify`` take as ``liveness``: the id of the liveness session
# whose best frame is the image (the caller consumed it), or a supervised ``LivenessOverride``.
Liveness = str | LivenessOverride | None
LIVENESS_SESSION_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _liveness_ops(ops: Iterable[str] | str | None) -> tuple[str, ...]:
    """Normalise a collection's ``liveness_required``: a subset of LIVENESS_OPERATIONS, in that
    order (a comma-separated string is accepted too)."""
    if ops is None:
        return ()
    if isinstance(ops, str):
        ops = ops.split(",")
    given = {str(o).strip().lower() for o in ops if str(o).strip()}
    given.discard("none")
    bad = sorted(given - set(LIVENESS_OPERATIONS))
    if bad:
        raise InvalidArgumentError(f"liveness can be required for {', '.join(LIVENESS_OPERATIONS)} only, not {', '.join(bad)}",
                                   allowed=list(LIVENESS_OPERATIONS))
    return tuple(o for o in LIVENESS_OPERATIONS if o in given)


def _liveness_details(liveness: Liveness) -> dict[str, Any]:
    """What the operation's audit event records about liveness (never an image)."""
    if liveness is None:
        return {}
    if isinstance(liveness, LivenessOverride):
        return {"liveness": "override", "liveness_override_reason": liveness.reason}
    return {"liveness": "session", "liveness_session": liveness}


def _image_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    if isinstance(images, (str, Path, bytes, bytearray, np.ndarray, Chosen)) or hasattr(images, "getbands"):
        return [images]
    return list(images)


def _source(image: ImageLike, i: int) -> str:
    if isinstance(image, Chosen):
        image = image.image
    return str(image) if isinstance(image, (str, Path)) else f"image[{i}]"


def _subject_row(tx: StoreTx, cid: int, subject: str) -> Any:
    """The stored subject ``subject`` names: exactly (rows created before names.py's rule), else
    its NFC form (how new names are stored)."""
    for form in lookup_forms(subject):
        row = tx.subject(cid, form)
        if row is not None:
            return row
    return None


def _aware(t: dt.datetime | None, what: str) -> dt.datetime | None:
    if t is not None and t.tzinfo is None:
        raise InvalidArgumentError(f"{what} must be timezone-aware (UTC)")
    return t


def _audit_legacy_names(st: Store, audit: AuditLog) -> None:
    """Record once in the audit log the names migration 0006 found invalid (kept for erasure)."""
    with st.read() as tx:  # the common case: nothing to record, no write lock taken
        if tx.get_meta(LEGACY_NAMES_META) is None:
            return
    with st.write() as tx:
        found = tx.get_meta(LEGACY_NAMES_META)
        if found is None:
            return
        items = json.loads(found)
        audit.append(tx, actor="migration", action="store.names_check", now=utcnow(), decision="invalid_names_kept",
                     subjects=[i["name"] for i in items if i["kind"] == "subject"][:100],
                     details={"count": len(items), "names": items[:100]})
        tx.delete_meta(LEGACY_NAMES_META)


def open_database(data_dir: str | Path | None = None, *, store: str | None = None,
                  durability: str = "normal") -> tuple[Store, Path]:
    """The gallery database, opened and migrated, and its data directory (where the master key
    and the audit witness live), found as ``Gallery.open`` finds them: ``store`` (default
    $FACEGATE_STORE, else sqlite:///<data_dir>/gallery.db); ``data_dir`` (default
    $FACEGATE_DATA_DIR, else the SQLite file's directory, else ./.facegate). ``data_dir`` may
    also be the URL itself."""
    if isinstance(data_dir, str) and ("://" in data_dir or data_dir == "embedded-postgres"):
        store, data_dir = store or data_dir, None
    url = store or os.environ.get("FACEGATE_STORE") or os.environ.get("FACEGATE_DATABASE_URL") or None
    if data_dir is not None:
        ddir = Path(data_dir)
    elif url is not None and url.startswith("sqlite") and "FACEGATE_DATA_DIR" not in os.environ:
        db = make_url(url).database
        ddir = Path(db).resolve().parent if db and db != ":memory:" else default_data_dir()  # key beside the file
    else:
        ddir = default_data_dir()
    if url is None or url.startswith("sqlite"):
        ddir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if url is not None and not url.startswith("sqlite"):
        from .pg import open_store  # issue 6: "postgresql://…" or "embedded-postgres"

        st = open_store(url, data_dir=ddir, durability=durability)
    else:
        st = Store(url or sqlite_url(ddir), durability=durability)
    try:
        st.migrate()
    except BaseException:
        st.close()
        raise
    return st, ddir


def open_master_key(st: Store, ddir: Path, master_key: bytes | str | None = None) -> Crypto:
    """The store's current master key (``master_key``, else $FACEGATE_MASTER_KEY, else
    ``<ddir>/master.key``, created for a new store, checked against the store's key id), as a
    ``Crypto`` whose ``latest_id`` reads the key id now on record, so that it follows a rotation
    made by another process."""
    crypto = Gallery._master(st, ddir, master_key)
    crypto.latest_id = lambda: master_key_files._current_id(st)
    return crypto


class Gallery:
    """Thread-safe; open one per process and share it (the REST service and the CLI do)."""

    def __init__(
        self,
        store: Store,
        crypto: Crypto,
        audit: AuditLog,
        *,
        data_dir: Path | None,
        engine: Any = None,
        allow_noncommercial: bool = False,
        index_config: IndexConfig | None = None,
    ) -> None:
        self.store = store
        self.crypto = crypto
        self.audit = audit
        self.data_dir = data_dir
        # A backend may bring its own search (issue 6: PostgreSQL searches in the database).
        self.index = store.make_index(crypto, index_config) if hasattr(store, "make_index") else GalleryIndex(store, crypto, index_config)
        self.keys = ApiKeys(store, audit)
        if crypto.latest_id is None:  # an unwrap that fails checks whether another process rotated the key
            crypto.latest_id = lambda: master_key_files._current_id(store)
        self._engine = engine
        self._engines: dict[str, Any] = {}
        self._engine_lock = threading.Lock()
        self._allow_nc = allow_noncommercial

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | Path | None = None,
        *,
        store: str | None = None,
        engine: Any = None,
        master_key: bytes | str | None = None,
        allow_noncommercial: bool = False,
        durability: str = "normal",
        index_config: IndexConfig | None = None,
    ) -> "Gallery":
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
            crypto = open_master_key(st, ddir, master_key)
            with st.read() as tx:
                entry = tx.get_keyring("audit-mac")
            audit = AuditLog(crypto.unwrap(entry.wrapped, b"keyring|audit-mac"), witness_path=ddir / WITNESS_FILE)
            _audit_legacy_names(st, audit)
        except BaseException:
            st.close()
            raise
        return cls(st, crypto, audit, data_dir=ddir, engine=engine, allow_noncommercial=allow_noncommercial,
                   index_config=index_config)

    @staticmethod
    def _master(st: Store, ddir: Path, master_key: bytes | str | None) -> Crypto:
        with st.read() as tx:
            known = tx.get_meta("master_key_id")
            previous, rotated_at = tx.get_meta("master_key_previous_id"), tx.get_meta("master_key_rotated_at")
        from_file = master_key is None and not os.environ.get(MASTER_KEY_ENV)
        reload = (lambda kid: master_key_files.load_for_store(ddir, kid)[0]) if from_file else None
        if known is None:
            loaded = load_master_key(ddir, explicit=master_key, create=True)
            assert loaded is not None
            crypto = Crypto(loaded[0], source=loaded[1], reload=reload)
            now = utcnow()
            with st.write() as tx:
                known = tx.get_meta("master_key_id")
                if known is None:
                    tx.set_meta("master_key_id", crypto.master_key_id)
                    tx.set_meta("created_at", now.isoformat())
                    tx.set_meta("deployment_id", uuid.uuid4().hex)
                    tx.put_keyring("audit-mac", crypto.master_key_id, crypto.wrap(generate_key(), b"keyring|audit-mac"), now)
                    return crypto
        if from_file:  # master.key, or master.key.new after a rotation killed before its rename
            key, path = master_key_files.load_for_store(ddir, known, previous_id=previous, rotated_at=rotated_at)
            if path.endswith(master_key_files.NEW_KEY_FILE):
                master_key_files.finish_if_free(ddir, known)
            return Crypto(key, source=str(ddir / "master.key"), reload=reload)
        loaded = load_master_key(ddir, explicit=master_key, create=False)
        if loaded is None:
            raise MasterKeyMissingError(
                f"this store's templates are encrypted under master key {known}, but no master key was found "
                f"(set $FACEGATE_MASTER_KEY or restore {ddir / 'master.key'})"
            )
        crypto = Crypto(loaded[0], source=loaded[1])
        if crypto.master_key_id != known:
            raise MasterKeyMismatchError(
                master_key_files.mismatch_message(loaded[1], crypto.master_key_id, known, previous, rotated_at)
            )
        return crypto

    def _key_current(self, tx: StoreTx) -> None:
        """Inside a write transaction that wraps or unwraps keys: follow a master-key rotation
        committed by another process (the write lock keeps another from committing meanwhile)."""
        self.crypto.ensure(tx.get_meta("master_key_id"))

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

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- engines and thresholds ---------------------------------------------------------------

    def _engine_for(self, col: Any) -> Any:
        eng = self._engine
        if eng is None:
            with self._engine_lock:
                eng = self._engines.get(col.model_id)
                if eng is None:
                    from ..engine import FaceEngine

                    eng = self._engines[col.model_id] = FaceEngine(col.model_id, allow_noncommercial=self._allow_nc)
        if eng.spec.id != col.model_id or eng.spec.sha256 != col.model_sha256:
            raise ModelMismatchError(
                f"collection {col.name!r} is pinned to model {col.model_id} (sha256 {col.model_sha256[:12]}…); "
                f"the engine runs {eng.spec.id} (sha256 {eng.spec.sha256[:12]}…). Templates of two models never mix: "
                "use the pinned model or re-enrol into a new collection",
                collection=col.name, pinned=col.model_id, engine=eng.spec.id,
            )
        return eng

    @staticmethod
    def _threshold(model_id: str, fmr: float, explicit: float | None) -> tuple[float, str]:
        if explicit is not None:
            return float(explicit), "explicit"
        try:
            return calibration_for(model_id).threshold(fmr), "calibration"
        except CalibrationError:
            if model_id in PROVISIONAL_THRESHOLDS:
                return PROVISIONAL_THRESHOLDS[model_id], "provisional"
            raise

    def _collection_obj(self, row: Any, counts: tuple[int, int] | None = None) -> Collection:
        thr, src = self._threshold(row.model_id, row.fmr, row.threshold)
        return Collection(
            name=row.name, model_id=row.model_id, model_sha256=row.model_sha256, embedding_dim=row.embedding_dim,
            purposes=tuple(row.purposes), fmr=row.fmr, threshold=thr, threshold_source=src,
            retention_days=row.retention_days, created_at=row.created_at,
            quality_policy=QualityPolicy.from_dict(row.quality_policy), description=row.description,
            subjects=None if counts is None else counts[0], templates=None if counts is None else counts[1],
            liveness_required=tuple(getattr(row, "liveness_required", None) or ()),
        )

    def _liveness_gate(self, col: Any, operation: str, liveness: Liveness, *, actor: str, subjects: Sequence[str] = (),
                       purpose: str | None = None) -> dict[str, Any]:
        """THE enforcement of ``Collection.liveness_required`` (the CLI and the service both come
        through here). Returns the audit details for the operation's event; raises
        LivenessRequiredError (and audits the refusal) when the collection requires liveness for
        ``operation`` and neither a session id nor an explicit override was given.

        A session id is trusted as "the image is that session's best frame, consumed by the
        caller": the gallery's callers are the service (which passes only the id of the session
        it has just consumed itself) and in-process library code (which holds the database and
        master key anyway)."""
        if liveness is not None and not isinstance(liveness, LivenessOverride):
            if not isinstance(liveness, str) or not LIVENESS_SESSION_RE.match(liveness):
                raise InvalidArgumentError("liveness must be a liveness session id (1–128 of A-Z a-z 0-9 _.:-) or a LivenessOverride")
        required = operation in (getattr(col, "liveness_required", None) or ())
        if required and liveness is None:
            with self.store.write() as tx:
                self.audit.append(tx, actor=actor, action=operation, now=utcnow(), collection=col.name, subjects=list(subjects),
                                  purpose=purpose, decision="refused_liveness_required",
                                  details={"liveness_required": list(col.liveness_required)})
            raise LivenessRequiredError(
                f"collection {col.name!r} requires a passed liveness check for {operation}: run a liveness session "
                "and send its id (liveness_session) instead of an image",
                collection=col.name, operation=operation,
            )
        return _liveness_details(liveness)

    # --- collections --------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        purposes: Iterable[str],
        model: str | None = None,
        fmr: float = 1e-4,
        threshold: float | None = None,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        quality_policy: QualityPolicy | None = None,
        description: str | None = None,
        liveness_required: Iterable[str] | str | None = (),
        actor: str = "library",
    ) -> Collection:
        """A new collection pinned to ``model`` (id and weights sha256; default: the gallery's
        engine's model, else sface). ``liveness_required``: operations of ("enroll", "verify",
        "identify") that need a passed liveness check (see ``set_collection_liveness``)."""
        from ..models import embedder_spec

        name = check_name("collection", name)
        purposes = tuple(dict.fromkeys(p.strip() for p in purposes if p.strip()))
        if not purposes:
            raise InvalidArgumentError("a collection needs at least one allowed purpose")
        bad = [p for p in purposes if not PURPOSE_RE.match(p)]
        if bad:
            raise InvalidArgumentError(f"invalid purpose(s) {', '.join(bad)}: lower-case letters, digits, _.:- (max 64)")
        if not (0 < fmr < 1):
            raise InvalidArgumentError("fmr must be in (0, 1)")
        if threshold is None and not any(abs(fmr - f) <= 1e-12 for f in SUPPORTED_FMRS):
            raise InvalidArgumentError(f"fmr must be one of {', '.join(f'{f:g}' for f in SUPPORTED_FMRS)} (or give an explicit threshold)")
        if threshold is not None and not (-1.0 <= threshold <= 1.0):
            raise InvalidArgumentError("threshold is a cosine similarity in [-1, 1]")
        if not (1 <= int(retention_days) <= 36500):
            raise InvalidArgumentError("retention_days must be between 1 and 36500")
        live_ops = _liveness_ops(liveness_required)
        if model is None:
            spec = self._engine.spec if self._engine is not None else embedder_spec("sface")
        else:
            import warnings

            from ..models import NonCommercialModelWarning

            with warnings.catch_warnings():  # pinning only: loading the weights still needs the opt-in and warns
                warnings.simplefilter("ignore", NonCommercialModelWarning)
                spec = embedder_spec(model, allow_noncommercial=True)
        self._threshold(spec.id, fmr, threshold)  # fail now, not at the first search
        now = utcnow()
        policy = quality_policy or QualityPolicy()
        try:
            with self.store.write() as tx:
                self._key_current(tx)
                if tx.collection_by_name(name) is not None:
                    raise CollectionExistsError(f"collection {name!r} already exists", collection=name)
                cid = tx.insert_collection(
                    name=name, model_id=spec.id, model_sha256=spec.sha256, embedding_dim=int(spec.embedding_dim),
                    purposes=list(purposes), fmr=float(fmr), threshold=threshold, retention_days=int(retention_days),
                    quality_policy=policy.to_dict(), description=description, created_at=now,
                    liveness_required=list(live_ops),
                )
                tx.add_change(cid, None, "collection", now)
                self.audit.append(tx, actor=actor, action="collection.create", now=now, collection=name,
                                  details={"model": spec.id, "purposes": list(purposes), "fmr": fmr, "threshold": threshold,
                                           "retention_days": int(retention_days), "liveness_required": list(live_ops)})
                row = tx.collection_by_id(cid)
        except _Duplicate:
            raise CollectionExistsError(f"collection {name!r} already exists", collection=name) from None
        return self._collection_obj(row, (0, 0))

    def set_collection_liveness(self, name: str, operations: Iterable[str] | str | None, *,
                                actor: str = "library") -> Collection:
        """Set which operations of the collection need a passed liveness check: a subset of
        ("enroll", "verify", "identify"); empty turns the requirement off. Effective for the
        next call in every process (the setting is read from the database on each operation).
        Audited as ``collection.update`` with the old and new setting."""
        ops = _liveness_ops(operations)
        now = utcnow()
        with self.store.write() as tx:
            row = self._col(tx, name)
            before = list(row.liveness_required or [])
            tx.update_collection(row.id, liveness_required=list(ops))
            self.audit.append(tx, actor=actor, action="collection.update", now=now, collection=name,
                              decision="updated", details={"liveness_required": list(ops), "previous": before})
            row = tx.collection_by_id(row.id)
            return self._collection_obj(row, tx.collection_counts(row.id))

    def list_collections(self) -> list[Collection]:
        with self.store.read() as tx:
            return [self._collection_obj(r, tx.collection_counts(r.id)) for r in tx.collections()]

    def get_collection(self, name: str) -> Collection:
        with self.store.read() as tx:
            row = self._col(tx, name)
            return self._collection_obj(row, tx.collection_counts(row.id))

    @staticmethod
    def _col(tx: StoreTx, name: str) -> Any:
        row = tx.collection_by_name(name)
        if row is None:
            raise CollectionNotFoundError(f"no collection named {name!r}", collection=name)
        return row

    def _col_row(self, name: str) -> Any:
        with self.store.read() as tx:
            return self._col(tx, name)

    def delete_collection(self, name: str, *, actor: str = "library") -> int:
        """Erase every subject of the collection, then the collection. Returns subjects erased."""
        now = utcnow()
        with self.store.write() as tx:
            row = self._col(tx, name)
            subjects = tx.collection_subjects(row.id)
            n_sub, n_tpl = tx.collection_counts(row.id)
            for s in subjects:
                self.audit.append(tx, actor=actor, action="subject.erase", now=now, collection=name, subjects=[s.external_id],
                                  decision="erased", details={"reason": "collection_deleted"})
            tx.delete_collection(row.id)
            tx.add_change(row.id, None, "collection", now)
            self.audit.append(tx, actor=actor, action="collection.delete", now=now, collection=name, decision="deleted",
                              details={"subjects": n_sub, "templates": n_tpl})
        self.index.drop(row.id)
        self.store.checkpoint()
        return n_sub

    # --- purpose / consent helpers ------------------------------------------------------------

    @staticmethod
    def _check_purpose(col: Any, purpose: str | None) -> str:
        if not purpose:
            raise PurposeRequiredError("a declared purpose is required for identification and verification")
        if purpose not in col.purposes:
            raise PurposeNotAllowedError(
                f"purpose {purpose!r} is not allowed in collection {col.name!r} (allowed: {', '.join(col.purposes)})",
                purpose=purpose, allowed=list(col.purposes),
            )
        return purpose

    @staticmethod
    def _check_consent_spec(col: Any, consent: ConsentSpec) -> ConsentSpec:
        if not isinstance(consent, ConsentSpec):
            raise InvalidArgumentError("consent must be a ConsentSpec")
        if not consent.purposes:
            raise InvalidArgumentError("a consent must name at least one purpose")
        bad = [p for p in consent.purposes if p not in col.purposes]
        if bad:
            raise PurposeNotAllowedError(
                f"purpose(s) {', '.join(bad)} not allowed in collection {col.name!r} (allowed: {', '.join(col.purposes)})",
                purpose=bad, allowed=list(col.purposes),
            )
        _aware(consent.expires_at, "consent expires_at")
        _aware(consent.granted_at, "consent granted_at")
        now = utcnow()
        if consent.granted_at is not None and consent.granted_at > now + dt.timedelta(minutes=5):
            raise InvalidArgumentError("consent granted_at lies in the future")
        if consent.expires_at is not None and consent.expires_at <= (consent.granted_at or now):
            raise InvalidArgumentError("consent expires_at must be after it was granted")
        if consent.evidence_ref is not None and len(consent.evidence_ref) > 512:
            raise InvalidArgumentError("evidence_ref is at most 512 characters (a reference, not the document)")
        return consent

    @staticmethod
    def _consent_rows(sid: int, consent: ConsentSpec, actor: str, now: dt.datetime) -> list[dict[str, Any]]:
        granted = min(consent.granted_at or now, now)
        return [
            dict(subject_id=sid, purpose=p, granted_at=granted, expires_at=consent.expires_at, evidence_ref=consent.evidence_ref,
                 withdrawn_at=None, actor=actor)
            for p in consent.purposes
        ]

    # --- enrolment ----------------------------------------------------------------------------

    def _gate(self, engine: Any, image: ImageLike, policy: QualityPolicy) -> tuple[Face | None, str | None, str | None]:
        """The subject face (or the face a ``Chosen`` image names) if it passes the enrolment
        quality gate, else (face?, reason, message)."""
        if isinstance(image, Chosen):
            # The operator named the face: no subject rule to apply, only the quality gate.
            try:
                chosen = engine.face(image)
            except FacegateError as exc:
                return None, exc.code, exc.message
            failures = policy.failures(chosen.quality)
            return (chosen, *failures[0]) if failures else (chosen, None, None)
        try:
            # The engine's subject rule with this collection's margin on top: an enrolment photo
            # must show one clear subject (a wrong-person template harms every later search).
            faces, subject = engine.detect_subject(image, SubjectRule(margin=policy.max_second_face_ratio))
        except FacegateError as exc:
            return None, exc.code, exc.message
        if isinstance(subject, FacegateError):
            message = "no face found" if not faces else f"{len(faces)} faces; enrol photos must show one clear subject"
            return (faces[0] if faces else None), subject.code, message
        failures = policy.failures(subject.quality)
        if failures:
            return subject, *failures[0]
        return subject, None, None

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
        """
        subject = check_name("subject", subject)
        if label is not None and len(label) > 256:
            raise InvalidArgumentError("label is at most 256 characters")
        if force_mismatch is not None and not (0 < len(force_mismatch.strip()) <= 256):
            raise InvalidArgumentError("force_mismatch is the reason for accepting a mismatching face: 1–256 characters")
        col = self._col_row(collection)
        if dedup_purpose is not None:
            self._check_purpose(col, dedup_purpose)
        live_details = self._liveness_gate(col, "enroll", liveness, actor=actor, subjects=[subject])
        engine = self._engine_for(col)
        if consent is not None:
            self._check_consent_spec(col, consent)
        now = utcnow()
        with self.store.read() as tx:
            existing = _subject_row(tx, col.id, subject)
            has_active = existing is not None and bool(tx.active_consent_subjects([existing.id], None, now))
            n_existing = tx.count_templates(existing.id) if existing is not None else 0
        if consent is None and not has_active:
            raise ConsentRequiredError(
                f"enrolling {subject!r} needs an active consent: pass consent=ConsentSpec([...purposes], evidence_ref=...)",
                subject=subject,
            )
        policy = QualityPolicy.from_dict(col.quality_policy)
        thr, _src = self._threshold(col.model_id, col.fmr, col.threshold)
        imgs = _image_list(images)
        if not imgs:
            raise InvalidArgumentError("no images given")

        gated = [self._gate(engine, img, policy) for img in imgs]
        ok_idx = [i for i, (f, reason, _m) in enumerate(gated) if reason is None]
        embeddings = engine.embed_faces([gated[i][0] for i in ok_idx]) if ok_idx else []
        vec_of = {i: e.vector.astype(np.float32) for i, e in zip(ok_idx, embeddings)}

        idx = self.index.get(col.id, col.embedding_dim, col.model_id)
        own = np.zeros((0, col.embedding_dim), np.float32)
        if existing is not None:
            with idx.lock.read():
                own = idx.subject_vectors(existing.id)
        outcomes: dict[int, ImageOutcome] = {}
        kept: list[int] = []
        mismatches: list[dict[str, Any]] = []
        room = MAX_TEMPLATES_PER_SUBJECT - n_existing
        for i, (face, reason, msg) in enumerate(gated):
            src = _source(imgs[i], i)
            if reason is not None:
                outcomes[i] = ImageOutcome(i, src, False, reason, msg, face)
                continue
            v = vec_of[i]
            prior = np.vstack([own] + [vec_of[j][None] for j in kept]) if (len(own) or kept) else own
            best = float((prior @ v).max()) if len(prior) else None
            if best is not None and best >= DUPLICATE_IMAGE_COSINE:
                outcomes[i] = ImageOutcome(i, src, False, "duplicate_image", "the same photo (or a near copy) is already enrolled", face)
                continue
            if best is not None and best < thr:
                mismatches.append({"index": i, "score": round(best, 6)})
                if force_mismatch is None:
                    outcomes[i] = ImageOutcome(i, src, False, "face_mismatch",
                                               "this face does not match the subject's enrolled face(s); an admin can force it "
                                               "with a stated reason", face)
                    continue
            if len(kept) >= room:
                outcomes[i] = ImageOutcome(i, src, False, "template_limit", f"a subject keeps at most {MAX_TEMPLATES_PER_SUBJECT} templates", face)
                continue
            dups = self._duplicates(idx, col, v, dedup_purpose, thr, now, existing, subject) if dedup_purpose else ()
            outcomes[i] = ImageOutcome(i, src, True, None, None, face, None, dups)
            kept.append(i)

        created = False
        consents_out: tuple[Consent, ...] = ()
        with self.store.write() as tx:
            self._key_current(tx)
            col = self._col(tx, collection)
            s = tx.subject(col.id, subject)
            if s is None and kept:
                if consent is None:
                    raise ConsentRequiredError(f"subject {subject!r} was erased meanwhile; enrolment needs a consent", subject=subject)
                _dek, wrapped = self.crypto.new_subject_key(col.id, subject)
                try:
                    sid = tx.insert_subject(collection_id=col.id, external_id=subject, label=label, created_at=now,
                                            last_seen_at=now, wrapped_key=wrapped, master_key_id=self.crypto.master_key_id)
                except _Duplicate:  # pragma: no cover - serialised by the write lock
                    raise
                s = tx.subject(col.id, subject)
                created = True
            elif s is not None and consent is None and not tx.active_consent_subjects([s.id], None, now):
                raise ConsentRequiredError(f"subject {subject!r} has no active consent; pass a new consent", subject=subject)
            if s is not None:
                sid = s.id
                cipher = self.crypto.subject_key(s.wrapped_key, col.id, subject)
                if consent is not None:
                    tx.insert_consents(self._consent_rows(sid, consent, actor, now))
                for i in kept:
                    nonce, ct = cipher.encrypt(vec_of[i], col.model_id)
                    q = gated[i][0].quality.to_dict()  # type: ignore[union-attr]
                    tid = tx.insert_template(subject_id=sid, collection_id=col.id, model_id=col.model_id, nonce=nonce,
                                             ciphertext=ct, quality=q, created_at=now)
                    o = outcomes[i]
                    outcomes[i] = ImageOutcome(o.index, o.source, True, None, None, o.face, tid, o.duplicates)
                values: dict[str, Any] = {"last_seen_at": now}
                if label is not None:
                    values["label"] = label
                tx.update_subject(sid, **values)
                tx.add_change(col.id, sid, "subject", now)
                consents_out = tuple(self._consent(r) for r in tx.consents_of([sid]))
            result = EnrollResult(collection, subject, created, tuple(outcomes[i] for i in range(len(imgs))), consents_out)
            found = result.duplicates
            dups = [d.subject for d in found]
            forced = [m for m in mismatches if outcomes[m["index"]].accepted]
            self.audit.append(
                tx, actor=actor, action="enroll", now=now, collection=collection, subjects=[subject, *dups],
                decision="enrolled" if result.accepted else "rejected",
                score=max((d.score for d in found), default=None),
                details={"accepted": result.accepted, "rejected": result.rejected, "created": created,
                         "reasons": sorted({o.reason for o in result.images if o.reason}),
                         "consent_purposes": list(consent.purposes) if consent else [],
                         "dedup_purpose": dedup_purpose, "duplicates": dups,
                         "duplicate_scores": [round(d.score, 6) for d in found],
                         "flagged_for_review": bool(found), "duplicates_disclosed": bool(found) and disclose_duplicates,
                         **({"face_mismatch": mismatches} if mismatches else {}),
                         **({"forced_mismatch": force_mismatch.strip()} if forced else {}),
                         **live_details},
            )
        self.index.sync()
        return result if disclose_duplicates else result.undisclosed()

    def _duplicates(self, idx: Any, col: Any, v: np.ndarray, purpose: str, thr: float, now: dt.datetime,
                    existing: Any, subject: str) -> tuple[DuplicateMatch, ...]:
        """Other subjects ``v`` matches above the threshold among those whose active consent
        covers ``purpose`` — the same rule as ``identify`` (index filter, then the store)."""
        hits, _n = idx.search(v, 3, purpose, now.timestamp(), exclude_subject=None if existing is None else existing.id)
        above = [h for h in hits if h.score >= thr and h.external_id != subject]
        if not above:
            return ()
        with self.store.read() as tx:
            confirmed = tx.active_consent_subjects([h.subject_id for h in above], purpose, now)
        return tuple(DuplicateMatch(h.external_id, h.score) for h in above if h.subject_id in confirmed)

    def import_templates(
        self,
        collection: str,
        items: Iterable[tuple[str, np.ndarray, ConsentSpec | None]],
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
        col = self._col_row(collection)
        if model_id != col.model_id:
            raise ModelMismatchError(
                f"collection {collection!r} is pinned to {col.model_id}; refusing templates of {model_id}",
                collection=collection, pinned=col.model_id, given=model_id,
            )
        total = 0
        buf: list[tuple[str, np.ndarray, ConsentSpec | None]] = []

        def flush() -> None:
            nonlocal total
            if not buf:
                return
            now = utcnow()
            with self.store.write() as tx:
                self._key_current(tx)
                c = self._col(tx, collection)
                exts = [e for e, _v, _c in buf]
                if len(set(exts)) != len(exts):
                    raise InvalidArgumentError("a subject appears twice in one import batch")
                have = tx.subjects_by_external(c.id, exts)
                new_rows = []
                ciphers = {}
                for ext, _v, cons in buf:
                    if ext in have:
                        continue
                    if cons is None:
                        raise ConsentRequiredError(f"new subject {ext!r} needs a consent", subject=ext)
                    dek, wrapped = self.crypto.new_subject_key(c.id, ext)
                    from .crypto import SubjectCipher

                    ciphers[ext] = SubjectCipher(dek, c.id, ext)
                    new_rows.append(dict(collection_id=c.id, external_id=ext, label=None, created_at=now, last_seen_at=now,
                                         wrapped_key=wrapped, master_key_id=self.crypto.master_key_id))
                tx.insert_subjects_many(new_rows)
                have = tx.subjects_by_external(c.id, exts)
                consent_rows: list[dict[str, Any]] = []
                tpl_rows: list[dict[str, Any]] = []
                for ext, vecs, cons in buf:
                    s = have[ext]
                    cipher = ciphers.get(ext) or self.crypto.subject_key(s.wrapped_key, c.id, ext)
                    if cons is not None:
                        self._check_consent_spec(c, cons)
                        consent_rows.extend(self._consent_rows(s.id, cons, actor, now))
                    V = np.asarray(vecs, np.float32).reshape(-1, c.embedding_dim)
                    V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
                    for v in V:
                        nonce, ct = cipher.encrypt(v, c.model_id)
                        tpl_rows.append(dict(subject_id=s.id, collection_id=c.id, model_id=c.model_id, nonce=nonce,
                                             ciphertext=ct, quality={}, created_at=now))
                tx.insert_consents(consent_rows)
                tx.insert_templates_many(tpl_rows)
                tx.add_changes_many(c.id, [have[e].id for e in exts], "subject", now)
                self.audit.append(tx, actor=actor, action="enroll.import", now=now, collection=collection, subjects=exts,
                                  decision="enrolled", details={"templates": len(tpl_rows), "model": model_id})
                total += len(tpl_rows)
            buf.clear()

        for ext, vecs, cons in items:
            buf.append((check_name("subject", ext), vecs, cons))
            if len(buf) >= batch:
                flush()
        flush()
        self.index.sync()
        return total

    # --- search -------------------------------------------------------------------------------

    def identify(
        self, collection: str, image: ImageLike, *, purpose: str, top_k: int = 5, liveness: Liveness = None,
        actor: str = "library",
    ) -> IdentifyResult:
        """Who is this? Candidates at or above the collection's threshold among subjects whose
        consent covers ``purpose`` right now, best first (empty: no match). The probe is not stored.
        ``liveness`` as in ``enroll`` (required when the collection requires it for identify)."""
        if not (1 <= int(top_k) <= MAX_TOP_K):
            raise InvalidArgumentError(f"top_k must be between 1 and {MAX_TOP_K}")
        col = self._col_row(collection)
        self._check_purpose(col, purpose)
        live_details = self._liveness_gate(col, "identify", liveness, actor=actor, purpose=purpose)
        engine = self._engine_for(col)
        emb = engine.embed(image)
        return self._identify_vector(col, emb.vector, emb.face, purpose, int(top_k), actor, live_details)

    def identify_vector(self, collection: str, vector: np.ndarray, *, purpose: str, top_k: int = 5,
                        model_id: str, liveness: Liveness = None, actor: str = "library") -> IdentifyResult:
        """``identify`` for a template computed elsewhere (same model required; the collection's
        liveness requirement applies as to ``identify``)."""
        col = self._col_row(collection)
        self._check_purpose(col, purpose)
        live_details = self._liveness_gate(col, "identify", liveness, actor=actor, purpose=purpose)
        if model_id != col.model_id:
            raise ModelMismatchError(f"collection {collection!r} is pinned to {col.model_id}, not {model_id}")
        from ..results import Quality

        face = Face((0, 0, 0, 0), (), 0.0, Quality(0, 0, 0, 0, 0, 0, 0, 0))
        return self._identify_vector(col, np.asarray(vector, np.float32), face, purpose, int(top_k), actor, live_details)

    def _identify_vector(self, col: Any, vector: np.ndarray, face: Face, purpose: str, top_k: int, actor: str,
                         live_details: dict[str, Any] | None = None) -> IdentifyResult:
        thr, _src = self._threshold(col.model_id, col.fmr, col.threshold)
        now = utcnow()
        idx = self.index.get(col.id, col.embedding_dim, col.model_id)
        hits, searched = idx.search(vector, top_k + 2, purpose, now.timestamp())
        above = [h for h in hits if h.score >= thr]
        best = hits[0].score if hits else None
        with self.store.write() as tx:
            confirmed = tx.active_consent_subjects([h.subject_id for h in above], purpose, now) if above else set()
            above = [h for h in above if h.subject_id in confirmed][:top_k]
            tx.touch_subjects([h.subject_id for h in above], now)
            self.audit.append(
                tx, actor=actor, action="identify", now=now, collection=col.name, subjects=[h.external_id for h in above],
                purpose=purpose, decision="match" if above else "no_match", score=above[0].score if above else best,
                details={"top_k": top_k, "candidates": len(above), "searched_subjects": searched, "threshold": round(thr, 6),
                         **(live_details or {})},
            )
        cands = tuple(Candidate(h.external_id, h.label, h.score, r) for r, h in enumerate(above, 1))
        return IdentifyResult(col.name, purpose, cands, thr, col.fmr, col.model_id, face, searched)

    def verify(
        self, collection: str, subject: str, image: ImageLike, *, purpose: str, liveness: Liveness = None,
        actor: str = "library",
    ) -> SubjectVerifyResult:
        """1:1: is the person in ``image`` the enrolled ``subject``? Best score over the subject's
        templates against the collection threshold. ConsentRequiredError if the subject's
        consent does not cover ``purpose`` now. ``liveness`` as in ``enroll`` (required when the
        collection requires it for verify)."""
        col = self._col_row(collection)
        self._check_purpose(col, purpose)
        live_details = self._liveness_gate(col, "verify", liveness, actor=actor, subjects=[subject], purpose=purpose)
        engine = self._engine_for(col)
        now = utcnow()
        with self.store.read() as tx:
            s = _subject_row(tx, col.id, subject)
            ok = s is not None and bool(tx.active_consent_subjects([s.id], purpose, now))
        if s is None:
            raise SubjectNotFoundError(f"no subject {subject!r} in collection {collection!r}", subject=subject)
        if not ok:
            with self.store.write() as tx:
                self.audit.append(tx, actor=actor, action="verify", now=now, collection=collection, subjects=[subject],
                                  purpose=purpose, decision="refused_no_consent")
            raise ConsentRequiredError(f"subject {subject!r} has no active consent for purpose {purpose!r}",
                                       subject=subject, purpose=purpose)
        emb = engine.embed(image)
        thr, _src = self._threshold(col.model_id, col.fmr, col.threshold)
        idx = self.index.get(col.id, col.embedding_dim, col.model_id)
        with idx.lock.read():
            V = idx.subject_vectors(s.id)
        score = float((V @ emb.vector.astype(np.float32)).max()) if len(V) else -1.0
        match = score >= thr
        with self.store.write() as tx:
            if match:
                tx.touch_subjects([s.id], now)
            self.audit.append(tx, actor=actor, action="verify", now=now, collection=collection, subjects=[subject],
                              purpose=purpose, decision="match" if match else "no_match", score=score,
                              details={"threshold": round(thr, 6), "templates": int(len(V)), **live_details})
        return SubjectVerifyResult(collection, subject, purpose, match, score, thr, col.fmr, col.model_id, emb.face)

    # --- subjects -----------------------------------------------------------------------------

    @staticmethod
    def _consent(r: Any) -> Consent:
        return Consent(r.purpose, r.granted_at, r.expires_at, r.evidence_ref, r.withdrawn_at, r.actor)

    def _subject_obj(self, tx: StoreTx, collection: str, row: Any, *, templates: bool = True) -> Subject:
        consents = tuple(self._consent(r) for r in tx.consents_of([row.id]))
        tpls = tuple(TemplateInfo(t.id, t.model_id, t.created_at, dict(t.quality or {})) for t in tx.templates_meta(row.id)) if templates else ()
        return Subject(collection, row.external_id, row.label, row.created_at, row.last_seen_at, tpls, consents)

    def list_subjects(self, collection: str, *, limit: int = 100, offset: int = 0, purpose: str | None = None,
                      after: str | None = None) -> list[Subject]:
        """Subjects ordered by external id (``after`` for keyset paging); ``purpose`` keeps those
        whose consent covers it now."""
        if not (1 <= limit <= 10_000) or offset < 0:
            raise InvalidArgumentError("limit must be 1–10000 and offset ≥ 0")
        now = utcnow()
        with self.store.read() as tx:
            col = self._col(tx, collection)
            rows = tx.list_subjects(col.id, limit=limit, offset=offset, purpose=purpose, now=now, after=after)
            return [self._subject_obj(tx, collection, r) for r in rows]

    def count_subjects(self, collection: str, *, purpose: str | None = None) -> int:
        with self.store.read() as tx:
            return tx.count_subjects(self._col(tx, collection).id, purpose, utcnow())

    def get_subject(self, collection: str, subject: str) -> Subject:
        with self.store.read() as tx:
            col = self._col(tx, collection)
            row = _subject_row(tx, col.id, subject)
            if row is None:
                raise SubjectNotFoundError(f"no subject {subject!r} in collection {collection!r}", subject=subject)
            return self._subject_obj(tx, collection, row)

    def delete_subject(self, collection: str, subject: str, *, actor: str = "library", reason: str = "request") -> None:
        """Erase a subject: templates, consents and data key deleted in one transaction; every
        process's index drops it before its next search. An audit tombstone remains.

        Erasure is immediate for the live store. For backups it completes at the next master-key
        rotation (``rotate_master_key``, or ``purge(rotate_master_key=True)`` from cron): a
        backup taken before this call still holds the wrapped data key, which the current master
        key opens until it is rotated away."""
        now = utcnow()
        with self.store.write() as tx:
            col = self._col(tx, collection)
            row = _subject_row(tx, col.id, subject)
            if row is None:
                raise SubjectNotFoundError(f"no subject {subject!r} in collection {collection!r}", subject=subject)
            self._erase(tx, col, row, actor=actor, reason=reason, now=now)
        self.index.sync()
        self.store.checkpoint()

    def _erase(self, tx: StoreTx, col: Any, row: Any, *, actor: str, reason: str, now: dt.datetime) -> None:
        n_t, n_c = tx.delete_subject(row.id)
        tx.add_change(col.id, row.id, "subject", now)
        self.audit.append(tx, actor=actor, action="subject.erase", now=now, collection=col.name, subjects=[row.external_id],
                          decision="erased", details={"reason": reason, "templates": n_t, "consents": n_c})

    # --- consent ------------------------------------------------------------------------------

    def grant_consent(self, collection: str, subject: str, consent: ConsentSpec, *, actor: str = "library") -> Subject:
        now = utcnow()
        with self.store.write() as tx:
            col = self._col(tx, collection)
            self._check_consent_spec(col, consent)
            row = _subject_row(tx, col.id, subject)
            if row is None:
                raise SubjectNotFoundError(f"no subject {subject!r} in collection {collection!r} (enrol first)", subject=subject)
            tx.insert_consents(self._consent_rows(row.id, consent, actor, now))
            tx.add_change(col.id, row.id, "subject", now)
            self.audit.append(tx, actor=actor, action="consent.grant", now=now, collection=collection, subjects=[subject],
                              decision="granted", details={"purposes": list(consent.purposes), "evidence_ref": consent.evidence_ref,
                                                           "expires_at": consent.expires_at.isoformat() if consent.expires_at else None})
            out = self._subject_obj(tx, collection, row)
        self.index.sync()
        return out

    def withdraw_consent(self, collection: str, subject: str, purposes: Iterable[str] | None = None, *,
                         actor: str = "library") -> Subject:
        """Withdraw consent for ``purposes`` (None: all). Effective for the very next search in
        every process. A subject left with no active consent is erased by the next purge."""
        now = utcnow()
        plist = None if purposes is None else [p.strip() for p in purposes if p.strip()]
        with self.store.write() as tx:
            col = self._col(tx, collection)
            row = _subject_row(tx, col.id, subject)
            if row is None:
                raise SubjectNotFoundError(f"no subject {subject!r} in collection {collection!r}", subject=subject)
            n = tx.withdraw_consents(row.id, plist, now)
            tx.add_change(col.id, row.id, "subject", now)
            self.audit.append(tx, actor=actor, action="consent.withdraw", now=now, collection=collection, subjects=[subject],
                              decision="withdrawn", details={"purposes": plist, "consents": n})
            out = self._subject_obj(tx, collection, row)
        self.index.sync()
        return out

    # --- retention ----------------------------------------------------------------------------

    def purge(self, *, dry_run: bool = False, actor: str = "purge", now: dt.datetime | None = None,
              rotate_master_key: bool = False, new_key: bytes | str | None = None) -> PurgeReport:
        """Erase subjects past their collection's retention (time since last interaction) or
        with no active consent left. Idempotent and safe from cron: a lease lock in the
        database keeps two purges from running at once (LockedError for the second).

        ``rotate_master_key=True``: then rotate the master key (``rotate_master_key``; ``new_key``
        is passed on), so this purge's erasures and every earlier one are complete in backups
        too. The report's ``rotation`` says what it did. Ignored with ``dry_run``."""
        if rotate_master_key and not dry_run:
            master_key_files.check_rotatable(self, new_key)  # refuse before erasing anything
        now = _aware(now, "now") or utcnow()
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if not dry_run:
            with self.store.write() as tx:
                if not tx.acquire_lock("purge", holder, utcnow(), PURGE_LOCK_TTL):
                    raise LockedError("another purge is running; try again later")
        erased: list[PurgeItem] = []
        try:
            with self.store.read() as tx:
                plan = [(c, tx.purge_candidates(c.id, c.retention_days, now)) for c in tx.collections()]
            for col, candidates in plan:
                for n, (sid, ext, reason) in enumerate(candidates):
                    if dry_run:
                        erased.append(PurgeItem(col.name, ext, reason))
                        continue
                    with self.store.write() as tx:
                        if n % 200 == 199:
                            tx.acquire_lock("purge", holder, utcnow(), PURGE_LOCK_TTL)
                        why = tx.purge_reason(sid, col.retention_days, now)
                        row = tx.subject(col.id, ext)
                        if why is None or row is None or row.id != sid:
                            continue
                        self._erase(tx, col, row, actor=actor, reason=why, now=utcnow())
                    erased.append(PurgeItem(col.name, ext, why))
            if not dry_run:
                with self.store.write() as tx:
                    tx.prune_changes(utcnow() - CHANGE_FEED_KEEP)
                    self.audit.append(tx, actor=actor, action="purge.run", now=utcnow(), decision="done",
                                      details={"erased": len(erased)})
        finally:
            if not dry_run:
                with self.store.write() as tx:
                    tx.release_lock("purge", holder)
        if erased and not dry_run:
            self.index.sync()
            self.store.checkpoint()
        rotation = self.rotate_master_key(actor=actor, new_key=new_key) if rotate_master_key and not dry_run else None
        return PurgeReport(dry_run, tuple(erased), now, rotation)

    # --- audit --------------------------------------------------------------------------------

    def audit_list(self, *, collection: str | None = None, subject: str | None = None, action: str | None = None,
                   since: dt.datetime | None = None, until: dt.datetime | None = None, limit: int = 100,
                   before_seq: int | None = None) -> list[AuditEvent]:
        """Events newest first. ``action`` matches exactly or as a prefix ("subject" → subject.*)."""
        if not (1 <= limit <= 10_000):
            raise InvalidArgumentError("limit must be 1–10000")
        with self.store.read() as tx:
            rows = tx.audit_query(collection=collection, subject=subject, action=action, since=_aware(since, "since"),
                                  until=_aware(until, "until"), before_seq=before_seq, limit=limit)
            return [row_to_event(r) for r in rows]

    def audit_record(self, *, actor: str, action: str, collection: str | None = None, subjects: Sequence[str] = (),
                     purpose: str | None = None, decision: str | None = None, score: float | None = None,
                     details: dict[str, Any] | None = None) -> int:
        """Record a decision made outside the gallery (e.g. the service's image-vs-image verify
        or a liveness check) in the same hash-chained log. Never pass pixels or templates.
        Returns the event's seq."""
        if not AUDIT_ACTION_RE.match(action or "") or action == ARCHIVE_ACTION:
            raise InvalidArgumentError(f"invalid audit action {action!r}")
        if details and len(repr(details)) > 4096:
            raise InvalidArgumentError("audit details are limited to 4 KiB (counts and codes, not data)")
        with self.store.write() as tx:
            return self.audit.append(tx, actor=actor, action=action, now=utcnow(), collection=collection,
                                     subjects=list(subjects), purpose=purpose, decision=decision, score=score, details=details)

    def audit_verify(self, *, expect_head: str | None = None) -> AuditReport:
        return self.audit.verify(self.store, expect_head=expect_head)

    def audit_archive(self, before: dt.datetime, path: str | os.PathLike[str], *, actor: str = "archive",
                      batch: int = 5000) -> AuditArchiveReport:
        """Move every audit event older than ``before`` (the oldest run of the chain whose
        events all are: an older event appended after a newer one waits for the next run) to
        the JSON Lines file ``path``, verify the file against the database, then delete those
        events in one durable transaction that records the chain's new anchor and appends an
        ``audit.archive`` event. Crash-safe at every point (see ``audit.archive``); a rerun
        replaces a file left by an interrupted run, never a committed archive. Count 0 and no
        file when nothing is old enough. LockedError while another archival runs."""
        before = _aware(before, "before")
        assert before is not None
        with self.store.read() as tx:
            deployment_id = tx.get_meta("deployment_id")
        return _archive_audit(self.audit, self.store, before=before, path=path, actor=actor,
                              deployment_id=deployment_id, batch=batch)

    def audit_verify_archive(self, paths: Sequence[str | os.PathLike[str]], *, with_database: bool = True,
                             expect_head: str | None = None) -> AuditArchiveCheck:
        """Verify archive files (MACs, order, completeness of each), and with the database
        (default) that they are the archivals it recorded, join each other, and end at the
        database chain's anchor — files + database prove the whole chain (``complete``)."""
        with self.store.read() as tx:
            deployment_id = tx.get_meta("deployment_id")
        return _verify_audit_archive(self.audit, self.store if with_database else None, [str(p) for p in paths],
                                     deployment_id=deployment_id, expect_head=expect_head)

    # --- index --------------------------------------------------------------------------------

    def warm(self, collection: str | None = None, *, wait: bool = False) -> None:
        """Load (decrypt and index) one or every collection now instead of at its first search;
        ``wait=True`` also waits for approximate indexes being built in the background."""
        with self.store.read() as tx:
            rows = [self._col(tx, collection)] if collection else tx.collections()
        for r in rows:
            idx = self.index.get(r.id, r.embedding_dim, r.model_id)
            if wait:
                idx.wait_for_build()

    def index_stats(self, collection: str) -> dict[str, Any]:
        col = self._col_row(collection)
        idx: CollectionIndex = self.index.get(col.id, col.embedding_dim, col.model_id)
        return idx.stats()
