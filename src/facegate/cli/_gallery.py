"""What the gallery commands (collection, enroll, identify, subject, consent, purge, audit, keys,
master-key) share: opening the gallery, the acting user, lists, times, and the options several of
them take.

Every gallery command takes ``--data-dir`` ($FACEGATE_DATA_DIR, default ./.facegate) and ``--store``
($FACEGATE_STORE, a database URL; default the SQLite file in the data dir), prints Rich output or
one JSON document with ``--json``, and exits 0 on success, 1 on a negative decision (no match, a
broken audit chain), 3 on bad input / not found, 4 on model or configuration problems, 5 otherwise.
"""

from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path

import typer

from ..timefmt import TimeFormatError
from ..timefmt import parse_time as _parse_time
from ._common import EXIT_NEGATIVE, err_console
from ._render import fmt_time as fmt_time  # the gallery commands' time format, where it always was
from ._render import print_fields as print_fields

PurposesOption = typer.Option(..., "--purposes", "-p", help="Comma-separated purposes (repeatable).")
ExpiresOption = typer.Option(None, "--expires", help="Consent expiry: ISO date/time (UTC if no zone) or a duration like 365d.")
EvidenceOption = typer.Option(None, "--evidence", help="Consent evidence reference (form id, document hash) — not the document.")
YesOption = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
LivenessOverrideOption = typer.Option(
    None, "--liveness-override", metavar="REASON",
    help="Supervised override of the collection's liveness requirement: the person is in front of you (e.g. "
         "enrolment in person at a branch, ID checked). REASON is recorded in the audit event.",
)
LivenessRequiredOption = typer.Option(
    None, "--liveness-required", help="Operations that need a passed liveness check: comma-separated enroll, verify, "
                                      "identify (repeatable) [default: none].",
)

CLI_LIVENESS_WAY = ("from the CLI, run the liveness check through the service (`facegate serve`, console "
                    "#/liveness), or, when the person is in front of you, pass --liveness-override \"REASON\"")


def reason_text(value: str | None) -> str | None:
    """Typer callback for a REASON the audit log records: 1–256 characters."""
    if value is not None and not 0 < len(value.strip()) <= 256:
        raise typer.BadParameter("the reason is recorded in the audit log: 1–256 characters")
    return value


def confirm_erasure(question: str, *, yes: bool, as_json: bool) -> None:
    """Ask before erasing unless --yes. With --json nothing is asked (a script says --yes); a
    "no" exits 1 with nothing erased."""
    if yes:
        return
    if as_json:
        raise typer.BadParameter("--json does not ask for confirmation: add --yes to erase", param_hint="--yes")
    if not typer.confirm(question):
        err_console.print("nothing erased")
        raise typer.Exit(EXIT_NEGATIVE)


def override(reason: str | None):  # -> LivenessOverride | None
    if reason is None:
        return None
    from ..gallery import LivenessOverride

    return LivenessOverride(reason)


def with_cli_hint(fn):
    """Run a gallery call; a LivenessRequiredError says the CLI's way out (the library's message
    tells an API client which request field to send)."""
    from ..gallery import LivenessRequiredError

    try:
        return fn()
    except LivenessRequiredError as exc:
        exc.message = (f"collection {exc.details['collection']!r} requires a passed liveness check for "
                       f"{exc.details['operation']}: {CLI_LIVENESS_WAY}")
        raise


def open_gallery(data_dir: Path | None, store: str | None, allow_noncommercial: bool = False):  # -> Gallery
    from ..gallery import Gallery

    return Gallery.open(data_dir, store=store, allow_noncommercial=allow_noncommercial)


def actor_name(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001
        return "cli"


def split_list(values: list[str] | None) -> list[str]:
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def parse_time(text: str | None, what: str = "time") -> dt.datetime | None:
    """ISO 8601 date or date-time (UTC when no zone is given) or a duration from now ("90d", "12h")."""
    try:
        return _parse_time(text, what, spans=True)
    except TimeFormatError:
        raise typer.BadParameter(f"{what}: expected an ISO date/time (2027-01-31, 2027-01-31T12:00Z) or 90d/12h") from None


