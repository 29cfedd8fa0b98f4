"""Active liveness: randomised challenge-response sessions (see docs/liveness.md).

``facegate.liveness.db_store.DatabaseSessionStore`` (sessions in the gallery database, shared by
processes) is imported from its module, so that this package does not load SQLAlchemy; nor does
it load FastAPI (the HTTP routes are the service's, ``facegate.service.routes_liveness``)."""

from .capture import Frame, read_frames, read_video
from .challenge import (
    Challenge,
    InMemorySessionStore,
    LivenessSession,
    SessionOutcome,
    SessionStore,
    create_session,
    random_challenges,
)
from .checker import REASONS, LivenessChecker, LivenessConfig, LivenessResult, check_frames
from .errors import (
    LivenessError,
    LivenessInputError,
    NonceMismatchError,
    SessionExpiredError,
    SessionNotFoundError,
    SessionNotLiveError,
    SessionResultUnavailableError,
    SessionUsedError,
    UnknownChallengeError,
)
from .flow import FlowSettings, LivenessSettings, SubmittedFrame, submit_frames, take_best_frame
from .motion import ChallengeStatus, PoseThresholds

__all__ = [
    "REASONS",
    "Challenge",
    "ChallengeStatus",
    "FlowSettings",
    "Frame",
    "InMemorySessionStore",
    "LivenessChecker",
    "LivenessConfig",
    "LivenessError",
    "LivenessInputError",
    "LivenessResult",
    "LivenessSettings",
    "LivenessSession",
    "NonceMismatchError",
    "PoseThresholds",
    "SessionExpiredError",
    "SessionNotFoundError",
    "SessionNotLiveError",
    "SessionOutcome",
    "SessionResultUnavailableError",
    "SessionStore",
    "SessionUsedError",
    "SubmittedFrame",
    "UnknownChallengeError",
    "check_frames",
    "create_session",
    "random_challenges",
    "read_frames",
    "read_video",
    "submit_frames",
    "take_best_frame",
]
