"""Durable renames: after a file is created or renamed, its directory entry is on disk only once
the directory itself is fsynced."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync the directory ``path``. A platform without directory handles (Windows) has nothing
    to sync; a failing fsync raises, since the caller's durability claim would not hold."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
