"""CLI output for people at 80 columns: ids whole, columns left out rather than cut, values as
words (no Python reprs)."""

from __future__ import annotations

import datetime as dt

import pytest

from cli_support import invoke as run
from facegate.cli._render import human

NAME = "customers-eu-west-enrolled-at-branches"
SUBJECT = "customer-000123456789-0001"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("render")
    assert run("collection", "create", NAME, "-p", "access,payments,fraud-prevention", "--data-dir", d).returncode == 0
    res = run("enroll", NAME, SUBJECT, photos["obama_1"], "-p", "access,payments", "--evidence", "form-[2026]-x",
              "--data-dir", d)
    assert res.returncode == 0, res.stderr
    return d


def _at_80(*args, data_dir) -> str:
    res = run(*args, "--data-dir", data_dir, env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    assert all(len(line) <= 80 for line in res.stdout.splitlines()), res.stdout
    assert "…" not in res.stdout
    return res.stdout


@pytest.mark.parametrize("args", [("collection", "list"), ("subject", "list", NAME), ("audit", "list"), ("keys", "list"),
                                  ("collection", "show", NAME), ("subject", "show", NAME, SUBJECT)])
def test_fits_80_columns_with_ids_whole(data_dir, args) -> None:
    out = _at_80(*args, data_dir=data_dir)
    if args[0] not in ("keys", "audit"):  # an audit event's id is its seq; long names may be left out, and said
        assert NAME in out or SUBJECT in out


def test_narrow_table_says_what_it_left_out(data_dir) -> None:
    out = _at_80("collection", "list", data_dir=data_dir)
    assert NAME in out and "not shown at this width:" in out and "model" in out.split("not shown")[1]
    wide = run("collection", "list", "--data-dir", data_dir, env={"COLUMNS": "200"}).stdout
    assert "not shown" not in wide and "sface" in wide


def test_values_are_rendered_for_people(data_dir) -> None:
    out = _at_80("collection", "show", NAME, data_dir=data_dir)
    assert "access, payments, fraud-prevention" in out
    assert "['" not in out and "None" not in out and "{'" not in out
    assert "min sharpness: 40" in out  # a mapping as key: value lines
    assert " UTC" in out and "T0" not in out  # times as UTC date and time, not ISO
    shown = _at_80("subject", "show", NAME, SUBJECT, data_dir=data_dir)
    assert "form-[2026]-x" in shown  # data with brackets is not taken for markup


def test_human() -> None:
    assert human(None) == "—" and human([]) == "—" and human(["a", "b"]) == "a, b"
    assert human({"min_px": 32.0, "mode": None}) == "min px: 32\nmode: —"
    assert human(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) == "2026-01-02 03:04:05 UTC"
    assert human("2026-01-02T03:04:05.123Z") == "2026-01-02 03:04:05 UTC"
    assert human("a-subject-id") == "a-subject-id" and human(True) == "yes"
