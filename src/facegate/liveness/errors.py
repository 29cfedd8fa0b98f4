"""Liveness failures with stable codes (part of the public contract: never rename a code).

A *decision* that a presentation is not live is not an error: it is a LivenessResult with
``live=False`` and reason codes. These exceptions are for requests that cannot be decided at all
(unknown, expired or used session, wrong nonce, unreadable frames) and for consuming a session
whose check did not pass.
"""

from __future__ import annotations

from ..errors import FacegateError


class LivenessError(FacegateError):
    code = "liveness_error"
    http_status = 400


class SessionNotFoundError(LivenessError):
    """No such session, or it belongs to another caller (the two are not distinguished)."""

    code = "liveness_session_not_found"
    http_status = 404


class SessionExpiredError(LivenessError):
    code = "liveness_session_expired"
    http_status = 410


class SessionUsedError(LivenessError):
    """Frames were already submitted for this session, or its result was already consumed."""

    code = "liveness_session_used"
    http_status = 409


class NonceMismatchError(LivenessError):
    code = "liveness_nonce_mismatch"
    http_status = 403


class SessionNotLiveError(LivenessError):
    """The session's check did not pass (or has not run), so it has no frame to hand out."""

    code = "liveness_not_passed"
    http_status = 409


class SessionResultUnavailableError(LivenessError):
    """The session passed, but its result (best-frame crop) cannot be used: with the database
    store, it could not be decrypted — the gallery's master key was rotated since the check
    (``reason: master_key_rotated``) or the stored ciphertext was altered or moved from another
    session (``reason: integrity``) — or it was never stored (``reason: not_stored``). Fails
    closed: the session is used up and its result deleted; run a new liveness check."""

    code = "liveness_result_unavailable"
    http_status = 409


class LivenessInputError(LivenessError):
    """The frames cannot be checked: none, too many, unreadable, timestamps missing or malformed."""

    code = "liveness_bad_frames"
    http_status = 422


class UnsupportedMediaTypeError(LivenessInputError):
    """Frames sent in a body that is neither multipart/form-data nor JSON."""

    code = "liveness_unsupported_media_type"
    http_status = 415


class UnknownChallengeError(LivenessError, ValueError):
    code = "liveness_unknown_challenge"
    http_status = 400
