"""Shared fixtures: one FaceEngine for the whole run (loading models is the slow part),
and the public-domain photos in tests/data (provenance: tests/data/PROVENANCE.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def engine():
    from facegate import FaceEngine

    return FaceEngine()


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """obama_1..3 (one person, three photos), biden_1, collins_1."""
    return {p.stem: p for p in sorted(DATA.glob("*.jpg"))}
