"""`facegate subject …` and `facegate consent …`: enrolled subjects and their consents."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from ._common import Actor, App, DataDir, Json, NonCommercialOption, Store, emit, handle_errors
from ._gallery import (
    EvidenceOption,
    ExpiresOption,
    LivenessOverrideOption,
    PurposesOption,
    YesOption,
    actor_name,
    confirm_erasure,
    open_gallery,
    parse_time,
    split_list,
)
from ._render import Col, fmt_time, human, print_fields, print_table
from .gallery import verify_subject

app = App(help="List, show, verify against and erase enrolled subjects.", no_args_is_help=True)


@app.command("list")
@handle_errors
def subject_list(
    collection: str = typer.Argument(...),
    purpose: str | None = typer.Option(None, "--purpose", help="Only subjects whose consent covers this purpose now."),
    limit: int = typer.Option(100, "--limit", min=1, max=10000),
    offset: int = typer.Option(0, "--offset", min=0),
    data_dir: DataDir = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Subjects of a collection, by external id."""
    with open_gallery(data_dir, store) as g:
        subs = g.list_subjects(collection, limit=limit, offset=offset, purpose=purpose)
    emit([s.to_dict() for s in subs], as_json, lambda: _print_subjects(collection, subs))


def _print_subjects(collection: str, subs: list) -> None:
    print_table(
        f"{len(subs)} subject(s) in {collection}",
        [Col("subject"), Col("label", drop=3, wrap=True), Col("templates", drop=5, right=True),
         Col("active purposes", drop=6, wrap=True), Col("created", drop=2, wrap=True), Col("last seen", drop=4, wrap=True)],
        [[s.external_id, human(s.label), str(len(s.templates)),
          Text(human(s.active_purposes()), style="" if s.active_purposes() else "red"),
          fmt_time(s.created_at), fmt_time(s.last_seen_at)] for s in subs],
        more=f"facegate subject show {collection} SUBJECT",
    )


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
    print_fields(f"subject {s.external_id} in {s.collection}", {
        "label": s.label, "created": s.created_at, "last seen": s.last_seen_at,
        "templates": "\n".join(f"#{t.id}  {fmt_time(t.created_at)}" for t in s.templates),
    })
    print_table(
        "consents",
        [Col("purpose"), Col("active", drop=6), Col("granted", drop=5, wrap=True), Col("expires", drop=4, wrap=True),
         Col("withdrawn", drop=3, wrap=True), Col("evidence", drop=2, wrap=True)],
        [[c.purpose, Text("yes", style="green") if c.active() else Text("no", style="red"), fmt_time(c.granted_at),
          fmt_time(c.expires_at), fmt_time(c.withdrawn_at), human(c.evidence_ref)] for c in s.consents],
    )


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
    confirm_erasure(f"Erase subject {subject!r} from {collection!r}? This cannot be undone", yes=yes, as_json=as_json)
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

consent_app = App(help="Grant or withdraw a subject's consent (effective immediately).", no_args_is_help=True)


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
