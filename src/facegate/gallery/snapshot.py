"""Erasure-safe snapshot files of a collection's index: start-up at disk and AES speed instead of
one unwrap and one decryption per template, and without the approximate index's coarse
assignment.

One file per collection (``<directory>/collection-<id>.snap``), written only by the SQLite store's
processes (a PostgreSQL deployment may run on several hosts, and an erasure on one could not scrub
another host's file):

* a header (JSON, in the clear): collection, model, dimension, the change-feed position the
  snapshot reflects (``seq``), the approximate index's tuned ``nprobe``/recall, the id of the
  master key and a random snapshot key wrapped by it;
* the slot ids in the clear, sorted by template id so an erasure finds its slots by binary
  search: template ids, then subject ids (negative, ``-1 - sid``, for a slot an erasure blanked:
  that subject is re-read from the store on load);
* the trained (empty) faiss index, AES-GCM under the snapshot key;
* fixed-size blocks of ``BLOCK_SLOTS`` slots, each AES-GCM under the snapshot key with a fresh
  nonce, authenticating the block's ids (associated data) and holding per slot the IVF list
  numbers (``lists_per_template`` of them), the 4-bit PQ code and the float32 vector.

Erasure (``erase_subject``, called by the store transaction that deletes the subject, before it
commits, under the write lock): each block holding one of the subject's templates is decrypted,
the slots are zeroed and flagged, and the block is re-encrypted under a new nonce and written in
place over the old ciphertext, then fsynced — once the erasing call returns, no file holds the
template in any form. A file that cannot be scrubbed (unreadable, another master key) is destroyed
instead: its wrapped key zeroed, fsynced, unlinked. Deleting a collection destroys its file the
same way. A snapshot being written (``*.partial``) is destroyed by every erasure in its
collection, so a writer killed mid-way leaves nothing an erasure missed (the next load or write
destroys such a leftover: a live writer holds a lock on its file); the writer re-applies
the erasures committed since its ``seq`` under the store's write lock just before its atomic
rename (:meth:`SnapshotWriter.finish`).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .crypto import Crypto, generate_key
from .errors import TemplateIntegrityError
from .fsync import fsync_dir

if TYPE_CHECKING:
    from .ports import StoreTransaction
    from .transaction import StoreTx

log = logging.getLogger("facegate.gallery.snapshot")

MAGIC = b"FGSNAP01"
VERSION = 2  # 2: a template in several IVF lists
HEADER_SPACE = 4096  # the header (and so the wrapped key) lives here: destroying a file zeroes it
BLOCK_SLOTS = 1024  # an erasure re-encrypts one block (~0.5 MB at 128-d) per template
NONCE = 12
TAG = 16
SUFFIX = ".snap"
PARTIAL = ".partial"


class SnapshotUnusable(Exception):
    """Why a snapshot file cannot be used; the caller loads from the store instead."""


@dataclass(frozen=True)
class SnapshotMeta:
    collection_id: int
    model_id: str
    dim: int
    seq: int  # change-feed position the slots reflect
    nprobe: int
    recall: float
    trained_rows: int
    code_size: int  # bytes of one PQ code
    rescore: int = 128  # candidates re-scored exactly (tuned with nprobe; absent from older headers)
    lists_per_template: int = 1  # IVF list numbers per slot


@dataclass
class LoadedSnapshot:
    meta: SnapshotMeta
    tids: np.ndarray  # live slots only, ascending
    sids: np.ndarray
    lists: np.ndarray  # (n, lists_per_template) IVF list numbers per slot
    codes: np.ndarray  # (n, code_size) uint8
    X: np.ndarray  # (n, dim) float32
    trained: bytes  # the trained, empty faiss index
    scrubbed: np.ndarray  # subject ids with a blanked slot: re-read them from the store

    def keep_only(self, keep: np.ndarray) -> None:
        """Drop the slots where ``keep`` is False, compacting in place (no second copy of the
        vectors: at 10M templates they are 5 GB)."""
        if keep.all():
            return
        n = 0
        for start in range(0, len(keep), 65_536):
            part = slice(start, start + 65_536)
            m = keep[part]
            k = int(m.sum())
            for a in (self.tids, self.sids, self.lists, self.codes, self.X):
                a[n : n + k] = a[part][m]
            n += k
        self.tids, self.sids, self.lists = self.tids[:n], self.sids[:n], self.lists[:n]
        self.codes, self.X = self.codes[:n], self.X[:n]


@dataclass(frozen=True)
class _Layout:
    n: int
    dim: int
    code_size: int
    blob_len: int
    lists: int  # list numbers per slot

    @property
    def slot_bytes(self) -> int:
        return 4 * self.lists + self.code_size + 4 * self.dim

    @property
    def ids_at(self) -> int:
        return HEADER_SPACE

    @property
    def blob_at(self) -> int:
        return HEADER_SPACE + 16 * self.n

    @property
    def blocks_at(self) -> int:
        return self.blob_at + NONCE + self.blob_len + TAG

    @property
    def n_blocks(self) -> int:
        return -(-self.n // BLOCK_SLOTS)

    def block(self, k: int) -> tuple[int, int, int]:
        """(file offset, first slot, slots) of block ``k``."""
        first = k * BLOCK_SLOTS
        return self.blocks_at + k * (NONCE + BLOCK_SLOTS * self.slot_bytes + TAG), first, min(BLOCK_SLOTS, self.n - first)

    def split(self, plain: bytes | bytearray | memoryview, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lists, codes, vectors) views of a block's plaintext (column layout)."""
        lists = np.frombuffer(plain, np.int32, count * self.lists, 0).reshape(count, self.lists)
        at = 4 * self.lists * count
        codes = np.frombuffer(plain, np.uint8, count * self.code_size, at).reshape(count, self.code_size)
        X = np.frombuffer(plain, np.float32, count * self.dim, at + self.code_size * count).reshape(count, self.dim)
        return lists, codes, X


def _aad(digest: bytes, k: int, tids: np.ndarray, sids: np.ndarray) -> bytes:
    return digest + k.to_bytes(8, "little") + tids.astype("<i8").tobytes() + sids.astype("<i8").tobytes()


def _key_context(cid: int) -> bytes:
    return b"index-snapshot|%d" % cid


def _read_header(f: Any) -> tuple[dict[str, Any], bytes]:
    head = f.read(HEADER_SPACE)
    if len(head) < 12 or head[:8] != MAGIC:
        raise SnapshotUnusable("not a snapshot file (or destroyed)")
    size = int.from_bytes(head[8:12], "little")
    if size > HEADER_SPACE - 12:
        raise SnapshotUnusable("header too large")
    try:
        header = json.loads(head[12 : 12 + size])
    except ValueError as exc:
        raise SnapshotUnusable("unreadable header") from exc
    if header.get("v") != VERSION:
        raise SnapshotUnusable(f"format version {header.get('v')!r}")
    return header, hashlib.sha256(head[: 12 + size]).digest()


class SnapshotFiles:
    """The snapshot files of one data directory (SQLite store). Thread-safe: every write of a
    live file happens under the store's write lock, held by the caller."""

    def __init__(self, directory: Path, crypto: Crypto) -> None:
        self.directory = directory
        self.crypto = crypto

    def path(self, cid: int) -> Path:
        return self.directory / f"collection-{cid}{SUFFIX}"

    def _partials(self, cid: int) -> Iterator[Path]:
        return self.directory.glob(f"collection-{cid}{SUFFIX}.*{PARTIAL}")

    def _cipher(self, header: dict[str, Any], cid: int) -> AESGCM:
        if header.get("master_key_id") != self.crypto.master_key_id:
            raise SnapshotUnusable(f"written under master key {header.get('master_key_id')}, "
                                   f"the store's is {self.crypto.master_key_id}")
        try:
            return AESGCM(self.crypto.unwrap_with_current(base64.b64decode(header["key"]), _key_context(cid)))
        except (TemplateIntegrityError, KeyError, ValueError) as exc:
            raise SnapshotUnusable("its key does not unwrap under the master key") from exc

    # --- reading ----------------------------------------------------------------------------

    def check(self, cid: int, dim: int, model_id: str) -> None:
        """Raise what :meth:`load` would about the header alone (no file, another collection,
        model or master key), before the caller starts work that only a usable snapshot needs."""
        with open(self.path(cid), "rb") as f:
            self._open(f, cid, dim, model_id)

    def _open(self, f: Any, cid: int, dim: int, model_id: str) -> tuple[dict[str, Any], bytes, SnapshotMeta, AESGCM]:
        header, digest = _read_header(f)
        meta = SnapshotMeta(**header["meta"])
        if (meta.collection_id, meta.model_id, meta.dim) != (cid, model_id, dim):
            raise SnapshotUnusable(f"it is for collection {meta.collection_id}, {meta.model_id} at {meta.dim}-d")
        return header, digest, meta, self._cipher(header, cid)

    def load(self, cid: int, dim: int, model_id: str) -> LoadedSnapshot:
        """The snapshot of collection ``cid``. FileNotFoundError if there is none,
        SnapshotUnusable if it is for another model or key, or any byte fails authentication.
        What a killed writer left is destroyed first."""
        self.remove_abandoned(cid)
        with open(self.path(cid), "rb") as f:
            header, digest, meta, aead = self._open(f, cid, dim, model_id)
            lay = _Layout(int(header["n"]), dim, meta.code_size, int(header["blob_len"]), meta.lists_per_template)
            f.seek(lay.ids_at)
            ids = np.fromfile(f, "<i8", 2 * lay.n)
            if len(ids) != 2 * lay.n:
                raise SnapshotUnusable("truncated")
            all_tids, all_sids = ids[: lay.n], ids[lay.n :]
            blob = f.read(NONCE + lay.blob_len + TAG)
            try:
                trained = aead.decrypt(blob[:NONCE], blob[NONCE:], digest + b"trained")
            except InvalidTag as exc:
                raise SnapshotUnusable("the trained index failed authentication") from exc
            if not (np.diff(all_tids) > 0).all():
                raise SnapshotUnusable("template ids out of order")
            live = all_sids >= 0
            n = int(live.sum())
            lists = np.empty((n, meta.lists_per_template), np.int32)
            codes = np.empty((n, meta.code_size), np.uint8)
            X = np.empty((n, dim), np.float32)
            at_row = 0
            # One buffer each for the sealed and the opened block, reused: a fresh 0.5 MB
            # allocation per block is fresh pages to fault in every time.
            sealed = memoryview(bytearray(NONCE + BLOCK_SLOTS * lay.slot_bytes + TAG))
            opened = memoryview(bytearray(BLOCK_SLOTS * lay.slot_bytes))
            for k in range(lay.n_blocks):
                at, first, count = lay.block(k)
                size = count * lay.slot_bytes
                f.seek(at)
                if f.readinto(sealed[: NONCE + size + TAG]) != NONCE + size + TAG:
                    raise SnapshotUnusable("truncated")
                sl = slice(first, first + count)
                try:
                    aead.decrypt_into(bytes(sealed[:NONCE]), sealed[NONCE : NONCE + size + TAG],
                                      _aad(digest, k, all_tids[sl], all_sids[sl]), opened[:size])
                except InvalidTag as exc:
                    raise SnapshotUnusable(f"block {k} failed authentication") from exc
                b_lists, b_codes, b_X = lay.split(opened[:size], count)
                keep = live[sl]
                m = int(keep.sum())
                rows = slice(at_row, at_row + m)
                if m == count:
                    lists[rows], codes[rows], X[rows] = b_lists, b_codes, b_X
                else:  # blanked slots are left out
                    lists[rows], codes[rows], X[rows] = b_lists[keep], b_codes[keep], b_X[keep]
                at_row += m
        return LoadedSnapshot(meta, all_tids[live], all_sids[live], lists, codes, X, trained,
                              np.unique(-1 - all_sids[~live]))

    # --- erasure ----------------------------------------------------------------------------

    def erase_subject(self, tx: StoreTx, sid: int) -> None:
        """Blank the subject's slots in its collection's snapshot, on disk before this returns
        (called inside the erasing write transaction, before it commits)."""
        rows = tx.subjects_by_ids([sid])
        if not rows:
            return
        cid = rows[0].collection_id
        self._destroy_partials(cid)
        path = self.path(cid)
        if not path.exists():
            return
        tids = sorted(t for t, _s in tx.template_ids_of([sid]))
        try:
            self.scrub(path, cid, tids)
        except (SnapshotUnusable, OSError, ValueError, KeyError) as exc:
            log.warning("collection %s: index snapshot could not be scrubbed (%s); destroying it", cid, exc)
            destroy(path)

    def erase_collection(self, cid: int) -> None:
        self._destroy_partials(cid)
        destroy(self.path(cid))

    def _destroy_partials(self, cid: int) -> None:
        for p in self._partials(cid):
            destroy(p)

    def remove_abandoned(self, cid: int) -> None:
        """Destroy the snapshots being written whose writer is gone (killed mid-write): a live
        writer holds an exclusive lock on its file."""
        for p in self._partials(cid):
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being written
            else:
                log.info("collection %s: removing a snapshot a killed writer left (%s)", cid, p.name)
                destroy(p)
            finally:
                os.close(fd)

    def scrub(self, path: Path, cid: int, tids: Iterable[int]) -> int:
        """Zero the slots of ``tids`` in ``path`` in place (re-encrypting their blocks under new
        nonces) and fsync. Returns the slots blanked."""
        want = np.asarray(sorted(tids), np.int64)
        if not len(want):
            return 0
        with open(path, "r+b") as f:
            header, digest = _read_header(f)
            meta = SnapshotMeta(**header["meta"])
            aead = self._cipher(header, cid)
            lay = _Layout(int(header["n"]), meta.dim, meta.code_size, int(header["blob_len"]), meta.lists_per_template)
            if lay.n == 0:
                return 0
            all_tids = np.memmap(path, "<i8", "r", lay.ids_at, (lay.n,))  # binary search: a few pages read
            pos = np.minimum(np.searchsorted(all_tids, want), lay.n - 1)
            pos = pos[np.asarray(all_tids[pos]) == want]
            del all_tids
            for k in np.unique(pos // BLOCK_SLOTS).tolist():
                at, first, count = lay.block(k)
                f.seek(lay.ids_at + 8 * first)
                tids_b = np.fromfile(f, "<i8", count)
                f.seek(lay.ids_at + 8 * (lay.n + first))
                sids_b = np.fromfile(f, "<i8", count)
                f.seek(at)
                raw = f.read(NONCE + count * lay.slot_bytes + TAG)
                try:
                    plain = bytearray(aead.decrypt(raw[:NONCE], raw[NONCE:], _aad(digest, k, tids_b, sids_b)))
                except InvalidTag as exc:
                    raise SnapshotUnusable(f"block {k} failed authentication") from exc
                lists, codes, X = lay.split(plain, count)  # writable views of the plaintext
                for j in (pos[pos // BLOCK_SLOTS == k] - first).tolist():
                    lists[j], codes[j], X[j] = 0, 0, 0.0
                    if sids_b[j] >= 0:
                        sids_b[j] = -1 - sids_b[j]
                nonce = secrets.token_bytes(NONCE)
                sealed = aead.encrypt(nonce, bytes(plain), _aad(digest, k, tids_b, sids_b))
                f.seek(lay.ids_at + 8 * (lay.n + first))
                f.write(sids_b.astype("<i8").tobytes())
                f.seek(at)
                f.write(nonce + sealed)
            f.flush()
            os.fsync(f.fileno())
        return len(pos)

    # --- writing ----------------------------------------------------------------------------

    def writer(self, meta: SnapshotMeta, tids: np.ndarray, sids: np.ndarray, trained: bytes) -> SnapshotWriter:
        return SnapshotWriter(self, meta, tids, sids, trained)


def destroy(path: Path) -> None:
    """Make a snapshot file unreadable for good (its wrapped key zeroed on disk), then remove it."""
    try:
        with open(path, "r+b") as f:
            f.write(bytes(HEADER_SPACE))
            f.flush()
            os.fsync(f.fileno())
    except FileNotFoundError:
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fsync_dir(path.parent)


class SnapshotWriter:
    """Writes one snapshot to ``<final>.<random>.partial``: the header, ids and trained index at
    once, then the blocks in order (:meth:`write_block`), then :meth:`finish` under the store's
    write lock renames it into place."""

    def __init__(self, files: SnapshotFiles, meta: SnapshotMeta, tids: np.ndarray, sids: np.ndarray,
                 trained: bytes) -> None:
        self.files = files
        self.meta = meta
        self.tids = np.ascontiguousarray(tids, np.int64)
        self.sids = np.ascontiguousarray(sids, np.int64).copy()
        files.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.final = files.path(meta.collection_id)
        files.remove_abandoned(meta.collection_id)
        self.path = self.final.with_name(f"{self.final.name}.{uuid.uuid4().hex}{PARTIAL}")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # held until closed: the file is not abandoned
        key = generate_key()
        self._aead = AESGCM(key)
        header = {"v": VERSION, "meta": asdict(meta), "n": len(self.tids), "blob_len": len(trained),
                  "master_key_id": files.crypto.master_key_id,
                  "key": base64.b64encode(files.crypto.wrap(key, _key_context(meta.collection_id))).decode()}
        body = json.dumps(header).encode()
        head = MAGIC + len(body).to_bytes(4, "little") + body
        if len(head) > HEADER_SPACE:
            raise ValueError("snapshot header too large")
        self._digest = hashlib.sha256(head).digest()
        self.layout = _Layout(len(self.tids), meta.dim, meta.code_size, len(trained), meta.lists_per_template)
        os.pwrite(self._fd, head + bytes(HEADER_SPACE - len(head)), 0)
        os.pwrite(self._fd, self.tids.astype("<i8").tobytes(), self.layout.ids_at)
        nonce = secrets.token_bytes(NONCE)
        os.pwrite(self._fd, nonce + self._aead.encrypt(nonce, trained, self._digest + b"trained"), self.layout.blob_at)

    @property
    def n_blocks(self) -> int:
        return self.layout.n_blocks

    def block_tids(self, k: int) -> np.ndarray:
        _at, first, count = self.layout.block(k)
        return self.tids[first : first + count]

    def write_block(self, k: int, present: np.ndarray, lists: np.ndarray, codes: np.ndarray, X: np.ndarray) -> None:
        """Slots of block ``k`` (``present[i]`` False: the template left the index while this
        snapshot was written; its slot is blanked and its subject re-read on load)."""
        at, first, count = self.layout.block(k)
        sids = self.sids[first : first + count]
        gone = ~present & (sids >= 0)
        sids[gone] = -1 - sids[gone]
        lists = np.where(present[:, None], lists, 0).astype("<i4")
        codes = np.where(present[:, None], codes, 0).astype(np.uint8)
        X = np.where(present[:, None], X, 0.0).astype("<f4")
        plain = lists.tobytes() + codes.tobytes() + X.tobytes()
        nonce = secrets.token_bytes(NONCE)
        aad = _aad(self._digest, k, self.tids[first : first + count], sids)
        os.pwrite(self._fd, nonce + self._aead.encrypt(nonce, plain, aad), at)

    def finish(self, tx: StoreTransaction) -> bool:
        """Inside the caller's write transaction: blank the slots of every subject changed in
        the feed since ``seq`` (an erasure committed meanwhile scrubbed the old file, not this
        one), then fsync and rename into place. False (and nothing renamed) if an erasure
        destroyed this file meanwhile or the collection was deleted."""
        try:
            os.pwrite(self._fd, self.sids.astype("<i8").tobytes(), self.layout.ids_at + 8 * self.layout.n)
            try:
                if os.stat(self.path).st_ino != os.fstat(self._fd).st_ino:
                    return False
            except FileNotFoundError:
                return False
            cid = self.meta.collection_id
            changed: set[int] = set()
            for ch in tx.changes_since(self.meta.seq, tx.max_seq()):
                if ch.collection_id != cid:
                    continue
                if ch.op == "collection":
                    return False
                if ch.subject_id is not None:
                    changed.add(ch.subject_id)
            os.fsync(self._fd)
            if changed:
                self.files.scrub(self.path, cid, self.tids[np.isin(self.sids, list(changed))].tolist())
            os.replace(self.path, self.final)
            fsync_dir(self.final.parent)
            return True
        finally:
            self.close()

    def close(self) -> None:
        """Release the file; a snapshot not renamed into place is destroyed."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.path.exists():
            destroy(self.path)
