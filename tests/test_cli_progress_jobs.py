"""Progress of the long gallery jobs: the library reports (done, total) as purge, audit archival
and a several-image enrolment go, and the CLI draws it on a terminal only — never under --json,
never in a pipe."""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import pytest
from rich.console import Console

from cli_support import Ran, invoke
from facegate.cli import _common
from facegate.gallery import ConsentSpec, Gallery

ACCESS = ConsentSpec(("access",), evidence_ref="form-1")


def _assert_counts(calls: list[tuple[int, int | None]], total: int) -> None:
    """Every call names the same total; done never goes back and ends at the total."""
    assert calls, "no progress was reported"
    assert {t for _d, t in calls} == {total}
    done = [d for d, _t in calls]
    assert done == sorted(done) and done[-1] == total


# --- the library ---------------------------------------------------------------------------------


def test_enrolment_reports_each_image(tmp_path, engine, photos) -> None:
    calls: list[tuple[int, int | None]] = []
    with Gallery.open(tmp_path / "d", engine=engine) as g:
        g.create_collection("staff", purposes=["access"])
        images = [photos["obama_1"], photos["obama_2"], photos["biden_1"]]
        res = g.enroll("staff", "E1", images, consent=ACCESS, progress=lambda d, t: calls.append((d, t)))
    assert res.accepted + res.rejected == 3
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_purge_reports_each_candidate(tmp_path, engine, photos) -> None:
    calls: list[tuple[int, int | None]] = []
    with Gallery.open(tmp_path / "d", engine=engine) as g:
        g.create_collection("staff", purposes=["access"])
        for subject, photo in (("E1", "obama_1"), ("E2", "biden_1"), ("E3", "collins_1")):
            g.enroll("staff", subject, photos[photo], consent=ACCESS)
        for subject in ("E1", "E3"):
            g.withdraw_consent("staff", subject)
        rep = g.purge(progress=lambda d, t: calls.append((d, t)))
    assert sorted(e.subject for e in rep.erased) == ["E1", "E3"]
    assert calls[0] == (0, 2)
    _assert_counts(calls, 2)


def test_purge_with_nothing_due_reports_zero_of_zero(tmp_path, engine) -> None:
    calls: list[tuple[int, int | None]] = []
    with Gallery.open(tmp_path / "d", engine=engine) as g:
        assert g.purge(progress=lambda d, t: calls.append((d, t))).erased == ()
    assert calls == [(0, 0)]


def test_audit_archival_reports_each_batch(tmp_path, engine) -> None:
    calls: list[tuple[int, int | None]] = []
    with Gallery.open(tmp_path / "d", engine=engine) as g:
        for i in range(7):
            g.audit_record(actor="test", action="test.event", details={"i": i})
        before = g.audit_verify().events
        rep = g.audit_archive(dt.datetime.now(dt.UTC), tmp_path / "a.jsonl", batch=3,
                              progress=lambda d, t: calls.append((d, t)))
    assert rep.count == before >= 7
    _assert_counts(calls, rep.count)
    assert [d for d, _t in calls][:3] == [0, 3, 6]  # once before writing, then once per batch of 3


# --- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def terminal(monkeypatch) -> io.StringIO:
    """stderr as a terminal 80 columns wide, as in tests/test_cli_progress.py."""
    buf = io.StringIO()
    monkeypatch.setattr(_common, "err_console", Console(file=buf, force_terminal=True, width=80, color_system=None))
    return buf


@pytest.fixture
def fg(tmp_path, monkeypatch, photos):
    """A data dir with one subject (two photos) and one whose consent was withdrawn (due for purge)."""
    for var in ("FACEGATE_MASTER_KEY", "FACEGATE_STORE"):
        monkeypatch.delenv(var, raising=False)
    env: dict[str, str | None] = {"FACEGATE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "80"}

    def run(*args: object) -> Ran:
        return invoke(*args, env=env)

    assert run("collection", "create", "staff", "--purposes", "access").returncode == 0
    assert run("enroll", "staff", "E2", photos["biden_1"], "-p", "access", "--evidence", "f").returncode == 0
    assert run("consent", "withdraw", "staff", "E2").returncode == 0
    return run


def _jobs(photos, out) -> dict[str, tuple[str, list[object]]]:
    """Each long command: (its bar's label and count, its arguments)."""
    return {
        "enroll": ("enrolling", ["enroll", "staff", "E1", photos["obama_1"], photos["obama_2"], "-p", "access",
                                 "--evidence", "f"]),
        "purge": ("purging", ["purge"]),
        "audit archive": ("archiving", ["audit", "archive", "--before", "0d", "--output", out]),
    }


JOBS = ["enroll", "purge", "audit archive"]


@pytest.mark.parametrize("job", JOBS)
def test_drawn_on_a_terminal(job, fg, terminal, photos, tmp_path) -> None:
    label, args = _jobs(photos, tmp_path / "a.jsonl")[job]
    r = fg(*args)
    assert r.returncode == 0, r.stderr
    drawn = terminal.getvalue()
    assert re.search(rf"{label}.* (\d+)/\1 ", drawn), drawn  # its last frame: done == total
    assert label not in r.stdout  # the result stays the only output on stdout


@pytest.mark.parametrize("job", JOBS)
def test_quiet_under_json_even_on_a_terminal(job, fg, terminal, photos, tmp_path) -> None:
    _label, args = _jobs(photos, tmp_path / "a.jsonl")[job]
    r = fg(*args, "--json")
    assert r.returncode == 0, r.stderr
    assert terminal.getvalue() == ""
    assert len(r.stdout.splitlines()) == 1 and isinstance(json.loads(r.stdout), dict)


@pytest.mark.parametrize("job", JOBS)
def test_quiet_when_stderr_is_not_a_terminal(job, fg, photos, tmp_path) -> None:
    label, args = _jobs(photos, tmp_path / "a.jsonl")[job]
    r = fg(*args)
    assert r.returncode == 0, r.stderr
    assert label not in r.stderr and "/s" not in r.stderr
