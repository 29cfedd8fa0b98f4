"""The audit chain's witness outside the database: checkpoints of its head in a data-dir file.

The hash chain proves no event was edited, inserted or removed *inside* the range the database
still holds; it cannot see the newest events deleted together with a rewritten ``audit_head``
(or everything wiped back to genesis), because the database alone then describes a shorter,
valid chain. The witness remembers how far the chain reached: after every committed append
(and every successful verify) this process adds a line ``seq mac time tag`` to
``<data_dir>/audit.witness`` (0600), ``tag`` an HMAC under a key derived from the audit key,
which the database holds only wrapped by the master key. ``verify`` then requires the newest
checkpoint's event to still be in the chain with the same MAC (or to be archived).

It proves: no event this process appended or verified was removed by someone who can write the
database but holds neither the master key nor this data directory. It does not prove anything
against whoever holds the data directory or the master key, nor against rolling back the
database *and* the file together; events committed after the last checkpoint (an append whose
process died before its line was written) are not covered. Several processes with their own
data directories (PostgreSQL) each witness what they appended or verified.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("facegate.gallery")

WITNESS_FILE = "audit.witness"
COMPACT_BYTES = 64 * 1024  # then the file is rewritten with its newest checkpoint only


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    mac: str
    at: str


class WitnessTamperedError(ValueError):
    """A line of the witness file does not carry a valid tag."""


class Witness:
    def __init__(self, path: Path, audit_key: bytes) -> None:
        self.path = Path(path)
        self._key = hmac.new(audit_key, b"facegate/audit-witness/v1", hashlib.sha256).digest()

    def _tag(self, seq: int, mac: str, at: str) -> str:
        return hmac.new(self._key, f"{seq}|{mac}|{at}".encode(), hashlib.sha256).hexdigest()

    def _line(self, seq: int, mac: str) -> bytes:
        at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"{seq} {mac} {at} {self._tag(seq, mac, at)}\n".encode()

    def record(self, seq: int, mac: str) -> None:
        """Add a checkpoint (after the commit that made ``seq`` the head). Never raises: the
        event is committed already; a witness that could not be written only lags."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, self._line(seq, mac))  # one small O_APPEND write: lines of concurrent writers never interleave
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > COMPACT_BYTES:
                self._compact()
        except (OSError, WitnessTamperedError) as exc:
            log.warning("could not write the audit witness %s: %s", self.path, exc)

    def _compact(self) -> None:
        newest = self.latest()
        if newest is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # threads compact too
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(f"{newest.seq} {newest.mac} {newest.at} {self._tag(newest.seq, newest.mac, newest.at)}\n".encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def latest(self) -> Checkpoint | None:
        """The checkpoint with the highest seq (None: no file yet). WitnessTamperedError if a
        complete line's tag is wrong; a last line without its newline (a write cut short by a
        crash) is ignored."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        best: Checkpoint | None = None
        lines = data.split(b"\n")
        for n, raw in enumerate(lines[:-1], 1):  # the part after the last newline is incomplete
            parts = raw.decode("ascii", "replace").split(" ")
            if len(parts) != 4 or not parts[0].isdigit():
                raise WitnessTamperedError(f"line {n} of {self.path} is malformed")
            seq, mac, at, tag = int(parts[0]), parts[1], parts[2], parts[3]
            if not hmac.compare_digest(self._tag(seq, mac, at), tag):
                raise WitnessTamperedError(f"line {n} of {self.path} does not carry a valid tag")
            if best is None or seq > best.seq:
                best = Checkpoint(seq, mac, at)
        return best
