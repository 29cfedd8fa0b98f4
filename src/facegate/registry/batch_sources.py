"""Where a batch's images come from: a directory beside the manifest (CLI) or an uploaded zip
kept encrypted in the database while the job needs it (service). Both refuse references that
leave their tree; ``problem(ref)`` answers before the job starts, ``read(ref)`` while it runs."""

from __future__ import annotations

import io
import secrets
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Table, delete, insert, select

from ..errors import ImageNotFoundError, ImageTooLargeError
from ..gallery.crypto import Crypto
from ..gallery.errors import InvalidArgumentError, MasterKeyError
from ..gallery.ports import TemplateStore
from ..gallery.transaction import StoreTx
from .batch_schema import BatchFileRow
from .manifest import normalise_reference, reference_problem

F = cast(Table, BatchFileRow.__table__)
UPLOAD_KEY_PURPOSE = b"registry-upload/v1"
MANIFEST_NAME = "/manifest"  # never a zip member name (those are relative)


class ImageSource(Protocol):
    def problem(self, ref: str) -> str | None:
        """Why ``ref`` cannot be read (None: it can)."""
        ...

    def read(self, ref: str) -> bytes:
        """The file's bytes; ImageNotFoundError / ImageTooLargeError."""
        ...


@dataclass(frozen=True)
class DirectorySource:
    """Files under ``root`` (the manifest's directory). A reference whose real path (symlinks
    followed) is outside ``root`` is refused, as is anything but a regular file."""

    root: Path
    max_bytes: int

    def _path(self, ref: str) -> tuple[Path | None, str | None]:
        why = reference_problem(ref)
        if why is not None:
            return None, why
        root = self.root.resolve()
        try:
            real = (root / normalise_reference(ref)).resolve(strict=True)
        except (FileNotFoundError, RuntimeError):
            return None, "no such file"
        except OSError as exc:
            return None, f"cannot be read ({exc.strerror})"
        if not real.is_relative_to(root):
            return None, "it resolves outside the manifest's directory (a symlink)"
        st = real.stat()
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_size > self.max_bytes:
            return None, f"larger than {self.max_bytes} bytes"
        return real, None

    def problem(self, ref: str) -> str | None:
        return self._path(ref)[1]

    def read(self, ref: str) -> bytes:
        path, why = self._path(ref)
        if path is None:
            raise ImageNotFoundError(f"image {ref!r}: {why}", image=ref)
        with path.open("rb") as f:
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise ImageTooLargeError(f"image {ref!r} is larger than {self.max_bytes} bytes", image=ref)
        return data


# --- uploads --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZipLimits:
    max_zip_bytes: int
    max_image_bytes: int
    max_total_bytes: int  # uncompressed, all members
    max_ratio: float  # uncompressed / compressed, per member
    max_members: int


class UploadTooLargeError(ImageTooLargeError):
    """An uploaded archive (or a member of it) is over a size limit (HTTP 413)."""

    code = "upload_too_large"


class InvalidArchiveError(InvalidArgumentError):
    """The upload is not a usable zip (corrupt, unsafe names, links, a compression bomb)."""

    code = "invalid_archive"


class ZipUpload:
    """An uploaded zip as an image source. Opening it checks the whole directory — names
    (relative, no ``..``), entry kinds (no links or special files), sizes per entry and in
    total, the expansion ratio, the entry count — before a byte is inflated; ``read`` inflates
    one entry at a time and checks its size again (a directory may lie)."""

    def __init__(self, data: bytes, limits: ZipLimits) -> None:
        if len(data) > limits.max_zip_bytes:
            raise UploadTooLargeError(f"the zip is larger than {limits.max_zip_bytes} bytes", limit=limits.max_zip_bytes)
        try:
            self._zf = zipfile.ZipFile(io.BytesIO(data))
            infos = self._zf.infolist()
        except (zipfile.BadZipFile, ValueError) as exc:
            raise InvalidArchiveError(f"the upload is not a readable zip: {exc}") from None
        if len(infos) > limits.max_members:
            raise UploadTooLargeError(f"the zip has more than {limits.max_members} entries", limit=limits.max_members)
        self._entries: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            if info.is_dir():
                continue
            why = reference_problem(info.filename)
            if why is not None:
                raise InvalidArchiveError(f"zip entry {info.filename!r}: {why}", entry=info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded (a plain file)
            if kind not in (0, stat.S_IFREG):
                raise InvalidArchiveError(f"zip entry {info.filename!r} is a link or special file", entry=info.filename)
            name = normalise_reference(info.filename)
            if info.file_size > limits.max_image_bytes:
                raise UploadTooLargeError(f"zip entry {name!r} is larger than {limits.max_image_bytes} bytes",
                                          entry=name, limit=limits.max_image_bytes)
            if info.file_size > limits.max_ratio * max(info.compress_size, 1):
                raise InvalidArchiveError(f"zip entry {name!r} expands more than {limits.max_ratio:g}× (a zip bomb?)",
                                          entry=name)
            total += info.file_size
            if total > limits.max_total_bytes:
                raise UploadTooLargeError(f"the zip expands to more than {limits.max_total_bytes} bytes",
                                          limit=limits.max_total_bytes)
            self._entries[name] = info

    def problem(self, ref: str) -> str | None:
        return None if ref in self._entries else "not in the uploaded zip"

    def read(self, ref: str) -> bytes:
        info = self._entries.get(ref)
        if info is None:
            raise ImageNotFoundError(f"image {ref!r} is not in the uploaded zip", image=ref)
        try:
            with self._zf.open(info) as f:  # at most what the directory claims + 1
                body = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
            raise InvalidArchiveError(f"zip entry {ref!r} cannot be read: {exc}", entry=ref) from None
        if len(body) != info.file_size:
            raise InvalidArchiveError(f"zip entry {ref!r} is not the size its directory says", entry=ref)
        return body


class UploadCipher:
    """AES-256-GCM under a key derived from the master key (``Crypto.derive_key``), the job id
    and file name as associated data: a row copied to another job or name fails to open."""

    def __init__(self, crypto: Crypto) -> None:
        self.crypto = crypto

    @staticmethod
    def _aad(job_id: str, name: str) -> bytes:
        return b"facegate/registry-upload/v1|" + job_id.encode() + b"|" + name.encode()

    def seal(self, job_id: str, name: str, data: bytes) -> tuple[str, bytes]:
        key, kid = self.crypto.derive_key(UPLOAD_KEY_PURPOSE)
        nonce = secrets.token_bytes(12)
        return kid, nonce + AESGCM(key).encrypt(nonce, data, self._aad(job_id, name))

    def open(self, job_id: str, name: str, key_id: str, blob: bytes) -> bytes:
        key, kid = self.crypto.derive_key(UPLOAD_KEY_PURPOSE)
        if kid != key_id:
            raise MasterKeyError("the job's uploads were encrypted under a master key rotated since; upload them again")
        try:
            return AESGCM(key).decrypt(blob[:12], blob[12:], self._aad(job_id, name))
        except InvalidTag:
            raise MasterKeyError(f"uploaded file {name!r} failed authentication (altered)") from None


def store_uploads(tx: StoreTx, cipher: UploadCipher, job_id: str, manifest: bytes, source: ImageSource,
                  names: Iterable[str]) -> None:
    """The manifest and the images ``names`` (read one at a time from ``source``), encrypted."""
    for name in (MANIFEST_NAME, *names):
        kid, blob = cipher.seal(job_id, name, manifest if name == MANIFEST_NAME else source.read(name))
        tx.execute(insert(F).values(job_id=job_id, name=name, key_id=kid, ciphertext=blob))


def delete_uploads(tx: StoreTx, job_id: str) -> int:
    return int(tx.execute(delete(F).where(F.c.job_id == job_id)).rowcount or 0)


@dataclass(frozen=True)
class StoredSource:
    """A service job's uploads, read (and decrypted) from the database one at a time."""

    store: TemplateStore
    cipher: UploadCipher
    job_id: str

    def problem(self, ref: str) -> str | None:
        with self.store.read() as tx:
            found = tx.execute(select(F.c.name).where(F.c.job_id == self.job_id, F.c.name == ref)).first()
        return None if found is not None else "not in the uploaded zip"

    def read(self, ref: str) -> bytes:
        with self.store.read() as tx:
            row = tx.execute(select(F.c.key_id, F.c.ciphertext).where(F.c.job_id == self.job_id, F.c.name == ref)).first()
        if row is None:
            raise ImageNotFoundError(f"image {ref!r} is not in the uploaded zip", image=ref)
        return self.cipher.open(self.job_id, ref, row.key_id, bytes(row.ciphertext))

