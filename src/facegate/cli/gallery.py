"""Enrolment and search: `facegate enroll`, `facegate identify`, and 1:1 against an enrolled subject
(`facegate verify --subject`, `facegate subject verify`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..gallery.search import MAX_TOP_K
from ._common import (
    EXIT_INPUT,
    EXIT_NEGATIVE,
    Actor,
    App,
    DataDir,
    Json,
    NonCommercialOption,
    Store,
    console,
    emit,
    handle_errors,
    progress,
)
from ._gallery import (
    EvidenceOption,
    ExpiresOption,
    LivenessOverrideOption,
    actor_name,
    open_gallery,
    override,
    parse_time,
    reason_text,
    split_list,
    with_cli_hint,
)
from ._render import Col, human, print_table

app = App()


@app.command()
@handle_errors
def enroll(
    collection: str = typer.Argument(..., help="Collection."),
    subject: str = typer.Argument(..., help="Subject's external id (e.g. a customer number)."),
    images: list[Path] = typer.Argument(..., help="Enrolment photo(s); not stored."),
    purposes: list[str] | None = typer.Option(
        None, "--purposes", "-p", help="Consent: purposes granted (required for a new subject)."),
    expires: str | None = ExpiresOption,
    evidence: str | None = EvidenceOption,
    label: str | None = typer.Option(None, "--label", help="Optional display label (the operator's choice)."),
    dedup_purpose: str | None = typer.Option(
        None, "--dedup-purpose",
        help="Warn when a face matches another subject consenting to this purpose (no search without it)."),
    force_mismatch: str | None = typer.Option(
        None, "--force-mismatch", metavar="REASON", callback=reason_text,
        help="Accept faces that do not match the subject's enrolled faces (face_mismatch); the reason is audited."),
    liveness_override: str | None = LivenessOverrideOption,
    allow_noncommercial: bool = NonCommercialOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Enrol a subject's photos under a consent: each image accepted or rejected with a reason
    (face_mismatch: not the face already enrolled for the subject).

    Exit 0 if at least one image was accepted, 3 if none was.
    """
    from ..gallery import ConsentSpec

    plist = split_list(purposes)
    consent = ConsentSpec(tuple(plist), expires_at=parse_time(expires, "--expires"), evidence_ref=evidence) if plist else None
    # One photo is quick: the bar is for a long list (it is drawn only on a terminal).
    with open_gallery(data_dir, store, allow_noncommercial) as g, \
            progress("enrolling", len(images), enabled=not as_json and len(images) > 1) as bar:
        res = with_cli_hint(lambda: g.enroll(collection, subject, [str(p) for p in images], consent=consent, label=label,
                                             liveness=override(liveness_override), dedup_purpose=dedup_purpose,
                                             force_mismatch=force_mismatch, actor=actor_name(actor), progress=bar.update))

    def human() -> None:
        verb = "created" if res.created else "updated"
        console.print(f"subject [bold]{res.subject}[/] {verb} in {res.collection}: "
                      f"{res.accepted} accepted, {res.rejected} rejected")
        for o in res.images:
            mark = "[green]accepted[/]" if o.accepted else f"[red]rejected[/] ({o.reason}: {o.message})"
            console.print(f"  {o.source}: {mark}", highlight=False)
        for d in res.duplicates:
            console.print(f"  [bold yellow]warning[/]: this face matches another subject, [bold]{d.subject}[/] "
                          f"(score {d.score:.3f}) — possible duplicate identity", highlight=False)

    emit(res.to_dict(), as_json, human, exit_code=EXIT_INPUT if res.accepted == 0 else 0)


@app.command()
@handle_errors
def identify(
    collection: str = typer.Argument(...),
    image: Path = typer.Argument(..., help="Probe photo; not stored."),
    purpose: str = typer.Option(..., "--purpose", help="Declared purpose; only subjects consenting to it are searched."),
    top_k: int = typer.Option(5, "--top-k", min=1, max=MAX_TOP_K, help="At most this many candidates."),
    liveness_override: str | None = LivenessOverrideOption,
    allow_noncommercial: bool = NonCommercialOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Who is this? Candidates above the collection threshold among consenting subjects.
    Exit 0 with candidates, 1 with none."""
    with open_gallery(data_dir, store, allow_noncommercial) as g:
        res = with_cli_hint(lambda: g.identify(collection, str(image), purpose=purpose, top_k=top_k,
                                               liveness=override(liveness_override), actor=actor_name(actor)))
    human = (lambda: _print_candidates(res)) if res.candidates else (
        f"[bold red]NO MATCH[/] among {res.searched_subjects} subject(s) consenting to {res.purpose} "
        f"(threshold {res.threshold:.4f}, FMR {res.fmr:g})")
    emit(res.to_dict(), as_json, human, exit_code=0 if res.candidates else EXIT_NEGATIVE)


def _print_candidates(res) -> None:  # IdentifyResult
    print_table(
        f"{len(res.candidates)} candidate(s) in {res.collection} for {res.purpose} (threshold {res.threshold:.4f}, "
        f"FMR {res.fmr:g}, {res.searched_subjects} subject(s) searched)",
        [Col("rank", right=True), Col("subject"), Col("score", right=True), Col("label", drop=1, wrap=True)],
        [[str(c.rank), c.subject, f"{c.score:.4f}", human(c.label)] for c in res.candidates],
    )


def verify_subject(
    collection: str,
    subject: str,
    image: Path | str,
    purpose: str,
    *,
    data_dir: Path | None = None,
    store: str | None = None,
    actor: str | None = None,
    as_json: bool = False,
    allow_noncommercial: bool = False,
    liveness_override: str | None = None,
) -> None:
    """``facegate verify IMAGE --subject S --collection C --purpose P``: 1:1 against an enrolled
    subject. Prints the result; raises typer.Exit(1) on no match. FacegateError propagates
    (the caller's ``handle_errors`` maps it to an exit code)."""
    with open_gallery(data_dir, store, allow_noncommercial) as g:
        res = with_cli_hint(lambda: g.verify(collection, subject, str(image), purpose=purpose,
                                             liveness=override(liveness_override), actor=actor_name(actor)))
    verdict = "[bold green]MATCH[/]" if res.match else "[bold red]NO MATCH[/]"
    emit(res.to_dict(), as_json, f"{verdict}  subject {res.subject} in {res.collection}  score {res.score:.4f}  "
         f"threshold {res.threshold:.4f} (FMR {res.fmr:g}, {res.model}, purpose {res.purpose})",
         exit_code=0 if res.match else EXIT_NEGATIVE)
