"""Running the `facegate` CLI in tests: in-process through Typer's runner (models load once per
test session), or as a real process through the installed entry point (smoke tests only)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from facegate.cli import app


@dataclass(frozen=True)
class Ran:
    """What a shell sees of one command: exit status, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


def invoke(*args: object, input: str | None = None, env: dict[str, str | None] | None = None) -> Ran:
    """Run ``facegate ARGS`` in this process, with ``env`` set in the environment for the call
    (a None value unsets a variable). An exception escaping a command fails the test (it is
    not turned into exit status 1, which means a negative decision here)."""
    result = CliRunner().invoke(app, [str(a) for a in args], input=input, env=env, prog_name="facegate",
                                catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


def spawn(*args: object, entry_point: bool = False, env: dict[str, str] | None = None) -> Ran:
    """Run ``facegate ARGS`` as a real process: the installed console script with ``entry_point``,
    else ``python -m facegate``."""
    cmd = [str(Path(sys.executable).with_name("facegate"))] if entry_point else [sys.executable, "-m", "facegate"]
    res = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)
    return Ran(res.returncode, res.stdout, res.stderr)
