"""An attempted biometric search is audited whatever its outcome: refused identifications and
verifications (no face, purpose not allowed, unknown subject, no consent, liveness required) are
in the audit log with their reason code and nothing of the probe — through the REST API (real key
store) and the CLI alike, since both come through the library."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cli_support import invoke
from facegate.service import Settings, create_app
from facegate.service.backend import ensure_admin_key

# What a refusal's event may carry: who, what, where, which subject was named, the declared
# purpose and the decision. Never a score, a template or anything of the probe.
REFUSAL_FIELDS = {"seq", "ts", "actor", "action", "collection", "subjects", "purpose", "decision", "score", "details", "mac"}


@pytest.fixture(scope="module")
def no_face(photos) -> bytes:
    """A real photo's lower part: suit and desk, no face."""
    im = Image.open(photos["biden_1"])
    buf = io.BytesIO()
    im.crop((0, im.height - 700, im.width, im.height)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory, engine, photos):
    data = tmp_path_factory.mktemp("audit-refusals")
    app = create_app(Settings(data_dir=data, workers=2, rate_limit_per_s=1000, rate_limit_burst=1000), engine=engine)
    with TestClient(app) as client:
        g = app.state.service.gallery
        admin = ensure_admin_key(g)
        assert admin
        keys = {"admin": admin,
                "identify": g.keys.create("searcher", ["identify"], ["bank"])[1],
                "verify": g.keys.create("verifier", ["verify"], ["bank"])[1]}
        collections = [{"name": "bank", "purposes": ["kyc", "fraud"]},
                       {"name": "door", "purposes": ["access"], "liveness_required": ["identify"]}]
        for body in collections:
            r = client.post("/v1/collections", headers=H(admin), json=body)
            assert r.status_code == 201, r.text
        r = client.post("/v1/collections/bank/subjects/C-1/faces", headers=H(admin), data={"purposes": "kyc"},
                        files={"images": photos["obama_1"].read_bytes()})
        assert r.status_code == 201, r.text
        yield client, keys


def newest(client, keys, n: int, **query) -> list[dict]:
    r = client.get("/v1/audit", headers=H(keys["admin"]), params={"limit": n, **query})
    assert r.status_code == 200, r.text
    return r.json()["events"]


def assert_refusal(event: dict, *, action: str, decision: str, collection: str, purpose: str | None,
                   subjects: list[str], actor: str) -> None:
    assert set(event) <= REFUSAL_FIELDS, set(event) - REFUSAL_FIELDS
    assert (event["action"], event["decision"], event["collection"], event["purpose"], event["subjects"]) == (
        action, decision, collection, purpose, subjects), event
    assert event["actor"].startswith(f"key:{actor}("), event["actor"]
    assert event["score"] is None and event["details"] == {}, event


@pytest.mark.parametrize(("case", "status", "decision"), [
    ("no_face", 422, "refused_no_face"),
    ("purpose", 422, "refused_purpose_not_allowed"),
    ("not_an_image", 422, "refused_not_an_image"),
])
def test_refused_identification_is_audited(api, photos, no_face, case, status, decision):
    client, keys = api
    image = {"no_face": no_face, "purpose": photos["obama_3"].read_bytes(), "not_an_image": b"%PDF-1.4 not a photo"}[case]
    purpose = "marketing" if case == "purpose" else "kyc"
    before = newest(client, keys, 1)[0]["seq"]
    r = client.post("/v1/collections/bank/identify", headers=H(keys["identify"]), data={"purpose": purpose},
                    files={"image": image})
    assert r.status_code == status, r.text
    assert r.json()["code"] == decision.removeprefix("refused_")
    events = newest(client, keys, 5)
    assert [e["seq"] for e in events if e["seq"] > before] == [before + 1], "exactly one event per attempt"
    assert_refusal(events[0], action="identify", decision=decision, collection="bank", purpose=purpose, subjects=[],
                   actor="searcher")


def test_refused_verification_is_audited_once_with_the_subject_named(api, photos, no_face):
    client, keys = api
    cases = [
        ({"subject": "C-1", "purpose": "kyc"}, no_face, 422, "refused_no_face"),
        ({"subject": "C-1", "purpose": "marketing"}, photos["obama_3"].read_bytes(), 422, "refused_purpose_not_allowed"),
        ({"subject": "C-404", "purpose": "kyc"}, photos["obama_3"].read_bytes(), 404, "refused_subject_not_found"),
        ({"subject": "C-1", "purpose": "fraud"}, photos["obama_3"].read_bytes(), 403, "refused_no_consent"),
    ]
    for form, image, status, decision in cases:
        before = newest(client, keys, 1)[0]["seq"]
        r = client.post("/v1/verify", headers=H(keys["verify"]), data={"collection": "bank", **form}, files={"image": image})
        assert r.status_code == status, (decision, r.text)
        events = [e for e in newest(client, keys, 5) if e["seq"] > before]
        assert len(events) == 1, events
        assert_refusal(events[0], action="verify", decision=decision, collection="bank", purpose=form["purpose"],
                       subjects=[form["subject"]], actor="verifier")


def test_liveness_refusal_is_recorded_once(api, photos):
    client, keys = api
    before = newest(client, keys, 1)[0]["seq"]
    r = client.post("/v1/collections/door/identify", headers=H(keys["admin"]), data={"purpose": "access"},
                    files={"image": photos["obama_3"].read_bytes()})
    assert r.status_code == 403 and r.json()["code"] == "liveness_required", r.text
    events = [e for e in newest(client, keys, 5) if e["seq"] > before]
    assert [e["decision"] for e in events] == ["refused_liveness_required"]


def test_a_key_scoped_to_its_collection_sees_the_refusals_in_it_and_the_chain_holds(api, no_face):
    client, keys = api
    r = client.post("/v1/collections/bank/identify", headers=H(keys["identify"]), data={"purpose": "kyc"},
                    files={"image": no_face})
    assert r.status_code == 422
    refused = newest(client, keys, 100, collection="bank", action="identify")
    assert refused and all(e["decision"].startswith("refused_") for e in refused)  # no search has succeeded in bank
    report = client.get("/v1/audit/verify", headers=H(keys["admin"])).json()
    assert report["ok"] is True, report


def test_identification_that_searched_is_still_audited_as_a_decision(api, photos):
    client, keys = api
    r = client.post("/v1/collections/bank/identify", headers=H(keys["identify"]), data={"purpose": "kyc"},
                    files={"image": photos["obama_3"].read_bytes()})
    assert r.status_code == 200 and r.json()["decision"] == "match", r.text
    event = newest(client, keys, 1)[0]
    assert event["decision"] == "match" and event["subjects"] == ["C-1"] and event["details"]["searched_subjects"] == 1


# --- the CLI: the same library, the same audit ------------------------------------------------------------------


@pytest.fixture
def fg(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    env = {"FACEGATE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    return lambda *args: invoke(*args, env=env)


def test_cli_refusals_are_audited(fg, photos, no_face, tmp_path):
    probe = tmp_path / "no-face.jpg"
    probe.write_bytes(no_face)
    assert fg("collection", "create", "staff", "--purposes", "access").returncode == 0
    r = fg("enroll", "staff", "E1", photos["obama_1"], "-p", "access", "--evidence", "form-1")
    assert r.returncode == 0, r.stderr

    r = fg("identify", "staff", probe, "--purpose", "access")
    assert r.returncode == 3 and "no_face" in r.stderr, r.stderr
    r = fg("identify", "staff", photos["obama_3"], "--purpose", "payroll")
    assert r.returncode == 3 and "purpose_not_allowed" in r.stderr, r.stderr
    r = fg("subject", "verify", "staff", "E1", probe, "--purpose", "access")
    assert r.returncode == 3, r.stderr
    r = fg("identify", "staff", photos["obama_3"], "--purpose", "access", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["candidates"][0]["subject"] == "E1", r.stderr

    r = fg("audit", "list", "--collection", "staff", "--limit", "10", "--json")
    assert r.returncode == 0, r.stderr
    searches = [e for e in json.loads(r.stdout) if e["action"] in ("identify", "verify")]  # newest first
    assert [(e["action"], e["decision"], e["purpose"]) for e in searches] == [
        ("identify", "match", "access"),
        ("verify", "refused_no_face", "access"),
        ("identify", "refused_purpose_not_allowed", "payroll"),
        ("identify", "refused_no_face", "access"),
    ]
    for e in searches[1:]:
        assert e["score"] is None and e["details"] == {} and e["actor"].startswith("cli:"), e
    assert searches[1]["subjects"] == ["E1"] and searches[2]["subjects"] == searches[3]["subjects"] == []
