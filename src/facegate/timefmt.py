"""Times as people and clients write them: ISO 8601, UTC when no zone is given, or a span from
now ("90d", "12h", "30m"). One reading for the REST service and the CLI."""

from __future__ import annotations

import datetime as dt
import re

from .clock import SYSTEM, Clock


class TimeFormatError(ValueError):
    """``text`` is neither an ISO 8601 time nor (where allowed) a span; ``field`` names the input."""

    def __init__(self, field: str, text: str) -> None:
        super().__init__(f"{field} is not an ISO 8601 time: {text!r}")
        self.field = field
        self.text = text


_SPAN = re.compile(r"\s*(\d+)\s*([dhm])\s*")
_UNIT = {"d": "days", "h": "hours", "m": "minutes"}


def duration(text: str) -> dt.timedelta | None:
    """ "90d", "12h", "30m" as a time span; None for anything else."""
    m = _SPAN.fullmatch(text)
    if not m:
        return None
    return dt.timedelta(**{_UNIT[m.group(2)]: int(m.group(1))})


def parse_time(text: str | None, field: str = "time", *, spans: bool = False,
               clock: Clock = SYSTEM) -> dt.datetime | None:
    """``text`` as an aware datetime (UTC when it names no zone); None for None or "". With
    ``spans``, "90d"/"12h"/"30m" mean that long after ``clock.now()``. Raises TimeFormatError."""
    if text is None or text == "":
        return None
    if spans:
        delta = duration(text)
        if delta is not None:
            return clock.now() + delta
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeFormatError(field, text) from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
