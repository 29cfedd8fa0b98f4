"""A real `facegate serve` process on a free 127.0.0.1 port, for the tests that need the server
itself (the browser tests, attacks on the HTTP server)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from facegate.client import wait_ready

ADMIN_KEY = re.compile(r"\b(fg_[0-9a-f]{8}_[A-Za-z0-9_-]{43})\b")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    admin_key: str
    out: Path
    log: Path

    def stop(self) -> int | None:
        """SIGTERM (graceful shutdown), then kill after 20 s; the exit status."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.returncode


def start_serve(data_dir: Path, workdir: Path, env: dict[str, str]) -> Served:
    """Start `facegate serve --data-dir data_dir` (first start: it prints the admin key), wait
    until it is ready, and return it. ``env`` is added to this process's environment."""
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    environ.pop("FACEGATE_MASTER_KEY", None)
    port = free_port()
    cmd = [sys.executable, "-c", "from facegate.cli import app; app()", "serve", "--data-dir", str(data_dir),
           "--port", str(port), "--host", "127.0.0.1"]
    out, log = workdir / "serve.out", workdir / "serve.log"
    with open(out, "wb") as stdout, open(log, "wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=environ, cwd=str(workdir))
    url = f"http://127.0.0.1:{port}"

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"facegate serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")

    try:
        wait_ready(url, timeout=90, alive=alive)
    except TimeoutError:
        proc.terminate()
        raise RuntimeError(f"facegate serve did not become ready:\n{log.read_text()[-3000:]}") from None
    key = ADMIN_KEY.search(out.read_text())
    if key is None:
        proc.terminate()
        raise RuntimeError(f"first start did not print an admin key:\n{out.read_text()}")
    return Served(proc, url, key.group(1), out, log)
