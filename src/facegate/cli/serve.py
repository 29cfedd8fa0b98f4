"""`facegate serve`: the REST service and web console on the embedded store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from .. import __version__
from ._common import App, err_console, handle_errors

app = App()


@app.command()
@handle_errors
def serve(
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default 127.0.0.1; FACEGATE_HOST)."),
    port: int | None = typer.Option(None, "--port", "-p", help="Port (default 8000; FACEGATE_PORT)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Store directory (default ./.facegate; FACEGATE_DATA_DIR)."),
    workers: int | None = typer.Option(None, "--workers", help="Threads for face work (FACEGATE_WORKERS)."),
    log_level: str | None = typer.Option(None, "--log-level", help="debug, info, warning, error."),
    plain_logs: bool = typer.Option(False, "--plain-logs", help="Human-readable logs instead of JSON lines."),
    no_console: bool = typer.Option(False, "--no-console", help="Serve the API only, not the web console."),
    store: str | None = typer.Option(
        None, "--store", envvar="FACEGATE_STORE",
        help="postgresql://… or embedded-postgres [default: SQLite in the data dir].",
    ),
    liveness_store: str | None = typer.Option(
        None, "--liveness-store", envvar="FACEGATE_LIVENESS_STORE",
        help="Liveness sessions: 'database' (the store above, shared by every process on it) or 'memory' "
             "(this process only) [default: database].",
    ),
) -> None:
    """Run the REST API and web console (Ctrl-C stops it gracefully)."""
    import uvicorn

    from ..service import Settings, create_app
    from ..service.observability import configure_logging

    if store:  # Gallery.open reads it, in this process and in the app it creates
        os.environ["FACEGATE_STORE"] = store
    if liveness_store:
        if liveness_store.strip().lower() not in ("database", "memory"):
            raise typer.BadParameter("use 'database' or 'memory'", param_hint="--liveness-store")
        os.environ["FACEGATE_LIVENESS_STORE"] = liveness_store.strip().lower()
    settings = Settings.from_env(
        host=host, port=port, data_dir=data_dir, workers=workers, log_level=log_level,
        log_json=False if plain_logs else None, console=False if no_console else None,
    )
    configure_logging(settings.log_level, settings.log_json)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # templates and the master key live here
    secret = _first_start_key(settings) if settings.bootstrap_admin_key else None

    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{shown_host}:{settings.port}/"
    # Plain prints (no wrapping, no markup): the URL and the key must survive copy-paste and pipes.
    # Lines within 80 columns, so that a terminal does not break them either.
    print(f"facegate {__version__} serving on {url}")
    print(f"  data      {_store_label(store, settings.data_dir)}")
    if settings.console:
        print(f"  console   {url}")
    print(f"  API docs  {url}docs")
    if secret:
        print(
            "\nFirst start: an admin API key was created. It is shown only this once, so\n"
            "store it now. Sign in to the console with it, or send it to the API as\n"
            "'Authorization: Bearer <key>':\n\n"
            f"    {secret}\n\n"
            "More keys:\n"
            "  facegate keys create NAME --scopes verify,identify,enroll --collections COLL\n"
        )
    sys.stdout.flush()
    asgi = create_app(settings)
    config = uvicorn.Config(
        asgi, host=settings.host, port=settings.port, log_config=None, access_log=False,
        # uvicorn annotates an int but waits with asyncio.wait_for, which takes any float
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]
        proxy_headers=False, server_header=False,
        limit_concurrency=max(256, settings.max_queue * 4),
    )
    server = uvicorn.Server(config)
    server.run()
    err_console.print("facegate stopped")


def _store_label(store: str | None, data_dir: Path) -> str:
    """Where the data lives, for the banner, with any password masked."""
    if not store:
        return str(data_dir.resolve())
    if "://" not in store:
        return store
    from sqlalchemy.engine import make_url

    return make_url(store).render_as_string(hide_password=True)


def _first_start_key(settings) -> str | None:  # noqa: ANN001
    """Create an admin key when the store has none, so a newcomer can sign in."""
    from ..gallery import Gallery
    from ..service.backend import ensure_admin_key

    gallery = Gallery.open(settings.data_dir)
    try:
        return ensure_admin_key(gallery)
    finally:
        gallery.close()
