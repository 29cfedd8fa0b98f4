"""Shared fixtures: one FaceEngine for the whole run (loading models is the slow part),
the public-domain photos in tests/data (provenance: tests/data/PROVENANCE.md), and the
public-domain liveness clip, decoded and checked once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CLIP = DATA / "liveness" / "miranda_motion.mp4"


def pytest_configure(config: pytest.Config) -> None:
    """The CLI wraps its output to $COLUMNS when it is set: pytest-xdist's workers start with
    COLUMNS=80 and LINES=24, a plain run with whatever the shell exported. Tests see neither, so
    the output they read does not depend on how the suite was started (a test that wants a width
    passes COLUMNS to the command)."""
    for var in ("COLUMNS", "LINES"):
        os.environ.pop(var, None)


@pytest.fixture(scope="session")
def engine():
    from facegate import FaceEngine

    return FaceEngine()


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """obama_1..3 (one person, three photos), biden_1, collins_1."""
    return {p.stem: p for p in sorted(DATA.glob("*.jpg"))}


@pytest.fixture(scope="session")
def clip():
    """The clip's frames (10 fps, capture times from 0); tests must not modify them."""
    from facegate.liveness import read_video

    return read_video(CLIP)


@pytest.fixture(scope="session")
def moves(engine, clip):
    """The movements the clip happens to contain (it is not a challenge response)."""
    from facegate.liveness import LivenessChecker

    return [e.kind for e in LivenessChecker(engine).check(clip, []).events]
