"""`facegate subject …` and `facegate consent …`: enrolled subjects and their consents."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._common import EXIT_NEGATIVE, Actor, DataDir, Json, NonCommercialOption, Store, console, emit, handle_errors
from ._gallery import (
    EvidenceOption,
    ExpiresOption,
    LivenessOverrideOption,
    PurposesOption,
    YesOption,
    actor_name,
    fmt_time,
    open_gallery,
    parse_time,
    split_list,
)
from .gallery import verify_subject

app = typer.Typer(help="List, show, verify against and erase enrolled subjects.", no_args_is_help=True)


@app.command("list")
@handle_errors
def subject_list(
    collection: str = typer.Argument(...),
    purpose: str | None = typer.Option(None, "--purpose", help="Only subjects whose consent covers this purpose now."),
    limit: int = typer.Option(100, "--limit"),
    offset: int = typer.Option(0, "--offset"),
    data_dir: DataDir = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Subjects of a collection, by external id."""
    with open_gallery(data_dir, store) as g:
        subs = g.list_subjects(collection, limit=limit, offset=offset, purpose=purpose)
    emit([s.to_dict() for s in subs], as_json, lambda: _print_subjects(collection, subs))


def _print_subjects(collection: str, subs: list) -> None:
    table = Table(title=f"{len(subs)} subject(s) in {collection}")
    for col in ("subject", "label", "templates", "active purposes", "created", "last seen"):
        table.add_column(col)
    for s in subs:
        table.add_row(s.external_id, s.label or "", str(len(s.templates)), ", ".join(s.active_purposes()) or "[red]none[/]",
                      fmt_time(s.created_at), fmt_time(s.last_seen_at))
    console.print(table)


@app.command("show")
@handle_errors
def subject_show(
    collection: str = typer.Argument(...),
    subject: str = typer.Argument(...),
    data_dir: DataDir = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """A subject's consents and template metadata (never the templates)."""
    with open_gallery(data_dir, store) as g:
        s = g.get_subject(collection, subject)
    emit(s.to_dict(), as_json, lambda: _print_subject(s))


def _print_subject(s) -> None:  # Subject
    console.print(f"[bold]{s.external_id}[/] in {s.collection}  label {s.label or '—'}  created {fmt_time(s.created_at)}  "
                  f"last seen {fmt_time(s.last_seen_at)}")
    table = Table(title="consents")
    for col in ("purpose", "granted", "expires", "withdrawn", "evidence", "active"):
        table.add_column(col)
    for c in s.consents:
        table.add_row(c.purpose, fmt_time(c.granted_at), fmt_time(c.expires_at), fmt_time(c.withdrawn_at),
                      c.evidence_ref or "", "[green]yes[/]" if c.active() else "[red]no[/]")
    console.print(table)
    console.print(f"{len(s.templates)} template(s): " + ", ".join(f"#{t.id} ({fmt_time(t.created_at)})" for t in s.templates))


@app.command("delete")
@handle_errors
def subject_delete(
    collection: str = typer.Argument(...),
    subject: str = typer.Argument(...),
    reason: str = typer.Option("request", "--reason", help="Recorded in the audit tombstone (e.g. request, gdpr-art17)."),
    yes: bool = YesOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Erase a subject: templates, consents and key, at once, in every process. Audit tombstone stays.
    (Backups taken before: unreadable after the next `facegate master-key rotate`.)"""
    if not yes and not typer.confirm(f"Erase subject {subject!r} from {collection!r}? This cannot be undone"):
        raise typer.Exit(EXIT_NEGATIVE)
    with open_gallery(data_dir, store) as g:
        g.delete_subject(collection, subject, actor=actor_name(actor), reason=reason)
    emit({"collection": collection, "subject": subject, "erased": True}, as_json,
         f"erased subject [bold]{subject}[/] from {collection}")


@app.command("verify")
@handle_errors
def subject_verify(
    collection: str = typer.Argument(...),
    subject: str = typer.Argument(...),
    image: Path = typer.Argument(..., help="Probe photo; not stored."),
    purpose: str = typer.Option(..., "--purpose"),
    liveness_override: str | None = LivenessOverrideOption,
    allow_noncommercial: bool = NonCommercialOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """1:1: is the person in IMAGE this enrolled subject? (Same as `facegate verify --subject`.)"""
    verify_subject(collection, subject, image, purpose, data_dir=data_dir, store=store, actor=actor, as_json=as_json,
                   allow_noncommercial=allow_noncommercial, liveness_override=liveness_override)


# --- consent ------------------------------------------------------------------------------------

consent_app = typer.Typer(help="Grant or withdraw a subject's consent (effective immediately).", no_args_is_help=True)


@consent_app.command("grant")
@handle_errors
def consent_grant(
    collection: str = typer.Argument(...),
    subject: str = typer.Argument(...),
    purposes: list[str] = PurposesOption,
    expires: str | None = ExpiresOption,
    evidence: str | None = EvidenceOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Record a consent for purposes of an enrolled subject."""
    from ..gallery import ConsentSpec

    spec = ConsentSpec(tuple(split_list(purposes)), expires_at=parse_time(expires, "--expires"), evidence_ref=evidence)
    with open_gallery(data_dir, store) as g:
        s = g.grant_consent(collection, subject, spec, actor=actor_name(actor))
    emit(s.to_dict(), as_json,
         f"consent recorded: {subject} in {collection} — active purposes {', '.join(s.active_purposes()) or 'none'}")


@consent_app.command("withdraw")
@handle_errors
def consent_withdraw(
    collection: str = typer.Argument(...),
    subject: str = typer.Argument(...),
    purposes: list[str] | None = typer.Option(None, "--purposes", "-p", help="Purposes to withdraw [default: all]."),
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Withdraw consent (all purposes unless --purposes). Takes effect for the next search everywhere."""
    plist = split_list(purposes) or None
    with open_gallery(data_dir, store) as g:
        s = g.withdraw_consent(collection, subject, plist, actor=actor_name(actor))
    left = ", ".join(s.active_purposes())
    emit(s.to_dict(), as_json, f"consent withdrawn ({', '.join(plist) if plist else 'all purposes'}): {subject} in "
         f"{collection} — active purposes now {left or 'none (will be erased by the next purge)'}")
