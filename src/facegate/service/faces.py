"""Face serialisation with the enrolment quality verdict (the gallery's QualityPolicy)."""

from __future__ import annotations

from typing import Any

from ..results import Face


def _policy(policy: Any) -> Any:
    if policy is not None:
        return policy
    from ..gallery import QualityPolicy  # type: ignore[attr-defined]

    return QualityPolicy()


def _gate(face: Face, p: Any) -> list[str]:
    """The reason codes of the gallery's enrolment gate (QualityPolicy.failures), all of them."""
    return [code for code, _ in p.failures(face.quality)]


def quality_verdict(service: Any, face: Face, policy: Any = None) -> tuple[bool, list[str]]:
    """(passes, reason codes) for ``face`` under ``policy`` (default: the gallery's default)."""
    gate = service.extensions.get("quality_gate") if service is not None else None
    if gate is not None:
        return gate(face, _policy(policy))
    reasons = _gate(face, _policy(policy))
    return not reasons, reasons


def face_out(service: Any, face: Face, policy: Any = None) -> dict[str, Any]:
    ok, reasons = quality_verdict(service, face, policy)
    return {**face.to_dict(), "quality_ok": ok, "quality_reasons": reasons}
