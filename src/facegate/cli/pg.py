"""PostgreSQL backend commands.

    facegate migrate --to embedded-postgres                 # SQLite → the embedded PostgreSQL
    facegate migrate --to postgresql://user:pw@db/facegate  # … or any PostgreSQL (no extension needed)
    facegate pg start|stop|status|url                       # the embedded server of a data dir
    facegate pg rotate-key COLLECTION                       # new vector rotation, re-transformed in place
    facegate pg stats COLLECTION

``--store embedded-postgres`` (or ``FACEGATE_STORE=embedded-postgres``) makes every other
command, and ``facegate serve``, use the data directory's embedded server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import App, DataDir, Json, console, emit, handle_errors, progress
from ._render import print_fields

PgStore = Annotated[str | None, typer.Option(
    "--store", envvar="FACEGATE_STORE", help="postgresql://… or embedded-postgres [default: the data dir's embedded server].")]

app = App()  # migrate
pg_app = App(help="PostgreSQL backend: embedded server, vector keys, index statistics.", no_args_is_help=True)


def _data_dir(data_dir: Path | None) -> Path:
    from ..gallery.store import default_data_dir

    return Path(data_dir) if data_dir is not None else default_data_dir()


def _pg_gallery(data_dir: Path | None, store: str | None):  # -> Gallery
    from ..gallery import Gallery
    from ..gallery.pg import EMBEDDED, is_pg_url

    url = store or EMBEDDED
    if not is_pg_url(url):
        raise typer.BadParameter("needs a PostgreSQL store: postgresql://… or embedded-postgres", param_hint="--store")
    return Gallery.open(_data_dir(data_dir), store=url)


def _mask(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command("migrate")
@handle_errors
def migrate(
    to: str = typer.Option(..., "--to", help="Destination: postgresql://… or embedded-postgres (an empty database)."),
    source: str | None = typer.Option(None, "--from", help="Source store URL [default: the data dir's SQLite file]."),
    data_dir: DataDir = None,
    sample: int = typer.Option(200, "--sample", min=0, help="Probes per collection for the score check."),
    as_json: Json = False,
) -> None:
    """Move a gallery to PostgreSQL without re-enrolment. Rows, keys and audit chain are copied
    in one transaction, search vectors built from the templates, counts and a sample of
    scores verified. The source is left untouched; point FACEGATE_STORE at the destination
    afterwards."""
    from ..extras import require_postgres
    from ..gallery import Gallery
    from ..gallery.pg import EMBEDDED, is_pg_url
    from ..gallery.pg.admin import migrate_gallery

    if not is_pg_url(to):
        raise typer.BadParameter("the destination must be postgresql://… or embedded-postgres", param_hint="--to")
    require_postgres(embedded=to == EMBEDDED)
    ddir = _data_dir(data_dir)
    src = Gallery.open(ddir, store=source or f"sqlite:///{(ddir / 'gallery.db').resolve()}")
    try:
        with progress("migrating", None, enabled=not as_json) as bar:  # steps, not counts: the library says which
            report = migrate_gallery(src, to, data_dir=ddir, sample=sample, progress=lambda m: bar.describe(f"migrating: {m}"))
    finally:
        src.close()
    c = report["counts"]
    target = "embedded-postgres" if to == "embedded-postgres" else _mask(to)
    emit(report, as_json,
         f"[bold green]migrated[/] {c.get('collections', 0)} collections, {c.get('subjects', 0)} subjects, "
         f"{c.get('templates', 0)} templates, {c.get('audit_events', 0)} audit events in {report['seconds']}s\n"
         f"verified: counts equal; {report['probes']} probes, max score difference {report['max_score_diff']:.1e}\n"
         f"use it: FACEGATE_STORE={target} facegate serve   (or --store {target})")


@pg_app.command("start")
@handle_errors
def pg_start(
    data_dir: DataDir = None,
    show_url: bool = typer.Option(False, "--show-url", help="Print the URL with its password."),
) -> None:
    """Start (initialising on first use) the data directory's embedded PostgreSQL."""
    from ..pgserver import for_data_dir

    ddir = _data_dir(data_dir)
    ddir.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = for_data_dir(ddir).start()
    console.print(url if show_url else _mask(url))


@pg_app.command("stop")
@handle_errors
def pg_stop(data_dir: DataDir = None,
            mode: str = typer.Option("fast", "--mode", help="smart, fast or immediate.")) -> None:
    """Stop the embedded server (services using it answer 503 until it is back)."""
    from ..pgserver import for_data_dir

    console.print("stopped" if for_data_dir(_data_dir(data_dir)).stop(mode=mode) else "not running")


@pg_app.command("status")
@handle_errors
def pg_status(data_dir: DataDir = None, as_json: Json = False) -> None:
    from ..pgserver import for_data_dir

    st = for_data_dir(_data_dir(data_dir)).status()
    emit(st, as_json, lambda: print_fields("embedded PostgreSQL", st))


@pg_app.command("url")
@handle_errors
def pg_url(data_dir: DataDir = None) -> None:
    """The embedded server's connection URL, password included (for psql, backups, replicas)."""
    from ..pgserver import for_data_dir

    typer.echo(for_data_dir(_data_dir(data_dir)).url(driver="postgresql"))


@pg_app.command("rotate-key")
@handle_errors
def pg_rotate_key(
    collection: str = typer.Argument(...),
    data_dir: DataDir = None, store: PgStore = None, as_json: Json = False,
) -> None:
    """Replace the collection's secret vector rotation: every stored search vector is
    re-transformed in place (one transaction) and the old key destroyed."""
    from ..gallery.pg.admin import rotate_key

    g = _pg_gallery(data_dir, store)
    try:
        out = rotate_key(g, collection, actor="cli")
    finally:
        g.close()
    emit(out, as_json, lambda: print_fields(f"vector key of {collection} rotated", out))


@pg_app.command("stats")
@handle_errors
def pg_stats(collection: str = typer.Argument(...), data_dir: DataDir = None,
             store: PgStore = None, as_json: Json = False) -> None:
    """The collection's in-memory index as this process loads it: mode, templates, lists,
    nprobe, memory, self-test recall, load time."""
    g = _pg_gallery(data_dir, store)
    try:
        stats = g.index_stats(collection)
    finally:
        g.close()
    emit(stats, as_json, lambda: print_fields(f"index of {collection}", stats))
