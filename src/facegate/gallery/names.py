"""The one rule for names the gallery creates: subject ids, collection names, API-key names.

A name ends up in URL path segments, file names of exports, console links and audit events, so
it must not be able to change a route (``.``, ``..``, ``/``), hide or reorder what an operator
reads (control characters, bidi overrides and isolates) or be unrepresentable (surrogates,
non-characters). Names are NFC-normalised, so two spellings of one visible name are one name.

The rule applies where a name is *created*; lookups and erasure take any stored name as is, so
rows created before the rule stay reachable (``legacy_problems`` lists them).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from .errors import InvalidNameError

NameKind = Literal["subject", "collection", "key"]

# Characters (after NFC), per kind. Collections and keys keep their earlier, stricter ASCII sets.
MAX_LENGTH: dict[str, int] = {"subject": 256, "collection": 128, "key": 128}
_ASCII_RE: dict[str, re.Pattern[str]] = {
    "collection": re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
    "key": re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$"),
}
_BIDI = {*range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _bad_char(ch: str) -> str | None:
    cp = ord(ch)
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return "a control character"
    if cat == "Cs":
        return "a surrogate"
    if cp in _BIDI:
        return "a bidi override or isolate"
    if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return "a Unicode non-character"
    if ch == "/":
        return "'/'"
    return None


def problem(kind: NameKind, name: object) -> str | None:
    """Why ``name`` is not a valid new ``kind`` name (None: it is, once NFC-normalised)."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    try:
        nfc = unicodedata.normalize("NFC", name)
    except ValueError:
        return "it is not valid Unicode"
    limit = MAX_LENGTH[kind]
    if len(nfc) > limit:
        return f"it is longer than {limit} characters"
    if nfc in (".", ".."):
        return "'.' and '..' are path segments"
    if nfc != nfc.strip():
        return "it has surrounding spaces"
    for ch in nfc:
        why = _bad_char(ch)
        if why is not None:
            return f"it contains {why} (U+{ord(ch):04X})"
    pattern = _ASCII_RE.get(kind)
    if pattern is not None and not pattern.match(nfc):
        return "use letters, digits and " + ("_.-" if kind == "collection" else "_.@:-") + ", starting with a letter or digit"
    return None


def check_name(kind: NameKind, name: str) -> str:
    """The NFC form of ``name``, or InvalidNameError (code ``invalid_name``, HTTP 422)."""
    why = problem(kind, name)
    if why is not None:
        raise InvalidNameError(f"invalid {kind} name {name!r}: {why}", kind=kind)
    return unicodedata.normalize("NFC", name)


def lookup_forms(name: str) -> tuple[str, ...]:
    """The stored names a lookup of ``name`` may mean: as given (legacy rows), then its NFC form."""
    try:
        nfc = unicodedata.normalize("NFC", name)
    except (TypeError, ValueError):
        return (name,)
    return (name,) if nfc == name else (name, nfc)


def legacy_problems(rows: list[tuple[NameKind, str | None, str]]) -> list[dict[str, str | None]]:
    """Stored names (kind, collection or None, name) that ``check_name`` would refuse today."""
    out: list[dict[str, str | None]] = []
    for kind, collection, name in rows:
        why = problem(kind, name)
        if why is not None:
            out.append({"kind": kind, "collection": collection, "name": name, "problem": why})
    return out
