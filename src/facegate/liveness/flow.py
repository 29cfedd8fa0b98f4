"""One submission for one session: bind the frames to the session, run the checker, record the
outcome. Used by the REST router and usable directly by any other front end.

Binding a capture to its session (and what that does not prove) — see docs/liveness.md:

1. **Random challenges.** The session's 2–4 movements are drawn server-side from 420 possible
   sequences; a capture that performs other or extra movements fails (``unexpected_movement``).
   This is what makes an earlier recording useless for most new sessions.
2. **Nonce.** The submission must carry the session's nonce (compared in constant time); a
   wrong nonce is refused without using up the session.
3. **Single use and expiry.** A session takes one submission, before ``expires_at`` (server
   clock). Late submissions get SessionExpiredError; repeated ones SessionUsedError.
4. **Verbatim replay.** The SHA-256 of every frame's bytes and of its decoded pixels is kept
   (24 h by default, in the session store); a frame already submitted under another session
   fails the new one (``frame_replayed``). A re-encoded or edited replay has other digests, so
   against those only (1) protects.
5. **Timestamps.** Capture times are client-supplied (ms since the Unix epoch). Frames stamped
   before the session was created or after it expired (± ``clock_skew_s``) fail, and so does a
   capture spanning more time than the session has existed (independent of the client's clock
   offset). Forged timestamps pass these checks: they stop careless replays, not careful ones.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..clock import SYSTEM, Clock
from ..errors import FacegateError
from ..vision import decode
from .capture import Frame
from .challenge import DEFAULT_TTL_S, LivenessSession, SessionOutcome, SessionStore
from .checker import LivenessChecker, LivenessConfig, LivenessResult
from .errors import LivenessInputError, NonceMismatchError

log = logging.getLogger("facegate.liveness")


@dataclass(frozen=True)
class SubmittedFrame:
    """A frame as a client sends it: encoded image bytes (or an RGB array) and its capture time
    in milliseconds since the Unix epoch."""

    image: bytes | np.ndarray
    timestamp_ms: float


@dataclass(frozen=True)
class FlowSettings:
    max_frames: int = 120
    max_frame_bytes: int = 2 * 1024 * 1024
    clock_skew_s: float = 120.0  # tolerated client/server clock difference
    span_slack_s: float = 2.0  # capture span may exceed the session's age by this much


@dataclass(frozen=True)
class LivenessSettings:
    """A front end's liveness settings: session lifetime, upload limits, the checker's thresholds."""

    session_ttl_s: float = DEFAULT_TTL_S
    checker: LivenessConfig = field(default_factory=LivenessConfig)
    flow: FlowSettings = field(default_factory=FlowSettings)
    recommended_fps: float = 10.0


def frame_digests(raw: bytes | None, rgb: np.ndarray) -> list[str]:
    out = []
    if raw is not None:
        out.append("b:" + hashlib.sha256(raw).hexdigest())
    h = hashlib.sha256(f"{rgb.shape}".encode())
    h.update(np.ascontiguousarray(rgb).data)
    out.append("p:" + h.hexdigest())
    return out


def submit_frames(
    store: SessionStore,
    checker: LivenessChecker,
    session_id: str,
    nonce: str,
    frames: Sequence[SubmittedFrame],
    *,
    owner: str | None = None,
    settings: FlowSettings = FlowSettings(),
    now: float | None = None,
    clock: Clock = SYSTEM,
) -> tuple[LivenessSession, LivenessResult]:
    """Check ``frames`` for session ``session_id`` and record the decision in ``store``.

    Raises (without using up the session) SessionNotFoundError, NonceMismatchError and
    LivenessInputError; (using it up or already used) SessionExpiredError, SessionUsedError.
    A not-live decision is a result, not an exception. ``now`` (Unix seconds) defaults to ``clock``'s.
    """
    session = store.get(session_id, owner=owner)
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), session.nonce.encode()):
        raise NonceMismatchError("the nonce does not belong to this liveness session")
    if not frames:
        raise LivenessInputError("no frames submitted")
    if len(frames) > settings.max_frames:
        raise LivenessInputError(
            f"{len(frames)} frames, more than the limit of {settings.max_frames}", frames=len(frames), limit=settings.max_frames
        )
    images: list[bytes | np.ndarray] = []
    digests: list[str] = []
    for i, f in enumerate(frames):
        raw = bytes(f.image) if isinstance(f.image, (bytes, bytearray, memoryview)) else None
        if raw is not None and len(raw) > settings.max_frame_bytes:
            raise LivenessInputError(f"frame {i} is larger than {settings.max_frame_bytes} bytes", frame=i)
        try:
            ts = float(f.timestamp_ms)
        except (TypeError, ValueError, OverflowError):
            raise LivenessInputError(f"frame {i} has no numeric timestamp", frame=i) from None
        if not np.isfinite(ts):
            raise LivenessInputError(f"frame {i} has no finite timestamp", frame=i)
        try:
            rgb = decode(raw if raw is not None else f.image, max_pixels=checker.config.max_frame_pixels)
        except FacegateError as exc:
            raise LivenessInputError(f"frame {i}: {exc.message}", frame=i, cause=exc.code) from None
        digests.extend(frame_digests(raw, rgb))
        images.append(raw if raw is not None else rgb)  # encoded bytes stay encoded until checked
        del rgb

    now = clock.now().timestamp() if now is None else now
    session = store.claim(session_id, owner=owner, now=now)
    try:
        binding: set[str] = set()
        if store.remember_frames(session.id, digests, now=now):
            binding.add("frame_replayed")
        times = [float(f.timestamp_ms) / 1000.0 for f in frames]
        if min(times) < session.created_at - settings.clock_skew_s:
            binding.add("timestamp_before_session")
        if max(times) > min(session.expires_at, now) + settings.clock_skew_s:
            binding.add("timestamp_after_expiry")
        if max(times) - min(times) > (now - session.created_at) + settings.span_slack_s:
            binding.add("capture_span_too_long")
        t0 = times[0]
        result = checker.check([Frame(img, t - t0) for img, t in zip(images, times)], session.challenges)
        result.add_reasons(binding)
        if not result.live:
            result.best_image = None
    except Exception as exc:
        reason = "check_error"
        store.finish(session.id, SessionOutcome(False, {"event": "liveness.decision", "session_id": session.id,
                                                        "live": False, "reasons": [reason]}, now))
        if not isinstance(exc, FacegateError):
            log.exception("liveness check failed for session %s", session.id)
        raise
    finally:
        images.clear()  # frames are not kept
    store.finish(
        session.id,
        SessionOutcome(
            live=result.live,
            decision=result.audit_record(session.id),
            completed_at=now,
            best_image=result.best_image if result.live else None,
            best_embedding=result.best_embedding.vector if (result.live and result.best_embedding is not None) else None,
            model=result.model,
        ),
    )
    return store.get(session.id, owner=owner), result


def owner_of(principal: Any) -> str | None:
    """A stable owner id from whatever the auth dependency returns: a string, or an object with
    ``key_id`` / ``id``."""
    if principal is None or isinstance(principal, str):
        return principal
    for attr in ("key_id", "id"):
        value = getattr(principal, attr, None)
        if value is not None:
            return str(value)
    return str(principal)


def take_best_frame(store: SessionStore, session_id: str, owner: str | None = None, now: float | None = None) -> np.ndarray:
    """For verify/enrol: the passed session's best frame (face-centred RGB crop), exactly once.
    SessionNotFoundError / SessionNotLiveError / SessionUsedError / SessionExpiredError otherwise."""
    outcome = store.consume(session_id, owner=owner, now=now)
    if outcome.best_image is None:
        from .errors import SessionNotLiveError

        raise SessionNotLiveError("this liveness session has no frame to use", session_id=session_id)
    return outcome.best_image
