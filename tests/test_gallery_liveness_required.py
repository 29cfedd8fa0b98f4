"""A collection can require a passed liveness check for enrolment, verification and/or
identification. Enforced in one place, the gallery: a bare image is refused with
``liveness_required``; a consumed liveness session id or a supervised ``LivenessOverride`` is
accepted and recorded in the operation's audit event. Real engine, real photos; collected again
on PostgreSQL by tests/test_pg_gallery.py."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.gallery import (
    ConsentSpec,
    Gallery,
    InvalidArgumentError,
    LivenessOverride,
    LivenessRequiredError,
)
from store_support import downgrade, script_head

ACCESS = ConsentSpec(("access",), evidence_ref="form-1")
OPS = ("enroll", "verify", "identify")


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)


@pytest.fixture
def bare_gallery(tmp_path, engine):
    g = Gallery.open(tmp_path / "data", engine=engine)
    yield g
    g.close()


def _last(g: Gallery, action: str):
    return g.audit_list(action=action, limit=1)[0]


def _run(g: Gallery, op: str, photos, **kw):
    if op == "enroll":
        return g.enroll("c", "E2", photos["obama_2"], consent=ACCESS, **kw)
    if op == "verify":
        return g.verify("c", "E1", photos["obama_3"], purpose="access", **kw)
    return g.identify("c", photos["obama_3"], purpose="access", **kw)


def test_collection_setting_default_create_update_and_audit(bare_gallery):
    gallery = bare_gallery
    plain = gallery.create_collection("plain", purposes=["access"])
    assert plain.liveness_required == () and plain.to_dict()["liveness_required"] == []
    col = gallery.create_collection("bank", purposes=["kyc"], liveness_required=["verify", "enroll"])
    assert col.liveness_required == ("enroll", "verify")  # canonical order
    assert col.requires_liveness("enroll") and not col.requires_liveness("identify")
    assert gallery.get_collection("bank").to_dict()["liveness_required"] == ["enroll", "verify"]
    assert {c.name: c.liveness_required for c in gallery.list_collections()} == {"bank": ("enroll", "verify"), "plain": ()}
    assert _last(gallery, "collection.create").details["liveness_required"] == ["enroll", "verify"]

    up = gallery.set_collection_liveness("bank", "identify,enroll", actor="ops:ann")
    assert up.liveness_required == ("enroll", "identify") and up.subjects == 0
    ev = _last(gallery, "collection.update")
    assert ev.actor == "ops:ann" and ev.collection == "bank"
    assert ev.details == {"liveness_required": ["enroll", "identify"], "previous": ["enroll", "verify"]}
    assert gallery.set_collection_liveness("bank", []).liveness_required == ()
    with pytest.raises(InvalidArgumentError, match="enroll, verify, identify"):
        gallery.set_collection_liveness("bank", ["enroll", "payments"])
    with pytest.raises(InvalidArgumentError):
        gallery.create_collection("x", purposes=["kyc"], liveness_required=["erase"])
    assert gallery.audit_verify().ok


@pytest.mark.parametrize("op", OPS)
def test_required_operation_refuses_a_bare_image_and_accepts_session_or_override(bare_gallery, photos, op):
    gallery = bare_gallery
    gallery.create_collection("c", purposes=["access"], liveness_required=[op])
    gallery.enroll("c", "E1", photos["obama_1"], consent=ACCESS, liveness="sess-enrol-0")

    with pytest.raises(LivenessRequiredError) as ei:
        _run(gallery, op, photos)
    assert ei.value.code == "liveness_required" and ei.value.http_status == 403
    assert "liveness" in ei.value.message and op in ei.value.message
    refused = _last(gallery, op)
    assert refused.decision == "refused_liveness_required" and refused.details == {"liveness_required": [op]}

    res = _run(gallery, op, photos, liveness="ls_0123456789abcdef")
    ev = _last(gallery, op)
    assert ev.decision in ("enrolled", "match")
    assert ev.details["liveness"] == "session" and ev.details["liveness_session"] == "ls_0123456789abcdef"
    if op == "identify":
        assert [c.subject for c in res.candidates] == ["E1"]

    _run(gallery, op, photos, liveness=LivenessOverride("  enrolled in person at branch 12, ID checked  "))
    ev = _last(gallery, op)
    assert ev.details["liveness"] == "override"
    assert ev.details["liveness_override_reason"] == "enrolled in person at branch 12, ID checked"
    assert "liveness_session" not in ev.details

    # The other operations are not required: a bare image works, and nothing about liveness is recorded.
    for other in OPS:
        if other != op:
            _run(gallery, other, photos)
            assert "liveness" not in _last(gallery, other).details
    # Audit details never carry pixels or templates, only codes and the session id / reason.
    assert all(len(repr(e.details)) < 600 for e in gallery.audit_list(limit=100))
    assert gallery.audit_verify().ok


def test_nothing_required_by_default_and_liveness_still_recorded_when_given(bare_gallery, photos):
    gallery = bare_gallery
    gallery.create_collection("c", purposes=["access"])
    gallery.enroll("c", "E1", photos["obama_1"], consent=ACCESS)
    assert "liveness" not in _last(gallery, "enroll").details
    gallery.verify("c", "E1", photos["obama_2"], purpose="access", liveness="sess-1")
    assert _last(gallery, "verify").details["liveness_session"] == "sess-1"


def test_override_and_session_id_must_be_explicit_and_well_formed(bare_gallery, photos):
    gallery = bare_gallery
    gallery.create_collection("c", purposes=["access"], liveness_required=OPS)
    for bad in ("", "has space", "x" * 129, 42, b"sess"):
        with pytest.raises(InvalidArgumentError):
            gallery.enroll("c", "E1", photos["obama_1"], consent=ACCESS, liveness=bad)
    for reason in ("", "   ", "x" * 257, "line\nbreak"):
        with pytest.raises(InvalidArgumentError, match="reason"):
            LivenessOverride(reason)
    # The string "override" is just a (session) id: an override is only ever a LivenessOverride object.
    gallery.enroll("c", "E1", photos["obama_1"], consent=ACCESS, liveness="override")
    assert _last(gallery, "enroll").details["liveness"] == "session"
    assert gallery.get_subject("c", "E1").templates


def test_identify_vector_obeys_the_identify_requirement(bare_gallery, photos, engine):
    gallery = bare_gallery
    gallery.create_collection("c", purposes=["access"], liveness_required=["identify"])
    gallery.enroll("c", "E1", photos["obama_1"], consent=ACCESS)
    v = engine.embed(photos["obama_2"]).vector
    with pytest.raises(LivenessRequiredError):
        gallery.identify_vector("c", v, purpose="access", model_id=engine.model_id)
    res = gallery.identify_vector("c", np.asarray(v), purpose="access", model_id=engine.model_id,
                                  liveness=LivenessOverride("template from the kiosk's own check"))
    assert [c.subject for c in res.candidates] == ["E1"]


def test_migration_from_0004_gives_existing_collections_the_empty_default(bare_gallery, engine, photos, tmp_path):
    gallery = bare_gallery
    from facegate.gallery.store import SCHEMA_HEAD

    # A store at an older head would skip migrate() and miss the newer tables.
    assert script_head() == SCHEMA_HEAD
    gallery.create_collection("old", purposes=["access"], liveness_required=["enroll"])
    gallery.enroll("old", "E1", photos["obama_1"], consent=ACCESS, liveness="s1")
    downgrade(gallery.store, "0004")
    assert gallery.store.schema_version() == "0004"
    data_dir, url = gallery.data_dir, gallery.store.engine.url.render_as_string(hide_password=False)
    gallery.close()
    g = Gallery.open(data_dir, store=url, engine=engine)  # upgrades 0004 to the head
    try:
        assert g.store.schema_version() == SCHEMA_HEAD
        col = g.get_collection("old")
        assert col.liveness_required == () and col.subjects == 1  # rows kept, the setting back to the default
        g.enroll("old", "E2", photos["biden_1"], consent=ACCESS)  # nothing required now
        assert g.set_collection_liveness("old", ["verify"]).liveness_required == ("verify",)
        with pytest.raises(LivenessRequiredError):
            g.verify("old", "E1", photos["obama_2"], purpose="access")
        assert g.audit_verify().ok
    finally:
        g.close()
