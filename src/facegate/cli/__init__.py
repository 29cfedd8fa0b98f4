"""facegate command line: the same engine and gallery the service uses, from a shell.

One module per area; each defines its commands on its own ``typer.Typer`` and is added here.
Exit codes (``_common``): 0 ok, 1 negative decision, 2 usage, 3 bad input / no usable face,
4 model or calibration problem, 5 other error.
"""

from __future__ import annotations

import typer

from .. import __version__
from . import audit, batch, collections, dedup, engine, erasure, gallery, keys, liveness, pg, serve, subjects
from ._common import App, RootGroup, console

app = App(
    name="facegate",
    cls=RootGroup,
    help="Consent-first face verification and identification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"facegate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool | None = typer.Option(None, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """facegate: 1:1 verification and consented 1:N identification, offline."""


app.add_typer(engine.app)  # detect, verify, embed, eval, calibrate, demo
app.add_typer(collections.app, name="collection")
app.add_typer(gallery.app)  # enroll, identify
app.add_typer(batch.app)  # enroll-batch
app.add_typer(dedup.app, name="dedup")
app.add_typer(subjects.app, name="subject")
app.add_typer(subjects.consent_app, name="consent")
app.add_typer(erasure.app)  # purge
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(erasure.master_key_app, name="master-key")
app.add_typer(serve.app)  # serve
app.add_typer(liveness.app, name="liveness")
app.add_typer(pg.app)  # migrate
app.add_typer(pg.pg_app, name="pg")

__all__ = ["app"]
