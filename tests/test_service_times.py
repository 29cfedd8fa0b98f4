"""Times as the REST service (and the CLI) read them: facegate.timefmt."""

from __future__ import annotations

import datetime as dt

import pytest

from facegate.clock import ManualClock
from facegate.service.backend import request_time
from facegate.service.errors import ValidationFailedError
from facegate.timefmt import TimeFormatError, duration, parse_time

UTC = dt.UTC


def test_iso_times_are_aware_and_utc_when_no_zone_is_named():
    assert parse_time("2027-01-31T12:00Z") == dt.datetime(2027, 1, 31, 12, tzinfo=UTC)
    assert parse_time("2027-01-31") == dt.datetime(2027, 1, 31, tzinfo=UTC)
    assert parse_time("2027-01-31T14:00+02:00") == dt.datetime(2027, 1, 31, 12, tzinfo=UTC)
    assert parse_time(None) is None and parse_time("") is None


def test_spans_count_from_the_clock_only_when_allowed():
    clock = ManualClock()
    assert duration("90d") == dt.timedelta(days=90) and duration("soon") is None
    assert parse_time("12h", spans=True, clock=clock) == clock.now() + dt.timedelta(hours=12)
    with pytest.raises(TimeFormatError) as err:
        parse_time("12h", "expires_at")
    assert err.value.field == "expires_at"


def test_a_request_time_that_is_not_iso_is_a_validation_problem():
    with pytest.raises(ValidationFailedError) as err:
        request_time("next tuesday", "since")
    assert err.value.code == "validation_error" and err.value.details["field"] == "since"
