"""The API's response models and the library's result dataclasses describe the same records:
a field added to one and not the other fails here, not in a client."""

from __future__ import annotations

import dataclasses

import pytest

from facegate.gallery import AuditReport, Candidate, DuplicateMatch, ImageOutcome
from facegate.service.schemas import AuditReportOut, CandidateOut, DuplicateOut, ImageOutcomeOut


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
