"""Bulk-enrolment manifests: parsing and validating the whole file before anything is enrolled.

A manifest is CSV (a header row, then one row per image) or JSON Lines (one object per line)
with the fields

    subject    the subject's external id (``gallery/names.py`` rules)
    image      a file reference relative to the manifest (CLI) or inside the uploaded zip
               (service): no absolute paths, no ``..``; never a URL
    purposes   what the subject consented to, ``;``-separated in CSV (a list in JSON Lines);
               each must be one of the collection's purposes
    evidence   the consent evidence reference (signed form id, document hash): required on
               every row — a manifest is not a way to import faces collected without consent
    label      optional display label
    expires    optional consent expiry (ISO 8601; UTC when no zone is given)

Rows of one subject must agree on purposes, evidence, label and expiry (they are one consent).
``parse`` reports every bad row with its line number (``ManifestError.details["errors"]``)
instead of stopping at the first.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal, cast

from sqlalchemy import String, Table

from ..gallery.consent import check_spec
from ..gallery.errors import GalleryError, InvalidArgumentError
from ..gallery.names import check_name, problem
from ..gallery.ports import CollectionRow
from ..gallery.schema import SubjectRow
from ..gallery.types import ConsentSpec
from ..timefmt import TimeFormatError, parse_time

FIELDS = ("subject", "image", "purposes", "evidence", "label", "expires")
REQUIRED = ("subject", "image", "purposes", "evidence")
MAX_LABEL: int = cast(String, cast(Table, SubjectRow.__table__).c.label.type).length or 0  # the column's width is the rule
MAX_ERRORS = 1000  # reported at most (the count says how many there were)

Format = Literal["csv", "jsonl"]


@dataclass(frozen=True)
class ManifestRow:
    line: int
    subject: str  # NFC, as stored
    image: str  # normalised relative POSIX reference
    purposes: tuple[str, ...]
    evidence: str
    label: str | None
    expires: dt.datetime | None

    def consent(self) -> ConsentSpec:
        return ConsentSpec(self.purposes, expires_at=self.expires, evidence_ref=self.evidence)


@dataclass(frozen=True)
class Manifest:
    rows: tuple[ManifestRow, ...]
    sha256: str
    format: Format

    def by_subject(self) -> dict[str, list[ManifestRow]]:
        """Rows grouped per subject, subjects in order of first appearance."""
        out: dict[str, list[ManifestRow]] = {}
        for r in self.rows:
            out.setdefault(r.subject, []).append(r)
        return out


class ManifestError(InvalidArgumentError):
    """The manifest has bad rows: ``errors`` lists {line, field, message} for each (HTTP 422)."""

    code = "invalid_manifest"


def reference_problem(ref: str) -> str | None:
    """Why ``ref`` may not name a file of the batch (None: it may). References stay inside the
    manifest's directory or the uploaded zip: relative, no ``..``, no backslashes or NUL."""
    if not ref:
        return "it is empty"
    if "\x00" in ref or "\\" in ref:
        return "it contains a backslash or NUL"
    if "://" in ref:
        return "it is a URL; name a file beside the manifest"
    if ref.startswith("/") or (len(ref) > 1 and ref[1] == ":"):
        return "it is an absolute path; name it relative to the manifest"
    if ".." in PurePosixPath(ref).parts:
        return "it leaves the manifest's directory ('..')"
    return None


def normalise_reference(ref: str) -> str:
    return PurePosixPath(ref).as_posix()


def detect_format(data: bytes, name: str = "") -> Format:
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    return "jsonl" if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else "csv"


def _records(text: str, fmt: Format, errors: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    if fmt == "jsonl":
        for n, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                errors.append({"line": n, "field": None, "message": f"not valid JSON: {exc.msg}"})
                continue
            if not isinstance(obj, dict):
                errors.append({"line": n, "field": None, "message": "each line must be a JSON object"})
                continue
            unknown = sorted(set(obj) - set(FIELDS))
            if unknown:
                errors.append({"line": n, "field": unknown[0], "message": f"unknown field(s) {', '.join(unknown)}"})
            yield n, obj
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    unknown = [h for h in header if h not in FIELDS]
    missing = [f for f in REQUIRED if f not in header]
    if unknown or missing:
        what = ([f"unknown column(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing column(s) {', '.join(missing)}"] if missing else [])
        errors.append({"line": 1, "field": None, "message": "; ".join(what) + f" (columns: {', '.join(FIELDS)})"})
        return
    for rec in reader:
        if None in rec:
            errors.append({"line": reader.line_num, "field": None, "message": "more values than columns"})
            continue
        yield reader.line_num, dict(rec)


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text")
    return value.strip()


def _purposes(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        if not all(isinstance(p, str) for p in value):
            raise ValueError("purposes must be text")
        items = value
    else:
        items = _text(value, "purposes").split(";")
    return tuple(dict.fromkeys(p.strip() for p in items if p.strip()))


def _row(n: int, rec: dict[str, Any], col: CollectionRow, now: dt.datetime,
         file_problem: Callable[[str], str | None]) -> tuple[ManifestRow | None, list[dict[str, Any]]]:
    errs: list[dict[str, Any]] = []

    def bad(field: str, message: str) -> None:
        errs.append({"line": n, "field": field, "message": message})

    try:
        subject, image, evidence = (_text(rec.get(f), f) for f in ("subject", "image", "evidence"))
        label = _text(rec.get("label"), "label") or None
        expires_text = _text(rec.get("expires"), "expires")
        purposes = _purposes(rec.get("purposes"))
    except ValueError as exc:
        bad("", str(exc))
        return None, errs
    why = problem("subject", subject)
    if why is not None:
        bad("subject", f"invalid subject id {subject!r}: {why}")
    why = reference_problem(image)
    if why is None:
        image = normalise_reference(image)
        why = file_problem(image)
    if why is not None:
        bad("image", f"image {image!r}: {why}")
    if not evidence:
        bad("evidence", "a consent evidence reference is required on every row")
    if label is not None and len(label) > MAX_LABEL:
        bad("label", f"label is at most {MAX_LABEL} characters")
    expires = None
    try:
        expires = parse_time(expires_text, "expires")
    except TimeFormatError as exc:
        bad("expires", str(exc))
    if not purposes:
        bad("purposes", "at least one purpose is required")
    else:
        try:
            check_spec(col, ConsentSpec(purposes, expires_at=expires, evidence_ref=evidence or None), now)
        except GalleryError as exc:  # the consent rule of single enrolment, row by row
            field = "purposes" if exc.code == "purpose_not_allowed" else "evidence" if "evidence" in exc.message else "expires"
            bad(field, exc.message)
    if errs:
        return None, errs
    return ManifestRow(n, check_name("subject", subject), image, purposes, evidence, label, expires), []


def parse(data: bytes, col: CollectionRow, *, now: dt.datetime, name: str = "", max_rows: int = 1_000_000,
          file_problem: Callable[[str], str | None] = lambda _ref: None) -> Manifest:
    """Parse and validate the whole manifest against collection ``col``; ``file_problem(ref)``
    says why a referenced file cannot be used (missing, outside the tree, too large), or None.
    ManifestError lists every bad row."""
    fmt = detect_format(data, name)
    errors: list[dict[str, Any]] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"the manifest is not UTF-8 text (byte {exc.start})", errors=[]) from None
    rows: list[ManifestRow] = []
    first: dict[str, ManifestRow] = {}
    seen: dict[tuple[str, str], int] = {}
    count = 0
    for n, rec in _records(text, fmt, errors):
        count += 1
        if count > max_rows:
            raise ManifestError(f"the manifest has more than {max_rows} rows; split it", errors=[], limit=max_rows)
        row, errs = _row(n, rec, col, now, file_problem)
        errors.extend(errs)
        if row is None:
            continue
        key = (row.subject, row.image)
        if key in seen:
            errors.append({"line": n, "field": "image", "message": f"the same subject and image as line {seen[key]}"})
            continue
        seen[key] = n
        other = first.setdefault(row.subject, row)
        if (other.purposes, other.evidence, other.label, other.expires) != (row.purposes, row.evidence, row.label, row.expires):
            errors.append({"line": n, "field": None, "message": f"subject {row.subject!r} has another consent or label "
                                                                 f"on line {other.line}; one subject, one consent"})
            continue
        rows.append(row)
    if not errors and not rows:
        errors.append({"line": 1, "field": None, "message": "the manifest has no rows"})
    if errors:
        shown = errors[:MAX_ERRORS]
        lines = ", ".join(str(e["line"]) for e in shown[:10]) + (" …" if len(errors) > 10 else "")
        raise ManifestError(f"{len(errors)} problem(s) in the manifest (lines {lines}); nothing was enrolled",
                            errors=shown, count=len(errors))
    return Manifest(tuple(rows), hashlib.sha256(data).hexdigest(), fmt)
