"""The API's response models and the library's result dataclasses describe the same records:
a field added to one and not the other fails here, not in a client.

A response model describes what the service sends, which is the record's ``to_dict()`` (times as
ISO strings, tuples as lists, computed properties such as ``active`` or ``accepted`` included).
So each model that mirrors a record must accept a real record's ``to_dict()`` as it is — the
same keys in the same order, values of the declared types — apart from the fields the HTTP edge
adds, listed here with the reason (the module docstring of ``facegate.service.schemas`` too)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import BaseModel

from facegate.gallery import AuditReport, Candidate, ConsentSpec, DuplicateMatch, Gallery, ImageOutcome
from facegate.service.faces import face_out
from facegate.service.schemas import (
    AuditEventOut,
    AuditReportOut,
    CandidateOut,
    CollectionOut,
    ConsentOut,
    DuplicateOut,
    EnrollOut,
    FaceOut,
    IdentifyOut,
    ImageOutcomeOut,
    KeyOut,
    PurgeOut,
    QualityOut,
    SubjectOut,
    TemplateOut,
)

ACCESS = ConsentSpec(("access",), evidence_ref="form-1")


@pytest.mark.parametrize(("record", "model"), [
    (AuditReport, AuditReportOut),
    (Candidate, CandidateOut),
    (DuplicateMatch, DuplicateOut),
    (ImageOutcome, ImageOutcomeOut),
])
def test_response_model_has_the_records_fields(record, model):
    assert set(model.model_fields) == {f.name for f in dataclasses.fields(record)}


def test_audit_report_answers_in_the_records_field_order():
    report = AuditReport(ok=True, events=3, head_seq=3, head_mac="ab", witnessed_seq=2)
    out = AuditReportOut.model_validate(report, from_attributes=True).model_dump()
    assert list(out) == [f.name for f in dataclasses.fields(AuditReport)]
    assert out == report.to_dict()


@pytest.fixture(scope="module")
def records(tmp_path_factory, engine, photos) -> dict[str, Any]:
    """One of each record, from a real gallery: an enrolment, a search, a subject, audit events,
    an API key, a purge."""
    g = Gallery.open(tmp_path_factory.mktemp("schemas") / "d", engine=engine)
    try:
        col = g.create_collection("c", purposes=["access"])
        enrolled = g.enroll("c", "E1", photos["obama_1"], consent=ACCESS, label="front desk")
        found = g.identify("c", photos["obama_2"], purpose="access")
        key, _ = g.keys.create("desk", ["verify"], ["c"])
        return {
            "collection": g.get_collection("c"), "created": col, "enrolled": enrolled, "found": found,
            "subject": g.get_subject("c", "E1"), "event": g.audit_list(limit=1)[0], "key": key,
            "purge": g.purge(dry_run=True), "report": g.audit_verify(),
        }
    finally:
        g.close()


def _same_record(model: type[BaseModel], record_json: dict[str, Any], http: dict[str, Any] | None = None) -> None:
    """``model`` takes ``record_json`` (with the HTTP edge's own fields ``http``) unchanged."""
    sent = {**record_json, **(http or {})}
    assert [k for k in model.model_fields if k not in (http or {})] == list(record_json)
    assert model.model_validate(sent).model_dump() == sent


def test_each_mirrored_model_takes_its_records_json_unchanged(records):
    r = records
    _same_record(CollectionOut, r["collection"].to_dict())
    _same_record(CollectionOut, r["created"].to_dict())
    _same_record(SubjectOut, r["subject"].to_dict())
    _same_record(ConsentOut, r["subject"].consents[0].to_dict())
    _same_record(TemplateOut, r["subject"].templates[0].to_dict())
    _same_record(AuditEventOut, r["event"].to_dict())
    _same_record(AuditReportOut, r["report"].to_dict())
    _same_record(KeyOut, r["key"].to_dict())
    _same_record(PurgeOut, r["purge"].to_dict())
    _same_record(CandidateOut, r["found"].candidates[0].to_dict())
    _same_record(DuplicateOut, DuplicateMatch("E2", 0.61).to_dict())
    _same_record(QualityOut, r["found"].face.quality.to_dict())
    image = r["enrolled"].images[0]
    _same_record(ImageOutcomeOut, image.to_dict())


def test_models_with_fields_of_the_http_edge(records):
    """FaceOut: the quality verdict under the collection's policy. IdentifyOut: the decision word
    and reason codes. EnrollOut: the liveness session used. Nested faces are the verdict-bearing
    FaceOut as the routes send them (service.faces.face_out)."""
    r = records
    found, enrolled = r["found"], r["enrolled"]
    face = face_out(found.face)
    _same_record(FaceOut, found.face.to_dict(), {k: face[k] for k in ("quality_ok", "quality_reasons")})
    _same_record(IdentifyOut, {**found.to_dict(), "face": face},
                 {"decision": "match", "reasons": ["candidates_at_or_above_threshold"]})
    _same_record(EnrollOut, enrolled.to_dict(), {"liveness_session": None})
