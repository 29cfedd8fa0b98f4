"""The gallery CLI as an operator runs it: one data dir, JSON and exit codes. In-process, with one
smoke test of a gallery command as a separate process."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from cli_support import Ran, invoke, spawn


@pytest.fixture
def fg(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    data = tmp_path / "data"

    def run(*args: object, input: str | None = None) -> Ran:
        return invoke(*args, input=input, env={"FACEGATE_DATA_DIR": str(data), "COLUMNS": "200"})

    run.data = data  # type: ignore[attr-defined]
    return run


def test_gallery_command_as_a_process(fg):
    """`python -m facegate collection create` with the flags after the subcommand, as in the README."""
    r = spawn("collection", "create", "staff", "--purposes", "access", "--data-dir", fg.data, "--json",
              env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["purposes"] == ["access"]
    assert [c["name"] for c in json.loads(fg("collection", "list", "--json").stdout)] == ["staff"]


def test_operator_workflow(fg, photos):
    r = fg("collection", "create", "staff", "--purposes", "access,payments", "--retention-days", "30", "--json")
    assert r.returncode == 0, r.stderr
    col = json.loads(r.stdout)
    assert col["purposes"] == ["access", "payments"] and col["retention_days"] == 30
    assert col["threshold_source"] in ("calibration", "provisional")

    r = fg("enroll", "staff", "E1", photos["obama_1"], photos["obama_2"], "-p", "access", "--evidence", "form-9",
           "--label", "B.O.", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["created"] and out["accepted"] == 2 and out["consents"][0]["evidence_ref"] == "form-9"

    # human output: duplicate warning
    r = fg("enroll", "staff", "E2", photos["obama_3"], "-p", "payments", "--dedup-purpose", "access")
    assert r.returncode == 0 and "possible duplicate identity" in r.stdout and "E1" in r.stdout

    r = fg("enroll", "staff", "E3", photos["collins_1"])  # no consent for a new subject
    assert r.returncode != 0 and "consent_required" in r.stderr

    r = fg("identify", "staff", photos["obama_3"], "--purpose", "access", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["candidates"][0]["subject"] == "E1"
    r = fg("identify", "staff", photos["biden_1"], "--purpose", "access")
    assert r.returncode == 1 and "NO MATCH" in r.stdout
    r = fg("identify", "staff", photos["obama_3"], "--purpose", "marketing")
    assert r.returncode == 3 and "purpose_not_allowed" in r.stderr

    r = fg("subject", "verify", "staff", "E1", photos["obama_3"], "--purpose", "access", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["match"] is True
    r = fg("subject", "verify", "staff", "E1", photos["obama_3"], "--purpose", "payments")
    assert r.returncode == 5 and "consent_required" in r.stderr
    r = fg("verify", photos["obama_3"], "--subject", "E1", "--collection", "staff", "--purpose", "access")
    assert r.returncode == 0 and "MATCH" in r.stdout, r.stderr
    r = fg("verify", photos["biden_1"], "--subject", "E1", "--collection", "staff", "--purpose", "access", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["match"] is False

    r = fg("consent", "withdraw", "staff", "E1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["active_purposes"] == []
    r = fg("identify", "staff", photos["obama_3"], "--purpose", "access")
    assert r.returncode == 1
    r = fg("consent", "grant", "staff", "E1", "-p", "access", "--expires", "365d", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["active_purposes"] == ["access"]

    r = fg("subject", "list", "staff", "--json")
    assert [s["external_id"] for s in json.loads(r.stdout)] == ["E1", "E2"]
    r = fg("subject", "show", "staff", "E1")
    assert r.returncode == 0 and "form-9" in r.stdout
    r = fg("subject", "delete", "staff", "E2", input="n\n")  # asks first
    assert r.returncode == 1
    r = fg("subject", "delete", "staff", "E2", "--yes", "--reason", "gdpr-art17")
    assert r.returncode == 0
    r = fg("subject", "show", "staff", "E2")
    assert r.returncode == 3 and "subject_not_found" in r.stderr

    r = fg("purge", "--dry-run", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["count"] == 0

    r = fg("audit", "list", "--subject", "E2", "--json")
    actions = [e["action"] for e in json.loads(r.stdout)]
    assert actions[0] == "subject.erase" and "enroll" in actions
    r = fg("audit", "verify", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True

    r = fg("collection", "list", "--json")
    assert json.loads(r.stdout)[0]["subjects"] == 1
    r = fg("collection", "show", "nope")
    assert r.returncode == 3 and "collection_not_found" in r.stderr


def test_audit_verify_exits_1_when_tampered(fg, photos):
    fg("collection", "create", "c", "-p", "access")
    fg("enroll", "c", "E1", photos["biden_1"], "-p", "access")
    r = fg("audit", "verify")
    assert r.returncode == 0 and "intact" in r.stdout
    db = sqlite3.connect(Path(fg.data) / "gallery.db")
    with db:
        db.execute("DROP TRIGGER audit_events_no_update")
        db.execute("UPDATE audit_events SET actor='someone-else' WHERE seq=2")
    r = fg("audit", "verify")
    assert r.returncode == 1 and "TAMPERED" in r.stdout


def test_keys_commands(fg):
    r = fg("keys", "create", "kiosk", "--scopes", "verify,identify", "--collections", "staff", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["secret"].startswith("fg_") and out["scopes"] == ["verify", "identify"] and out["collections"] == ["staff"]
    r = fg("keys", "create", "kiosk", "--scopes", "verify")
    assert r.returncode == 5 and "api_key_exists" in r.stderr
    r = fg("keys", "create", "bad", "--scopes", "everything")
    assert r.returncode == 3 and "invalid_argument" in r.stderr
    r = fg("keys", "list", "--json")
    assert [k["name"] for k in json.loads(r.stdout)] == ["kiosk"] and "secret" not in r.stdout
    r = fg("keys", "revoke", "kiosk")
    assert r.returncode == 0
    assert json.loads(fg("keys", "list", "--json").stdout) == []
    assert json.loads(fg("keys", "list", "--all", "--json").stdout)[0]["revoked_at"]


def test_liveness_required_collection_and_supervised_override(fg, photos):
    """A collection requiring liveness refuses a bare photo from the CLI (exit 5, liveness_required,
    with the CLI's way out); --liveness-override REASON is accepted and audited."""
    r = fg("collection", "create", "branch", "-p", "access", "--liveness-required", "enroll,verify", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["liveness_required"] == ["enroll", "verify"]

    r = fg("enroll", "branch", "E1", photos["obama_1"], "-p", "access")
    assert r.returncode == 5 and "liveness_required" in r.stderr and "--liveness-override" in r.stderr
    r = fg("enroll", "branch", "E1", photos["obama_1"], "-p", "access", "--liveness-override", "", "--json")
    assert r.returncode == 3 and "invalid_argument" in r.stderr
    r = fg("enroll", "branch", "E1", photos["obama_1"], "-p", "access",
           "--liveness-override", "in person at branch 12, passport checked", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["accepted"] == 1, r.stderr

    r = fg("verify", photos["obama_2"], "--subject", "E1", "--collection", "branch", "--purpose", "access")
    assert r.returncode == 5 and "liveness_required" in r.stderr
    r = fg("verify", photos["obama_2"], "--subject", "E1", "--collection", "branch", "--purpose", "access",
           "--liveness-override", "teller saw the customer", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["match"] is True, r.stderr
    r = fg("subject", "verify", "branch", "E1", photos["obama_3"], "--purpose", "access", "--liveness-override", "desk check")
    assert r.returncode == 0 and "MATCH" in r.stdout, r.stderr
    r = fg("verify", photos["obama_2"], photos["obama_3"], "--liveness-override", "x")  # two-image mode has no collection
    assert r.returncode == 2
    r = fg("identify", "branch", photos["obama_3"], "--purpose", "access", "--json")  # identify not required
    assert r.returncode == 0, r.stderr

    r = fg("collection", "set-liveness", "branch", "identify", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["liveness_required"] == ["identify"], r.stderr
    r = fg("identify", "branch", photos["obama_3"], "--purpose", "access")
    assert r.returncode == 5 and "liveness_required" in r.stderr
    r = fg("identify", "branch", photos["obama_3"], "--purpose", "access", "--liveness-override", "guard at the door", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["candidates"][0]["subject"] == "E1", r.stderr
    r = fg("collection", "set-liveness", "branch", "erase")
    assert r.returncode == 3 and "invalid_argument" in r.stderr
    r = fg("collection", "list")
    assert r.returncode == 0 and "identify" in r.stdout

    r = fg("audit", "list", "--collection", "branch", "--limit", "50", "--json")
    events = json.loads(r.stdout)
    enrol = [e for e in events if e["action"] == "enroll"]
    assert [e["decision"] for e in enrol] == ["enrolled", "refused_liveness_required"]  # newest first
    assert enrol[0]["details"]["liveness"] == "override"
    assert enrol[0]["details"]["liveness_override_reason"] == "in person at branch 12, passport checked"
    verifies = [e for e in events if e["action"] == "verify" and e["decision"] == "match"]
    assert {e["details"]["liveness_override_reason"] for e in verifies} == {"teller saw the customer", "desk check"}
    ident = [e for e in events if e["action"] == "identify"]
    assert ident[0]["details"]["liveness_override_reason"] == "guard at the door" and "liveness" not in ident[-1]["details"]
    upd = [e for e in events if e["action"] == "collection.update"]
    assert upd[0]["details"] == {"liveness_required": ["identify"], "previous": ["enroll", "verify"]}


def test_errors_speak_cli(fg, photos):
    """A CLI user is told CLI flags, not library calls; an FMR without a calibrated threshold is a
    usage error that lists the ones there are."""
    fg("collection", "create", "hints", "--purposes", "access")
    r = fg("enroll", "hints", "s1", photos["obama_1"])
    assert r.returncode == 5
    assert "ConsentSpec" not in r.stderr and "consent=" not in r.stderr
    assert "hint: record the subject's consent with --purposes" in r.stderr
    r = fg("enroll", "hints", "s1", photos["obama_1"], "--json")
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "consent_required" and "--purposes" in err["hint"] and "ConsentSpec" not in err["message"]
    for cmd in (("collection", "create", "loose", "--purposes", "a", "--fmr", "0.01"),
                ("verify", photos["obama_1"], photos["obama_2"], "--fmr", "0.5")):
        r = fg(*cmd)
        assert r.returncode == 2 and "0.001, 0.0001, 1e-05" in r.stderr, r.stderr
