"""Challenges and liveness sessions: what the person is asked to do, and the session that binds
one capture to one random request.

A session is created by the server (never by the client): a random id, a random nonce, a random
sequence of 2–4 challenges with no immediate repeats, and an expiry (3 minutes by default). Its
life cycle, enforced atomically by the store::

    pending --claim--> checking --finish--> passed | failed
    passed --consume--> consumed          (verify/enrol take the best frame, once)

Frames can be submitted once (``claim``); the result of a passed session can be used once
(``consume``). ``SessionStore`` is the interface; ``InMemorySessionStore`` is a thread-safe
implementation for one process. A database-backed store only has to implement the same methods
with the same atomicity (e.g. ``UPDATE … WHERE state = 'pending'``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..clock import SYSTEM, Clock
from .errors import (
    SessionExpiredError,
    SessionNotFoundError,
    SessionNotLiveError,
    SessionUsedError,
    UnknownChallengeError,
)

DEFAULT_TTL_S = 180.0
# How long a passed session's best frame stays available to verify/enrol after the check.
DEFAULT_RESULT_TTL_S = 120.0
# How long frame digests are remembered to refuse verbatim replays in later sessions.
DEFAULT_REPLAY_TTL_S = 24 * 3600.0
MIN_CHALLENGES, MAX_CHALLENGES = 2, 4


class Challenge(str, Enum):  # noqa: UP042 - StrEnum would change str() of members, which messages show
    """One movement. Directions are the *person's* own (turn_left = turn to your left), measured
    on unmirrored camera frames."""

    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    LOOK_UP = "look_up"
    LOOK_DOWN = "look_down"
    MOVE_CLOSER = "move_closer"

    @property
    def prompt(self) -> str:
        return _PROMPTS[self]

    @classmethod
    def parse(cls, value: str | Challenge) -> Challenge:
        """Accept ``turn_left`` / ``left`` / ``Turn-Left`` …; UnknownChallengeError otherwise."""
        if isinstance(value, Challenge):
            return value
        key = str(value).strip().lower().replace("-", "_").replace(" ", "_")
        hit = _ALIASES.get(key)
        if hit is None:
            raise UnknownChallengeError(
                f"unknown challenge {value!r}; use one of {', '.join(sorted(_ALIASES))}", challenge=str(value)
            )
        return hit

    @classmethod
    def parse_list(cls, values: str | Iterable[str | Challenge]) -> list[Challenge]:
        """``"left,up"`` or ``["turn_left", "look_up"]`` -> [TURN_LEFT, LOOK_UP]."""
        if isinstance(values, str):
            values = [v for v in values.split(",") if v.strip()]
        return [cls.parse(v) for v in values]


_PROMPTS = {
    Challenge.TURN_LEFT: "Turn your head to your left, then back to the camera",
    Challenge.TURN_RIGHT: "Turn your head to your right, then back to the camera",
    Challenge.LOOK_UP: "Tilt your head up, then back to the camera",
    Challenge.LOOK_DOWN: "Tilt your head down, then back to the camera",
    Challenge.MOVE_CLOSER: "Move closer to the camera",
}
_ALIASES: dict[str, Challenge] = {c.value: c for c in Challenge}
_ALIASES.update(
    left=Challenge.TURN_LEFT, right=Challenge.TURN_RIGHT, up=Challenge.LOOK_UP, down=Challenge.LOOK_DOWN,
    closer=Challenge.MOVE_CLOSER, close=Challenge.MOVE_CLOSER,
)


def random_challenges(n: int | None = None, *, rng: secrets.SystemRandom | Any | None = None) -> list[Challenge]:
    """A sequence of ``n`` (default: random 2–4) challenges from the OS CSPRNG, no immediate repeats.

    ``rng`` (anything with ``randrange``) exists for tests; production code leaves it ``None``.
    """
    rand = rng or secrets.SystemRandom()
    if n is None:
        n = MIN_CHALLENGES + rand.randrange(MAX_CHALLENGES - MIN_CHALLENGES + 1)
    if not MIN_CHALLENGES <= n <= MAX_CHALLENGES:
        raise ValueError(f"a session has {MIN_CHALLENGES}–{MAX_CHALLENGES} challenges, not {n}")
    kinds = list(Challenge)
    out: list[Challenge] = []
    for _ in range(n):
        choices = [c for c in kinds if not out or c is not out[-1]]
        out.append(choices[rand.randrange(len(choices))])
    return out


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class SessionOutcome:
    """What a checked session keeps: the audit-safe decision and, only when it passed, the best
    frame for verify/enrol (in memory, handed out once, dropped after ``result_ttl``)."""

    live: bool
    decision: dict[str, Any]
    completed_at: float
    best_image: np.ndarray | None = field(default=None, repr=False)  # face-centred RGB crop of the best frame
    best_embedding: np.ndarray | None = field(default=None, repr=False)
    model: str | None = None


@dataclass
class LivenessSession:
    id: str
    nonce: str
    challenges: tuple[Challenge, ...]
    created_at: float  # Unix seconds, server clock
    expires_at: float
    owner: str | None = None  # the caller that created it (e.g. API key id); only it may use the session
    state: str = "pending"  # pending | checking | passed | failed | consumed
    outcome: SessionOutcome | None = field(default=None, repr=False)
    result_ttl_s: float = DEFAULT_RESULT_TTL_S

    def expired(self, now: float | None = None, clock: Clock = SYSTEM) -> bool:
        return (clock.now().timestamp() if now is None else now) >= self.expires_at

    def to_dict(self, *, include_nonce: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "challenges": [c.value for c in self.challenges],
            "prompts": [c.prompt for c in self.challenges],
            "created_at": _utc(self.created_at),
            "expires_at": _utc(self.expires_at),
            "state": self.state,
        }
        if include_nonce:
            out["nonce"] = self.nonce
        if self.outcome is not None:
            out["live"] = self.outcome.live
            out["reasons"] = list(self.outcome.decision.get("reasons", []))
        return out


def create_session(
    challenges: Sequence[Challenge | str] | None = None,
    *,
    ttl_s: float = DEFAULT_TTL_S,
    owner: str | None = None,
    now: float | None = None,
    n: int | None = None,
    rng: Any | None = None,
    clock: Clock = SYSTEM,
) -> LivenessSession:
    """A new session with a random id and nonce. ``challenges`` should be left ``None`` (random)
    in production: a client that picks its challenges defeats the point."""
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    now = clock.now().timestamp() if now is None else now
    seq = Challenge.parse_list(challenges) if challenges is not None else random_challenges(n, rng=rng)
    return LivenessSession(
        id=secrets.token_urlsafe(16),
        nonce=secrets.token_urlsafe(16),
        challenges=tuple(seq),
        created_at=now,
        expires_at=now + ttl_s,
        owner=owner,
    )


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions live between create, submit and consume; every state change is atomic.
    The in-memory store below and ``db_store.DatabaseSessionStore`` implement it; the flow and
    the service depend on this interface only."""

    def add(self, session: LivenessSession) -> None:
        """A new session; ValueError for a duplicate id."""

    def get(self, session_id: str, owner: str | None = None, now: float | None = None) -> LivenessSession:
        """A copy of the session; SessionNotFoundError if unknown, purged or owned by someone else."""

    def claim(self, session_id: str, owner: str | None = None, now: float | None = None) -> LivenessSession:
        """pending -> checking, atomically: the one submission this session gets.
        SessionNotFoundError / SessionExpiredError / SessionUsedError otherwise."""

    def finish(self, session_id: str, outcome: SessionOutcome) -> None:
        """checking -> passed | failed, keeping ``outcome``."""

    def consume(self, session_id: str, owner: str | None = None, now: float | None = None) -> SessionOutcome:
        """passed -> consumed, atomically, returning the outcome with the best frame (once).
        SessionNotLiveError if it failed or is unchecked; SessionUsedError if consumed;
        SessionExpiredError once ``result_ttl`` has passed."""

    def remember_frames(self, session_id: str, digests: Iterable[str], now: float | None = None) -> set[str]:
        """Record this session's frame digests; return those already recorded for *another*
        session within the replay window (verbatim replays)."""

    def purge(self, now: float | None = None) -> int:
        """Drop expired sessions, stale outcomes and old digests; returns how many sessions went."""


class InMemorySessionStore:
    """Thread-safe, single-process store. Nothing is written to disk.

    ``max_sessions`` bounds memory: the oldest sessions are evicted first. Frame digests
    (SHA-256, not invertible) are kept ``replay_ttl_s`` (24 h) and at most ``max_digests``.
    ``clock``: "now" where a call is not given one.
    """

    def __init__(
        self,
        *,
        max_sessions: int = 100_000,
        replay_ttl_s: float = DEFAULT_REPLAY_TTL_S,
        max_digests: int = 2_000_000,
        clock: Clock = SYSTEM,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, LivenessSession] = OrderedDict()
        self._digests: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.max_sessions = max_sessions
        self.replay_ttl_s = replay_ttl_s
        self.max_digests = max_digests
        self.purge_every_s = 60.0
        self._last_purge = self._now()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _now(self) -> float:
        return self._clock.now().timestamp()

    # -- helpers (call with the lock held) ---------------------------------------------------

    def _find(self, session_id: str, owner: str | None) -> LivenessSession:
        s = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if s is None or (s.owner is not None and owner != s.owner):
            raise SessionNotFoundError("no such liveness session", session_id=str(session_id)[:64])
        return s

    # -- interface ---------------------------------------------------------------------------

    def add(self, session: LivenessSession) -> None:
        now = self._now()
        if now - self._last_purge > self.purge_every_s:
            self._last_purge = now
            self.purge()
        with self._lock:
            if session.id in self._sessions:
                raise ValueError("duplicate session id")
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)

    def get(self, session_id: str, owner: str | None = None, now: float | None = None) -> LivenessSession:
        with self._lock:
            return dataclasses.replace(self._find(session_id, owner))

    def claim(self, session_id: str, owner: str | None = None, now: float | None = None) -> LivenessSession:
        now = self._now() if now is None else now
        with self._lock:
            s = self._find(session_id, owner)
            if s.state != "pending":
                raise SessionUsedError("frames were already submitted for this liveness session", session_id=s.id)
            if s.expired(now):
                raise SessionExpiredError("this liveness session has expired; start a new one", session_id=s.id)
            s.state = "checking"
            return dataclasses.replace(s)

    def finish(self, session_id: str, outcome: SessionOutcome) -> None:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                return  # evicted meanwhile: nothing to keep
            if s.state != "checking":
                raise SessionUsedError("liveness session is not being checked", session_id=session_id)
            if not outcome.live:
                outcome.best_image = None
                outcome.best_embedding = None
            s.outcome = outcome
            s.state = "passed" if outcome.live else "failed"

    def consume(self, session_id: str, owner: str | None = None, now: float | None = None) -> SessionOutcome:
        now = self._now() if now is None else now
        with self._lock:
            s = self._find(session_id, owner)
            if s.state == "consumed":
                raise SessionUsedError("this liveness session was already used", session_id=s.id)
            if s.state != "passed" or s.outcome is None:
                raise SessionNotLiveError(
                    "this liveness session has not passed a liveness check", session_id=s.id, state=s.state
                )
            if now >= s.outcome.completed_at + s.result_ttl_s:
                s.outcome.best_image = None
                s.outcome.best_embedding = None
                raise SessionExpiredError("this liveness result has expired; run a new liveness check", session_id=s.id)
            out = dataclasses.replace(s.outcome)
            # Hand the frame out once and forget it here.
            s.outcome.best_image = None
            s.outcome.best_embedding = None
            s.state = "consumed"
            return out

    def remember_frames(self, session_id: str, digests: Iterable[str], now: float | None = None) -> set[str]:
        now = self._now() if now is None else now
        seen: set[str] = set()
        with self._lock:
            for d in digests:
                prev = self._digests.get(d)
                if prev is not None and prev[0] != session_id and now - prev[1] < self.replay_ttl_s:
                    seen.add(d)
                    continue  # keep the first session as the owner of that frame
                self._digests[d] = (session_id, now)
                self._digests.move_to_end(d)
            while len(self._digests) > self.max_digests:
                self._digests.popitem(last=False)
        return seen

    def purge(self, now: float | None = None) -> int:
        now = self._now() if now is None else now
        dropped = 0
        with self._lock:
            for sid in list(self._sessions):
                s = self._sessions[sid]
                done_at = s.outcome.completed_at + s.result_ttl_s if s.outcome is not None else None
                if s.outcome is not None and done_at is not None and now >= done_at:
                    s.outcome.best_image = None
                    s.outcome.best_embedding = None
                # Keep a record (state only) a while after expiry so late submissions get "used"/"expired".
                horizon = max(s.expires_at, done_at or 0.0) + 3600.0
                if now >= horizon:
                    del self._sessions[sid]
                    dropped += 1
            while self._digests:
                _, (_, ts) = next(iter(self._digests.items()))
                if now - ts < self.replay_ttl_s:
                    break
                self._digests.popitem(last=False)
        return dropped
