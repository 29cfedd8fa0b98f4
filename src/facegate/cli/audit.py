"""`facegate audit …`: read, verify and archive the hash-chained audit log."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer

from ..timefmt import duration
from ._common import EXIT_NEGATIVE, Actor, App, DataDir, Json, Store, emit, handle_errors, progress
from ._gallery import actor_name, open_gallery, parse_time
from ._render import Col, fmt_time, human, print_table

app = App(help="Read, verify and archive the hash-chained audit log.", no_args_is_help=True)


@app.command("list")
@handle_errors
def audit_list(
    collection: str | None = typer.Option(None, "--collection"),
    subject: str | None = typer.Option(None, "--subject"),
    action: str | None = typer.Option(None, "--action", help="e.g. identify, enroll, subject (prefix), consent.withdraw."),
    since: str | None = typer.Option(None, "--since"),
    until: str | None = typer.Option(None, "--until"),
    limit: int = typer.Option(50, "--limit", min=1, max=10000),
    data_dir: DataDir = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Audit events, newest first (never pixels or templates)."""
    with open_gallery(data_dir, store) as g:
        events = g.audit_list(collection=collection, subject=subject, action=action, since=parse_time(since, "--since"),
                              until=parse_time(until, "--until"), limit=limit)
    emit([e.to_dict() for e in events], as_json, lambda: _print_events(events))


def _print_events(events: list) -> None:
    print_table(
        f"{len(events)} audit event(s), newest first",
        [Col("seq", right=True), Col("time", drop=9, wrap=True), Col("action"), Col("decision", drop=8),
         Col("purpose", drop=7), Col("subjects", drop=6, wrap=True), Col("collection", drop=5), Col("actor", drop=4),
         Col("score", drop=3, right=True)],
        [[str(e.seq), fmt_time(e.ts), e.action, human(e.decision), human(e.purpose),
          human(e.subjects[:3]) + (f" (+{len(e.subjects) - 3})" if len(e.subjects) > 3 else ""), human(e.collection),
          e.actor, human(None if e.score is None else round(e.score, 4))] for e in events],
    )


@app.command("verify")
@handle_errors
def audit_verify(
    expect_head: str | None = typer.Option(
        None, "--expect-head", help="A head MAC recorded earlier: it must still be in the chain."),
    data_dir: DataDir = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Check the audit chain: exit 0 if intact, 1 if any event was edited, removed or inserted."""
    with open_gallery(data_dir, store) as g:
        rep = g.audit_verify(expect_head=expect_head)
    archived = f" (events up to #{rep.archived_through} archived; anchor {rep.anchor_mac})" if rep.archived_through else ""
    witnessed = f", witnessed up to #{rep.witnessed_seq}" if rep.witnessed_seq is not None else ", no witness file yet"
    human = (f"[bold green]audit log intact[/]: {rep.events} event(s), head #{rep.head_seq} {rep.head_mac}{archived}{witnessed}"
             if rep.ok else f"[bold red]AUDIT LOG TAMPERED[/]: {rep.problem} (first bad event: {rep.first_bad_seq})")
    emit(rep.to_dict(), as_json, human, exit_code=0 if rep.ok else EXIT_NEGATIVE)


def _cutoff(text: str) -> dt.datetime:
    """--before: an ISO date/time (UTC when no zone) or an age: "365d" = 365 days ago."""
    delta = duration(text or "")
    if delta is not None:
        return dt.datetime.now(dt.UTC) - delta
    t = parse_time(text, "--before")
    assert t is not None
    return t


@app.command("archive")
@handle_errors
def audit_archive(
    before: str = typer.Option(
        ..., "--before", help="Archive events older than this: ISO date/time (UTC if no zone) or an age like 365d."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Archive file to write (JSON Lines; replaced only if an interrupted run left it)."),
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Move old audit events to a verified archive file and delete them from the database.

    The file is written, fsynced and verified against the database before anything is deleted;
    the deletion, the chain's new anchor and an audit.archive event commit together. Keep the
    file (and its SHA-256) as long as your retention requires: `audit verify-archive` proves it
    and the database chain intact together."""
    cutoff = _cutoff(before)
    with open_gallery(data_dir, store) as g, progress("archiving", None, enabled=not as_json) as bar:
        rep = g.audit_archive(cutoff, output, actor=actor_name(actor), progress=bar.update)
    if rep.count == 0:
        human = f"nothing to archive: no audit event older than {fmt_time(cutoff)} is left in the database"
    else:
        # One fact per line: the two 64-hex digests alone fill most of an 80-column line.
        human = (f"[bold green]archived[/] {rep.count} event(s) #{rep.first_seq}–#{rep.last_seq}\n"
                 f"  from {fmt_time(rep.first_ts)} to {fmt_time(rep.last_ts)}\n"
                 f"  file {rep.path} ({rep.bytes} bytes, {rep.seconds}s)\n"
                 f"  sha256 {rep.file_sha256}\n"
                 f"  new chain anchor {rep.last_mac}")
    emit(rep.to_dict(), as_json, human)


@app.command("verify-archive")
@handle_errors
def audit_verify_archive(
    files: list[Path] = typer.Argument(..., help="Archive file(s) written by `audit archive`, in any order."),
    standalone: bool = typer.Option(False, "--standalone", help="Check the files only, not their link to the database chain."),
    require_complete: bool = typer.Option(
        False, "--require-complete", help="Exit 1 unless the files and the database cover the whole chain."),
    expect_head: str | None = typer.Option(
        None, "--expect-head", help="A head MAC recorded earlier: it must be in the archives or the database chain."),
    data_dir: DataDir = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Verify archive files (and, by default, that they join the database chain): exit 0 if
    intact, 1 if any event was edited, removed, reordered or inserted."""
    with open_gallery(data_dir, store) as g:
        rep = g.audit_verify_archive(files, with_database=not standalone, expect_head=expect_head)
    ok = rep.ok and (rep.complete or not require_complete)
    if rep.ok:
        span = ", ".join(f"#{f.first_seq}–#{f.last_seq}" for f in rep.files)
        human = f"[bold green]audit archive intact[/]: {rep.events} archived event(s) ({span})"
        if rep.database is not None:
            human += f" + {rep.database.events} in the database up to head #{rep.database.head_seq}"
        human += ("; the whole chain is proven" if rep.complete
                  else "; not covered: " + ", ".join(f"#{a}–#{b}" for a, b in rep.missing) if rep.missing else "")
    else:
        human = f"[bold red]AUDIT ARCHIVE CHECK FAILED[/]: {rep.problem}"
    emit(rep.to_dict(), as_json, human, exit_code=0 if ok else EXIT_NEGATIVE)
