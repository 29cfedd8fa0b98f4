"""Liveness as a collection policy: which operations require it, and THE check that enforces it
(the CLI and the service both come through ``require``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from .context import GalleryContext
from .errors import InvalidArgumentError, LivenessRequiredError
from .ports import CollectionRow
from .types import LIVENESS_OPERATIONS, LivenessOverride

# What ``enroll``/``verify``/``identify`` take as ``liveness``: the id of the liveness session
# whose best frame is the image (the caller consumed it), or a supervised ``LivenessOverride``.
Liveness = str | LivenessOverride | None
LIVENESS_SESSION_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def liveness_ops(ops: Iterable[str] | str | None) -> tuple[str, ...]:
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


def _details(liveness: Liveness) -> dict[str, Any]:
    """What the operation's audit event records about liveness (never an image)."""
    if liveness is None:
        return {}
    if isinstance(liveness, LivenessOverride):
        return {"liveness": "override", "liveness_override_reason": liveness.reason}
    return {"liveness": "session", "liveness_session": liveness}


def liveness_missing(col: CollectionRow, operation: str, liveness: Liveness) -> bool:
    """The collection requires liveness for ``operation`` and none was given."""
    return liveness is None and operation in (col.liveness_required or ())


def require(ctx: GalleryContext, col: CollectionRow, operation: str, liveness: Liveness, *, actor: str,
            subjects: Sequence[str] = (), purpose: str | None = None) -> dict[str, Any]:
    """Returns the audit details for the operation's event; raises LivenessRequiredError (and
    audits the refusal) when the collection requires liveness for ``operation`` and neither a
    session id nor an explicit override was given.

    A session id is trusted as "the image is that session's best frame, consumed by the
    caller": the gallery's callers are the service (which passes only the id of the session
    it has just consumed itself) and in-process library code (which holds the database and
    master key anyway)."""
    if liveness is not None and not isinstance(liveness, LivenessOverride) and (
            not isinstance(liveness, str) or not LIVENESS_SESSION_RE.match(liveness)):
        raise InvalidArgumentError("liveness must be a liveness session id (1–128 of A-Z a-z 0-9 _.:-) or a LivenessOverride")
    if liveness_missing(col, operation, liveness):
        with ctx.store.write() as tx:
            ctx.audit.append(tx, actor=actor, action=operation, now=ctx.now(), collection=col.name, subjects=list(subjects),
                             purpose=purpose, decision="refused_liveness_required",
                             details={"liveness_required": list(col.liveness_required or ())})
        raise LivenessRequiredError(
            f"collection {col.name!r} requires a passed liveness check for {operation}: run a liveness session "
            "and send its id (liveness_session) instead of an image",
            collection=col.name, operation=operation,
        )
    return _details(liveness)
