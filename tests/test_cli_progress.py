"""The shared progress bar of long CLI jobs: drawn on a terminal, silent under --json and in pipes."""

from __future__ import annotations

import io

from rich.console import Console

from facegate.cli._common import progress


def _console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=80, color_system=None), buf


def _run(con: Console, *, enabled: bool, total: int | None = 5) -> None:
    with progress("enrolling", total, enabled=enabled, out=con) as bar:
        for _ in range(5):
            bar.advance()
        bar.update(5, total=5)


def test_terminal_shows_label_and_counts() -> None:
    con, buf = _console(terminal=True)
    _run(con, enabled=True)
    shown = buf.getvalue()
    assert "enrolling" in shown
    assert "5/5" in shown


def test_disabled_by_json_writes_nothing_on_a_terminal() -> None:
    con, buf = _console(terminal=True)
    _run(con, enabled=False)
    assert buf.getvalue() == ""


def test_not_a_terminal_writes_nothing() -> None:
    con, buf = _console(terminal=False)
    _run(con, enabled=True)
    assert buf.getvalue() == ""


def test_unknown_total_can_be_set_later() -> None:
    con, buf = _console(terminal=True)
    _run(con, enabled=True, total=None)
    assert "5/5" in buf.getvalue()


def test_default_is_stderr_so_stdout_stays_clean(capsys) -> None:
    # pytest's captured streams are not terminals: the default (stderr) bar stays quiet
    with progress("purging", 3, enabled=True) as bar:
        bar.advance(3)
    out, err = capsys.readouterr()
    assert (out, err) == ("", "")


def test_describe_replaces_the_label() -> None:
    con, buf = _console(terminal=True)
    with progress("migrating", None, enabled=True, out=con) as bar:
        bar.describe("copied 12 rows of [subjects]")  # brackets are text, not markup
    assert "copied 12 rows of [subjects]" in buf.getvalue()
