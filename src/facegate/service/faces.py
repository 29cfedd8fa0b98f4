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
    """The same reason codes the gallery's enrolment gate reports (docs/gallery.md)."""
    q = face.quality
    reasons = []
    if q.inter_eye_px < p.min_inter_eye_px:
        reasons.append("face_too_small")
    if q.sharpness < p.min_sharpness:
        reasons.append("too_blurry")
    if abs(q.yaw_deg) > p.max_abs_yaw_deg or abs(q.pitch_deg) > p.max_abs_pitch_deg or abs(q.roll_deg) > p.max_abs_roll_deg:
        reasons.append("pose_out_of_range")
    if not (p.min_brightness <= q.brightness <= p.max_brightness) or q.clipped > p.max_clipped:
        reasons.append("bad_exposure")
    if q.detector_score < p.min_detector_score:
        reasons.append("low_detector_score")
    return reasons


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
