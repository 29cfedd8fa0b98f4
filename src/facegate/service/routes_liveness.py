"""The liveness session routes.

Endpoints (prefix ``/v1/liveness``)::

    POST /sessions                     -> 201 {id, nonce, challenges, prompts, created_at, expires_at, …}
    GET  /sessions/{id}                -> 200 {id, state, challenges, expires_at, live?, reasons?}
    POST /sessions/{id}/frames         -> 200 the decision {live, reasons, challenges, best_frame, …}

Frames are sent once per session, either as ``multipart/form-data`` — a ``nonce`` field, a
``timestamps`` field (JSON array or comma-separated capture times, ms since the Unix epoch, one
per frame, in order) and one ``frames`` file part per frame — or as ``application/json``:
``{"nonce": "…", "frames": [{"image": "<base64>", "timestamp_ms": 1767225600000}, …]}``.
A not-live decision is a 200 with ``live: false`` and reason codes; errors (unknown session 404,
wrong nonce 403, used 409, expired 410, unreadable frames 422) raise FacegateError subclasses
(``liveness.errors``), which the service turns into problem+json.

Callers need an API key with the verify, enroll or identify scope; a session is bound to the
key that created it, and only that key may submit frames to, read or use it. Sessions live in
``service.liveness.store`` (the gallery's database by default); decisions go to the audit log
(session id, decision, reason codes, challenge statuses, frame count and the caller — never
images, landmarks or templates); frame checks run on the service's engine, bounded to its worker
count (``service.liveness``).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field
from pydantic_core import from_json
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..liveness.challenge import LivenessSession, create_session
from ..liveness.checker import LivenessChecker
from ..liveness.errors import LivenessError, LivenessInputError, UnsupportedMediaTypeError
from ..liveness.flow import SubmittedFrame, owner_of, submit_frames
from .auth import Principal
from .deps import ServiceDep, needs
from .liveness import ServiceLiveness


def get_liveness(service: ServiceDep) -> ServiceLiveness:
    return service.liveness


# Liveness proves presence before a verification, an enrolment or an identification.
Caller = Annotated[Principal, needs("verify", "enroll", "identify")]
Liveness = Annotated[ServiceLiveness, Depends(get_liveness)]
SessionId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Liveness session id.")]


# --- response models ----------------------------------------------------------------------------


class UploadLimits(BaseModel):
    max_frames: int
    max_frame_bytes: int
    recommended_fps: float
    min_fps: float = Field(description="Captures whose median frame rate is lower are refused (capture_rate_too_low).")
    timestamp_unit: str = "ms_since_unix_epoch"


class SessionCreated(BaseModel):
    id: str
    nonce: str = Field(description="Send it back with the frames.")
    challenges: list[str] = Field(description="Movements to perform, in this order: turn_left, turn_right, look_up, look_down, "
                                              "move_closer (the person's own left/right).")
    prompts: list[str] = Field(description="Human-readable instructions, one per challenge.")
    created_at: str
    expires_at: str
    state: str
    upload: UploadLimits


class SessionState(BaseModel):
    id: str
    state: str = Field(description="pending | checking | passed | failed | consumed")
    challenges: list[str]
    prompts: list[str]
    created_at: str
    expires_at: str
    live: bool | None = None
    reasons: list[str] | None = None


class ChallengeOut(BaseModel):
    challenge: str
    status: str = Field(description="met | late | out_of_order | missing")
    start_s: float | None = None
    peak_s: float | None = None
    end_s: float | None = None
    peak: float | None = None


class Decision(BaseModel):
    session_id: str
    state: str
    live: bool
    decision: str = Field(description="live | not_live")
    reasons: list[str]
    challenges: list[ChallengeOut]
    movements: list[dict[str, Any]]
    frames: int
    face_frames: int
    duration_s: float
    best_frame: int | None
    best_face: dict[str, Any] | None
    metrics: dict[str, Any]
    model: str


_FRAMES_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["nonce", "timestamps", "frames"],
                "properties": {
                    "nonce": {"type": "string"},
                    "timestamps": {
                        "type": "string",
                        "description": "Capture times in ms since the Unix epoch, one per frame in order: "
                                       "a JSON array or comma-separated.",
                    },
                    "frames": {"type": "array", "items": {"type": "string", "format": "binary"}},
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["nonce", "frames"],
                "properties": {
                    "nonce": {"type": "string"},
                    "frames": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["image", "timestamp_ms"],
                            "properties": {
                                "image": {"type": "string", "description": "base64-encoded JPEG/PNG/WebP"},
                                "timestamp_ms": {"type": "number"},
                            },
                        },
                    },
                },
            }
        },
    },
}

router = APIRouter(prefix="/v1/liveness", tags=["liveness"])


def _session_dict(session: LivenessSession) -> dict[str, Any]:
    return session.to_dict(include_nonce=False)


@router.post("/sessions", status_code=201, response_model=SessionCreated, summary="Start a liveness session")
async def create_liveness_session(live: Liveness, caller: Caller) -> dict[str, Any]:
    """A random 2–4 movement challenge, a nonce and an expiry. Capture the person performing the
    movements in order (about 10 frames per second, starting facing the camera) and post the
    frames to ``/sessions/{id}/frames`` before ``expires_at``."""
    owner = owner_of(caller)
    settings = live.settings
    session = create_session(ttl_s=settings.session_ttl_s, owner=owner, clock=live.clock)
    await run_in_threadpool(live.store.add, session)  # a database store blocks: keep it off the event loop
    live.audit(caller, {"event": "liveness.session_created", "session_id": session.id, "actor": owner,
                        "challenges": [c.value for c in session.challenges]})
    return {
        **session.to_dict(include_nonce=True),
        "upload": {
            "max_frames": min(settings.flow.max_frames, settings.checker.max_frames),
            "max_frame_bytes": settings.flow.max_frame_bytes,
            "recommended_fps": settings.recommended_fps,
            "min_fps": settings.checker.min_fps,
        },
    }


@router.get("/sessions/{session_id}", response_model=SessionState, summary="A liveness session's state")
async def get_liveness_session(session_id: SessionId, live: Liveness, caller: Caller) -> dict[str, Any]:
    return _session_dict(await run_in_threadpool(live.store.get, session_id, owner_of(caller)))


@router.post(
    "/sessions/{session_id}/frames",
    response_model=Decision,
    summary="Submit the captured frames and get the liveness decision",
    openapi_extra={"requestBody": _FRAMES_BODY},
)
async def submit_liveness_frames(
    session_id: SessionId, request: Request, live: Liveness, caller: Caller
) -> dict[str, Any]:
    """Checks, once per session: one face throughout, the same person in every frame, the asked
    movements in order and in time and nothing else, natural (not planar, not repeated) change,
    and a large, sharp best frame. ``live: false`` comes with reason codes (docs/liveness.md)."""
    owner = owner_of(caller)
    settings = live.settings
    limit = min(settings.flow.max_frames, settings.checker.max_frames)
    nonce, frames = await _read_frames(request, limit, settings.flow.max_frame_bytes)
    checker = LivenessChecker(live.engine, settings.checker)
    try:
        session, result = await run_in_threadpool(
            submit_frames, live.store, checker, session_id, nonce, frames, owner=owner, settings=settings.flow,
            clock=live.clock,
        )
    except LivenessError as exc:
        live.audit(caller, {"event": "liveness.rejected", "session_id": session_id, "actor": owner, "code": exc.code})
        raise
    record = result.audit_record(session.id)
    record["actor"] = owner
    live.audit(caller, record)
    body = result.to_dict()
    return {"session_id": session.id, "state": session.state, "decision": "live" if result.live else "not_live", **body}


# --- request parsing ----------------------------------------------------------------------------


def _parse_timestamps(raw: Any, count: int) -> list[float]:
    if not isinstance(raw, str) or not raw.strip():
        raise LivenessInputError("the timestamps field is required: one capture time (ms since the Unix epoch) per frame")
    text = raw.strip()
    try:
        if text.startswith("["):
            values = from_json(text, allow_inf_nan=False)
        else:
            values = [float(v) for v in re.split(r"[,\s]+", text) if v]
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError("not numbers")
        numbers = [float(v) for v in values]
    except Exception:  # malformed JSON, non-numbers, integers too large for a float, absurd nesting
        raise LivenessInputError("timestamps must be numbers: a JSON array or comma-separated") from None
    if not all(math.isfinite(v) for v in numbers):
        raise LivenessInputError("timestamps must be finite numbers")
    if len(numbers) != count:
        raise LivenessInputError(f"{len(numbers)} timestamps for {count} frames; send one per frame",
                                 timestamps=len(numbers), frames=count)
    return numbers


async def _read_frames(request: Request, limit: int, max_bytes: int) -> tuple[str, list[SubmittedFrame]]:
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=limit + 1, max_fields=16)
        except Exception as exc:  # malformed multipart, too many parts
            raise LivenessInputError(f"unreadable multipart body: {exc}") from None
        nonce = form.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise LivenessInputError("the nonce field is required")
        parts = form.getlist("frames")
        if not parts:
            raise LivenessInputError("no frames: send one 'frames' file part per frame")
        if len(parts) > limit:
            raise LivenessInputError(f"{len(parts)} frames, more than the limit of {limit}", frames=len(parts), limit=limit)
        images: list[bytes] = []
        for i, part in enumerate(parts):
            if not isinstance(part, UploadFile):
                raise LivenessInputError(f"frame {i} is not a file part", frame=i)
            data = await part.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise LivenessInputError(f"frame {i} is larger than {max_bytes} bytes", frame=i)
            images.append(data)
        stamps = _parse_timestamps(form.get("timestamps"), len(images))
        return nonce, [SubmittedFrame(img, ts) for img, ts in zip(images, stamps)]
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            # pydantic-core's parser bounds nesting and refuses NaN/Infinity (the stdlib's accepts both).
            body = from_json(await request.body(), allow_inf_nan=False)
        except ValueError:
            raise LivenessInputError("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise LivenessInputError("the body must be a JSON object with nonce and frames")
        nonce = body.get("nonce")
        items = body.get("frames")
        if not isinstance(nonce, str) or not nonce:
            raise LivenessInputError("nonce (string) is required")
        if not isinstance(items, list) or not items:
            raise LivenessInputError("frames (non-empty array) is required")
        if len(items) > limit:
            raise LivenessInputError(f"{len(items)} frames, more than the limit of {limit}", frames=len(items), limit=limit)
        frames: list[SubmittedFrame] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("image"), str):
                raise LivenessInputError(f"frames[{i}] needs image (base64 string) and timestamp_ms", frame=i)
            ts = item.get("timestamp_ms")
            if not isinstance(ts, (int, float)) or isinstance(ts, bool):
                raise LivenessInputError(f"frames[{i}].timestamp_ms must be a number", frame=i)
            text = item["image"]
            if "," in text[:100] and text.lstrip().startswith("data:"):
                text = text.split(",", 1)[1]  # data URL
            if len(text) > max_bytes * 4 // 3 + 8:
                raise LivenessInputError(f"frame {i} is larger than {max_bytes} bytes", frame=i)
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise LivenessInputError(f"frames[{i}].image is not valid base64", frame=i) from None
            try:
                stamp = float(ts)
            except OverflowError:
                raise LivenessInputError(f"frames[{i}].timestamp_ms is out of range", frame=i) from None
            if not math.isfinite(stamp):
                raise LivenessInputError(f"frames[{i}].timestamp_ms is out of range", frame=i)
            frames.append(SubmittedFrame(data, stamp))
        return nonce, frames
    raise UnsupportedMediaTypeError("send frames as multipart/form-data or application/json", content_type=ctype[:100])

