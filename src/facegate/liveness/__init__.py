"""Active liveness: randomised challenge-response sessions (see docs/liveness.md)."""

from .challenge import (
    Challenge,
    InMemorySessionStore,
    LivenessSession,
    SessionOutcome,
    SessionStore,
    create_session,
    random_challenges,
)
from .checker import REASONS, Frame, LivenessChecker, LivenessConfig, LivenessResult, check_frames, read_frames, read_video
from .errors import (
    LivenessError,
    LivenessInputError,
    NonceMismatchError,
    SessionExpiredError,
    SessionNotFoundError,
    SessionNotLiveError,
    SessionUsedError,
    UnknownChallengeError,
)
from .motion import ChallengeStatus, PoseThresholds

__all__ = [
    "REASONS",
    "Challenge",
    "ChallengeStatus",
    "Frame",
    "InMemorySessionStore",
    "LivenessChecker",
    "LivenessConfig",
    "LivenessError",
    "LivenessInputError",
    "LivenessResult",
    "LivenessSession",
    "NonceMismatchError",
    "PoseThresholds",
    "SessionExpiredError",
    "SessionNotFoundError",
    "SessionNotLiveError",
    "SessionOutcome",
    "SessionStore",
    "SessionUsedError",
    "UnknownChallengeError",
    "check_frames",
    "create_session",
    "random_challenges",
    "read_frames",
    "read_video",
]
