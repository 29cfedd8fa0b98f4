"""Face serialisation with the enrolment quality verdict (the gallery's QualityPolicy)."""

from __future__ import annotations

from typing import Any

from ..gallery import QualityPolicy
from ..results import Face

_DEFAULT_POLICY = QualityPolicy()


def quality_verdict(face: Face, policy: QualityPolicy | None = None) -> tuple[bool, list[str]]:
    """(passes, every reason code of the enrolment gate) for ``face`` under ``policy`` (default:
    the gallery's default policy)."""
    reasons = [code for code, _ in (policy or _DEFAULT_POLICY).failures(face.quality)]
    return not reasons, reasons


def face_out(face: Face, policy: QualityPolicy | None = None) -> dict[str, Any]:
    ok, reasons = quality_verdict(face, policy)
    return {**face.to_dict(), "quality_ok": ok, "quality_reasons": reasons}
