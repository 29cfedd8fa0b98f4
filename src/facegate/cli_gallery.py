"""Gallery commands: collections, enrolment, identification, subjects, consent, purge, audit, keys,
master-key.

Every command takes ``--data-dir`` ($FACEGATE_DATA_DIR, default ./.facegate) and ``--store``
($FACEGATE_STORE, a database URL; default the SQLite file in the data dir), prints Rich output
or one JSON document with ``--json``, and exits 0 on success, 1 on a negative decision (no
match, a broken audit chain), 3 on bad input / not found, 4 on model or configuration
problems, 5 otherwise (see cli_common).
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .cli_common import EXIT_INPUT, EXIT_NEGATIVE, JsonOption, NonCommercialOption, console, emit, handle_errors, print_json

DataDirOption = typer.Option(None, "--data-dir", envvar="FACEGATE_DATA_DIR", help="Gallery data directory [default: ./.facegate].")
StoreOption = typer.Option(None, "--store", envvar="FACEGATE_STORE", help="Database URL [default: SQLite file in the data dir].")
ActorOption = typer.Option(None, "--actor", help="Who acts, for the audit log [default: cli:$USER].")
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

CLI_LIVENESS_HINT = (" — from the CLI, run the liveness check through the service (`facegate serve`, console "
                     "#/liveness), or, when the person is in front of you, pass --liveness-override \"REASON\"")


def _override(reason: Optional[str]):  # -> LivenessOverride | None
    if reason is None:
        return None
    from .gallery import LivenessOverride

    return LivenessOverride(reason)


def _with_cli_hint(fn):
    """Run a gallery call; a LivenessRequiredError gets the CLI's way out added to its message."""
    from .gallery import LivenessRequiredError

    try:
        return fn()
    except LivenessRequiredError as exc:
        exc.message += CLI_LIVENESS_HINT
        raise


def _gallery(data_dir: Optional[Path], store: Optional[str], allow_noncommercial: bool = False):  # -> Gallery
    from .gallery import Gallery

    return Gallery.open(data_dir, store=store, allow_noncommercial=allow_noncommercial)


def _actor(actor: Optional[str]) -> str:
    if actor:
        return actor
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001
        return "cli"


def _split(values: Optional[list[str]]) -> list[str]:
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def parse_time(text: Optional[str], what: str = "time") -> Optional[dt.datetime]:
    """ISO 8601 date or date-time (UTC when no zone is given) or a duration from now ("90d", "12h")."""
    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"d": dt.timedelta(days=n), "h": dt.timedelta(hours=n), "m": dt.timedelta(minutes=n)}[unit]
        return dt.datetime.now(dt.timezone.utc) + delta
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{what}: expected an ISO date/time (2027-01-31, 2027-01-31T12:00Z) or 90d/12h") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _fmt_time(t: Optional[dt.datetime]) -> str:
    return "—" if t is None else t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


# --- collection ---------------------------------------------------------------------------------

collection_app = typer.Typer(help="Create, list, show and delete collections.", no_args_is_help=True)


@collection_app.command("create")
@handle_errors
def collection_create(
    name: str = typer.Argument(..., help="Collection name."),
    purposes: list[str] = PurposesOption,
    model: str = typer.Option("sface", "--model", "-m", help="Model the collection is pinned to: sface or arcface-mbf."),
    fmr: float = typer.Option(1e-4, "--fmr", help="Target false-match rate per comparison: 1e-3, 1e-4 or 1e-5."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Explicit cosine threshold (overrides --fmr calibration)."),
    retention_days: int = typer.Option(1095, "--retention-days", help="Erase subjects this long after their last interaction."),
    description: Optional[str] = typer.Option(None, "--description"),
    liveness_required: Optional[list[str]] = LivenessRequiredOption,
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a collection pinned to one model, with its allowed purposes and retention."""
    with _gallery(data_dir, store) as g:
        col = g.create_collection(name, purposes=_split(purposes), model=model, fmr=fmr, threshold=threshold,
                                  retention_days=retention_days, description=description,
                                  liveness_required=_split(liveness_required), actor=_actor(actor))
    if as_json:
        print_json(col.to_dict())
        return
    console.print(f"created collection [bold]{col.name}[/] — model {col.model_id}, purposes {', '.join(col.purposes)}, "
                  f"threshold {col.threshold:.4f} ({col.threshold_source}, FMR {col.fmr:g}), retention {col.retention_days} d"
                  + (f", liveness required for {', '.join(col.liveness_required)}" if col.liveness_required else ""))


@collection_app.command("set-liveness")
@handle_errors
def collection_set_liveness(
    name: str = typer.Argument(...),
    operations: Optional[list[str]] = typer.Argument(
        None, help="Operations that need a passed liveness check: enroll, verify, identify (comma-separated or several "
                   "arguments); 'none' or nothing turns the requirement off."),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Require (or stop requiring) a passed liveness check for enrolment, verification or identification."""
    with _gallery(data_dir, store) as g:
        col = g.set_collection_liveness(name, _split(operations), actor=_actor(actor))
    emit(col.to_dict(), as_json, f"collection [bold]{col.name}[/]: liveness required for "
         + (", ".join(col.liveness_required) if col.liveness_required else "nothing"))


@collection_app.command("list")
@handle_errors
def collection_list(data_dir: Optional[Path] = DataDirOption, store: Optional[str] = StoreOption, as_json: bool = JsonOption) -> None:
    """All collections with subject and template counts."""
    with _gallery(data_dir, store) as g:
        cols = g.list_collections()
    if as_json:
        print_json([c.to_dict() for c in cols])
        return
    table = Table(title=f"{len(cols)} collection(s)")
    for col in ("name", "model", "purposes", "FMR", "threshold", "retention d", "liveness for", "subjects", "templates"):
        table.add_column(col, justify="right" if col in ("FMR", "threshold", "retention d", "subjects", "templates") else "left")
    for c in cols:
        table.add_row(c.name, c.model_id, ", ".join(c.purposes), f"{c.fmr:g}", f"{c.threshold:.4f}", str(c.retention_days),
                      ", ".join(c.liveness_required) or "-", str(c.subjects), str(c.templates))
    console.print(table)


@collection_app.command("show")
@handle_errors
def collection_show(
    name: str = typer.Argument(...),
    stats: bool = typer.Option(False, "--index-stats", help="Also load the search index and report its mode, memory and recall."),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """One collection's settings and counts."""
    with _gallery(data_dir, store) as g:
        col = g.get_collection(name)
        out = col.to_dict()
        if stats:
            out["index"] = g.index_stats(name)
    emit(out, as_json, lambda: _print_fields(f"collection {col.name}", out))


@collection_app.command("delete")
@handle_errors
def collection_delete(
    name: str = typer.Argument(...),
    yes: bool = YesOption,
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Erase every subject of a collection, then the collection (audit tombstones remain)."""
    if not yes and not typer.confirm(f"Erase collection {name!r} and every subject in it?"):
        raise typer.Exit(EXIT_NEGATIVE)
    with _gallery(data_dir, store) as g:
        n = g.delete_collection(name, actor=_actor(actor))
    emit({"collection": name, "deleted": True, "subjects_erased": n}, as_json,
         f"deleted collection [bold]{name}[/] ({n} subject(s) erased)")


# --- enrol / identify / verify ------------------------------------------------------------------


def enroll(
    collection: str = typer.Argument(..., help="Collection."),
    subject: str = typer.Argument(..., help="Subject's external id (e.g. a customer number)."),
    images: list[Path] = typer.Argument(..., help="Enrolment photo(s); not stored."),
    purposes: Optional[list[str]] = typer.Option(None, "--purposes", "-p", help="Consent: purposes granted (required for a new subject)."),
    expires: Optional[str] = ExpiresOption,
    evidence: Optional[str] = EvidenceOption,
    label: Optional[str] = typer.Option(None, "--label", help="Optional display label (the operator's choice)."),
    dedup_purpose: Optional[str] = typer.Option(
        None, "--dedup-purpose", help="Warn when a face matches another subject consenting to this purpose (no search without it)."),
    force_mismatch: Optional[str] = typer.Option(
        None, "--force-mismatch", metavar="REASON",
        help="Accept faces that do not match the subject's enrolled faces (face_mismatch); the reason is audited."),
    liveness_override: Optional[str] = LivenessOverrideOption,
    allow_noncommercial: bool = NonCommercialOption,
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Enrol a subject's photos under a consent: each image accepted or rejected with a reason
    (face_mismatch: not the face already enrolled for the subject).

    Exit 0 if at least one image was accepted, 3 if none was.
    """
    from .gallery import ConsentSpec

    plist = _split(purposes)
    consent = ConsentSpec(tuple(plist), expires_at=parse_time(expires, "--expires"), evidence_ref=evidence) if plist else None
    with _gallery(data_dir, store, allow_noncommercial) as g:
        res = _with_cli_hint(lambda: g.enroll(collection, subject, [str(p) for p in images], consent=consent, label=label,
                                              liveness=_override(liveness_override), dedup_purpose=dedup_purpose,
                                              force_mismatch=force_mismatch, actor=_actor(actor)))
    if as_json:
        print_json(res.to_dict())
    else:
        verb = "created" if res.created else "updated"
        console.print(f"subject [bold]{res.subject}[/] {verb} in {res.collection}: "
                      f"{res.accepted} accepted, {res.rejected} rejected")
        for o in res.images:
            mark = "[green]accepted[/]" if o.accepted else f"[red]rejected[/] ({o.reason}: {o.message})"
            console.print(f"  {o.source}: {mark}", highlight=False)
        for d in res.duplicates:
            console.print(f"  [bold yellow]warning[/]: this face matches another subject, [bold]{d.subject}[/] "
                          f"(score {d.score:.3f}) — possible duplicate identity", highlight=False)
    if res.accepted == 0:
        raise typer.Exit(EXIT_INPUT)


def identify(
    collection: str = typer.Argument(...),
    image: Path = typer.Argument(..., help="Probe photo; not stored."),
    purpose: str = typer.Option(..., "--purpose", help="Declared purpose; only subjects consenting to it are searched."),
    top_k: int = typer.Option(5, "--top-k", help="At most this many candidates."),
    liveness_override: Optional[str] = LivenessOverrideOption,
    allow_noncommercial: bool = NonCommercialOption,
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Who is this? Candidates above the collection threshold among consenting subjects.
    Exit 0 with candidates, 1 with none."""
    with _gallery(data_dir, store, allow_noncommercial) as g:
        res = _with_cli_hint(lambda: g.identify(collection, str(image), purpose=purpose, top_k=top_k,
                                                liveness=_override(liveness_override), actor=_actor(actor)))
    if as_json:
        print_json(res.to_dict())
    elif res.candidates:
        table = Table(title=f"{len(res.candidates)} candidate(s) in {res.collection} for {res.purpose} "
                            f"(threshold {res.threshold:.4f}, FMR {res.fmr:g}, {res.searched_subjects} subjects searched)")
        for col in ("rank", "subject", "label", "score"):
            table.add_column(col)
        for c in res.candidates:
            table.add_row(str(c.rank), c.subject, c.label or "", f"{c.score:.4f}")
        console.print(table)
    else:
        console.print(f"[bold red]NO MATCH[/] among {res.searched_subjects} subject(s) consenting to {res.purpose} "
                      f"(threshold {res.threshold:.4f}, FMR {res.fmr:g})")
    if not res.candidates:
        raise typer.Exit(EXIT_NEGATIVE)


def verify_subject(
    collection: str,
    subject: str,
    image: Path | str,
    purpose: str,
    *,
    data_dir: Optional[Path] = None,
    store: Optional[str] = None,
    actor: Optional[str] = None,
    as_json: bool = False,
    allow_noncommercial: bool = False,
    liveness_override: Optional[str] = None,
) -> None:
    """``facegate verify IMAGE --subject S --collection C --purpose P``: 1:1 against an enrolled
    subject. Prints the result; raises typer.Exit(1) on no match. FacegateError propagates
    (the caller's ``handle_errors`` maps it to an exit code)."""
    with _gallery(data_dir, store, allow_noncommercial) as g:
        res = _with_cli_hint(lambda: g.verify(collection, subject, str(image), purpose=purpose,
                                              liveness=_override(liveness_override), actor=_actor(actor)))
    verdict = "[bold green]MATCH[/]" if res.match else "[bold red]NO MATCH[/]"
    emit(res.to_dict(), as_json, f"{verdict}  subject {res.subject} in {res.collection}  score {res.score:.4f}  "
         f"threshold {res.threshold:.4f} (FMR {res.fmr:g}, {res.model}, purpose {res.purpose})",
         exit_code=0 if res.match else EXIT_NEGATIVE)



def _print_fields(title: str, fields: dict) -> None:
    """One record as a two-column field/value table."""
    table = Table(title=title, show_header=False)
    table.add_column("field")
    table.add_column("value")
    for k, v in fields.items():
        table.add_row(k, str(v))
    console.print(table)

# --- subject ------------------------------------------------------------------------------------

subject_app = typer.Typer(help="List, show, verify against and erase enrolled subjects.", no_args_is_help=True)


@subject_app.command("list")
@handle_errors
def subject_list(
    collection: str = typer.Argument(...),
    purpose: Optional[str] = typer.Option(None, "--purpose", help="Only subjects whose consent covers this purpose now."),
    limit: int = typer.Option(100, "--limit"),
    offset: int = typer.Option(0, "--offset"),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Subjects of a collection, by external id."""
    with _gallery(data_dir, store) as g:
        subs = g.list_subjects(collection, limit=limit, offset=offset, purpose=purpose)
    if as_json:
        print_json([s.to_dict() for s in subs])
        return
    table = Table(title=f"{len(subs)} subject(s) in {collection}")
    for col in ("subject", "label", "templates", "active purposes", "created", "last seen"):
        table.add_column(col)
    for s in subs:
        table.add_row(s.external_id, s.label or "", str(len(s.templates)), ", ".join(s.active_purposes()) or "[red]none[/]",
                      _fmt_time(s.created_at), _fmt_time(s.last_seen_at))
    console.print(table)


@subject_app.command("show")
@handle_errors
def subject_show(
    collection: str = typer.Argument(...),
    subject: str = typer.Argument(...),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """A subject's consents and template metadata (never the templates)."""
    with _gallery(data_dir, store) as g:
        s = g.get_subject(collection, subject)
    if as_json:
        print_json(s.to_dict())
        return
    console.print(f"[bold]{s.external_id}[/] in {s.collection}  label {s.label or '—'}  created {_fmt_time(s.created_at)}  "
                  f"last seen {_fmt_time(s.last_seen_at)}")
    table = Table(title="consents")
    for col in ("purpose", "granted", "expires", "withdrawn", "evidence", "active"):
        table.add_column(col)
    for c in s.consents:
        table.add_row(c.purpose, _fmt_time(c.granted_at), _fmt_time(c.expires_at), _fmt_time(c.withdrawn_at),
                      c.evidence_ref or "", "[green]yes[/]" if c.active() else "[red]no[/]")
    console.print(table)
    console.print(f"{len(s.templates)} template(s): " + ", ".join(f"#{t.id} ({_fmt_time(t.created_at)})" for t in s.templates))


@subject_app.command("delete")
@handle_errors
def subject_delete(
    collection: str = typer.Argument(...),
    subject: str = typer.Argument(...),
    reason: str = typer.Option("request", "--reason", help="Recorded in the audit tombstone (e.g. request, gdpr-art17)."),
    yes: bool = YesOption,
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Erase a subject: templates, consents and key, at once, in every process. Audit tombstone stays.
    (Backups taken before: unreadable after the next `facegate master-key rotate`.)"""
    if not yes and not typer.confirm(f"Erase subject {subject!r} from {collection!r}? This cannot be undone"):
        raise typer.Exit(EXIT_NEGATIVE)
    with _gallery(data_dir, store) as g:
        g.delete_subject(collection, subject, actor=_actor(actor), reason=reason)
    emit({"collection": collection, "subject": subject, "erased": True}, as_json,
         f"erased subject [bold]{subject}[/] from {collection}")


@subject_app.command("verify")
@handle_errors
def subject_verify(
    collection: str = typer.Argument(...),
    subject: str = typer.Argument(...),
    image: Path = typer.Argument(..., help="Probe photo; not stored."),
    purpose: str = typer.Option(..., "--purpose"),
    liveness_override: Optional[str] = LivenessOverrideOption,
    allow_noncommercial: bool = NonCommercialOption,
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
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
    expires: Optional[str] = ExpiresOption,
    evidence: Optional[str] = EvidenceOption,
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Record a consent for purposes of an enrolled subject."""
    from .gallery import ConsentSpec

    spec = ConsentSpec(tuple(_split(purposes)), expires_at=parse_time(expires, "--expires"), evidence_ref=evidence)
    with _gallery(data_dir, store) as g:
        s = g.grant_consent(collection, subject, spec, actor=_actor(actor))
    if as_json:
        print_json(s.to_dict())
    else:
        console.print(f"consent recorded: {subject} in {collection} — active purposes {', '.join(s.active_purposes()) or 'none'}")


@consent_app.command("withdraw")
@handle_errors
def consent_withdraw(
    collection: str = typer.Argument(...),
    subject: str = typer.Argument(...),
    purposes: Optional[list[str]] = typer.Option(None, "--purposes", "-p", help="Purposes to withdraw [default: all]."),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Withdraw consent (all purposes unless --purposes). Takes effect for the next search everywhere."""
    plist = _split(purposes) or None
    with _gallery(data_dir, store) as g:
        s = g.withdraw_consent(collection, subject, plist, actor=_actor(actor))
    if as_json:
        print_json(s.to_dict())
        return
    left = ", ".join(s.active_purposes())
    console.print(f"consent withdrawn ({', '.join(plist) if plist else 'all purposes'}): {subject} in {collection} — "
                  f"active purposes now {left or 'none (will be erased by the next purge)'}")


# --- purge --------------------------------------------------------------------------------------


NewKeyEnvOption = typer.Option(
    None, "--new-key-env", metavar="VAR",
    help="Take the new master key (32 bytes, base64) from environment variable VAR. Required when the "
         "current key comes from $FACEGATE_MASTER_KEY; optional otherwise (default: a random key).")


def _new_key_from_env(var: Optional[str]) -> Optional[str]:
    if var is None:
        return None
    import os

    from .gallery.errors import InvalidArgumentError

    value = os.environ.get(var)
    if not value:
        raise InvalidArgumentError(f"--new-key-env {var}: the environment variable is not set (generate one: facegate master-key generate)")
    return value


def purge(
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be erased; change nothing."),
    rotate_master_key: bool = typer.Option(
        False, "--rotate-master-key",
        help="Then rotate the master key, so that erased subjects are unreadable in earlier backups too."),
    new_key_env: Optional[str] = NewKeyEnvOption,
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Erase subjects past retention or with no active consent. Idempotent; safe from cron
    (a second concurrent run exits 5 with code `locked`)."""
    new_key = _new_key_from_env(new_key_env)
    with _gallery(data_dir, store) as g:
        rep = g.purge(dry_run=dry_run, actor=_actor(actor) if actor else "purge", rotate_master_key=rotate_master_key,
                      new_key=new_key)
    if as_json:
        print_json(rep.to_dict())
        return
    verb = "would erase" if dry_run else "erased"
    console.print(f"purge: {verb} {len(rep.erased)} subject(s)")
    for e in rep.erased:
        console.print(f"  {e.collection}/{e.subject}: {e.reason}", highlight=False)
    if rep.rotation is not None:
        _print_rotation(rep.rotation)


# --- master key ---------------------------------------------------------------------------------

master_key_app = typer.Typer(
    help="The master key that wraps every subject's data key: status, rotation (completes erasures in backups).",
    no_args_is_help=True)


def _print_rotation(rot) -> None:  # MasterKeyRotation
    console.print(f"master key rotated: {rot.old_key_id} → [bold]{rot.new_key_id}[/] ({rot.subjects} subject key(s), "
                  f"{rot.keyring_entries} keyring secret(s) re-wrapped in {rot.seconds:.2f} s)", highlight=False)
    if rot.key_file:
        console.print(f"new key in {rot.key_file}; old key " + ("overwritten and removed" if rot.old_key_destroyed else "not found"),
                      highlight=False)
    else:
        console.print("[bold yellow]now[/]: store the new key as $FACEGATE_MASTER_KEY wherever the old one was, restart the "
                      "services using this store, and destroy the old key", highlight=False)


@master_key_app.command("rotate")
@handle_errors
def master_key_rotate(
    new_key_env: Optional[str] = NewKeyEnvOption,
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Re-wrap every subject key under a new master key and destroy the old key file: database
    backups taken before become unreadable (erasures complete). Crash-safe; exits 5 (`locked`)
    if another rotation runs."""
    new_key = _new_key_from_env(new_key_env)
    with _gallery(data_dir, store) as g:
        rot = g.rotate_master_key(actor=_actor(actor), new_key=new_key)
    if as_json:
        print_json(rot.to_dict())
    else:
        _print_rotation(rot)


@master_key_app.command("status")
@handle_errors
def master_key_status(
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """The store's master key id (fingerprint), the previous one, the last rotation, where the key
    comes from, and files left by an interrupted rotation. Never prints key material."""
    with _gallery(data_dir, store) as g:
        out = g.master_key_status()
    emit(out, as_json, lambda: _print_fields("master key", out))


@master_key_app.command("generate")
def master_key_generate() -> None:
    """Print a new random master key (base64) for `--new-key-env` when keys live in a secret
    store. Treat the output as a secret."""
    from .gallery.crypto import encode_key, generate_key

    print(encode_key(generate_key()))


# --- audit --------------------------------------------------------------------------------------

audit_app = typer.Typer(help="Read, verify and archive the hash-chained audit log.", no_args_is_help=True)


@audit_app.command("list")
@handle_errors
def audit_list(
    collection: Optional[str] = typer.Option(None, "--collection"),
    subject: Optional[str] = typer.Option(None, "--subject"),
    action: Optional[str] = typer.Option(None, "--action", help="e.g. identify, enroll, subject (prefix), consent.withdraw."),
    since: Optional[str] = typer.Option(None, "--since"),
    until: Optional[str] = typer.Option(None, "--until"),
    limit: int = typer.Option(50, "--limit"),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Audit events, newest first (never pixels or templates)."""
    with _gallery(data_dir, store) as g:
        events = g.audit_list(collection=collection, subject=subject, action=action, since=parse_time(since, "--since"),
                              until=parse_time(until, "--until"), limit=limit)
    if as_json:
        print_json([e.to_dict() for e in events])
        return
    table = Table(title=f"{len(events)} audit event(s)")
    for col in ("seq", "time", "actor", "action", "collection", "subjects", "purpose", "decision", "score"):
        table.add_column(col)
    for e in events:
        table.add_row(str(e.seq), _fmt_time(e.ts), e.actor, e.action, e.collection or "", ", ".join(e.subjects[:3]) + (" …" if len(e.subjects) > 3 else ""),
                      e.purpose or "", e.decision or "", "" if e.score is None else f"{e.score:.4f}")
    console.print(table)


@audit_app.command("verify")
@handle_errors
def audit_verify(
    expect_head: Optional[str] = typer.Option(None, "--expect-head", help="A head MAC recorded earlier: it must still be in the chain."),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Check the audit chain: exit 0 if intact, 1 if any event was edited, removed or inserted."""
    with _gallery(data_dir, store) as g:
        rep = g.audit_verify(expect_head=expect_head)
    archived = f" (events up to #{rep.archived_through} archived; anchor {rep.anchor_mac})" if rep.archived_through else ""
    witnessed = f", witnessed up to #{rep.witnessed_seq}" if rep.witnessed_seq is not None else ", no witness file yet"
    human = (f"[bold green]audit log intact[/]: {rep.events} event(s), head #{rep.head_seq} {rep.head_mac}{archived}{witnessed}" if rep.ok
             else f"[bold red]AUDIT LOG TAMPERED[/]: {rep.problem} (first bad event: {rep.first_bad_seq})")
    emit(rep.to_dict(), as_json, human, exit_code=0 if rep.ok else EXIT_NEGATIVE)


def _cutoff(text: str) -> dt.datetime:
    """--before: an ISO date/time (UTC when no zone) or an age: "365d" = 365 days ago."""
    m = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text or "")
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"d": dt.timedelta(days=n), "h": dt.timedelta(hours=n), "m": dt.timedelta(minutes=n)}[unit]
        return dt.datetime.now(dt.timezone.utc) - delta
    t = parse_time(text, "--before")
    assert t is not None
    return t


@audit_app.command("archive")
@handle_errors
def audit_archive(
    before: str = typer.Option(..., "--before", help="Archive events older than this: ISO date/time (UTC if no zone) or an age like 365d."),
    output: Path = typer.Option(..., "--output", "-o", help="Archive file to write (JSON Lines; replaced only if an interrupted run left it)."),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Move old audit events to a verified archive file and delete them from the database.

    The file is written, fsynced and verified against the database before anything is deleted;
    the deletion, the chain's new anchor and an audit.archive event commit together. Keep the
    file (and its SHA-256) as long as your retention requires: `audit verify-archive` proves it
    and the database chain intact together."""
    cutoff = _cutoff(before)
    with _gallery(data_dir, store) as g:
        rep = g.audit_archive(cutoff, output, actor=_actor(actor))
    if rep.count == 0:
        human = f"nothing to archive: no audit event older than {_fmt_time(cutoff)} is left in the database"
    else:
        human = (f"[bold green]archived[/] {rep.count} event(s) #{rep.first_seq}–#{rep.last_seq} "
                 f"({_fmt_time(rep.first_ts)} – {_fmt_time(rep.last_ts)}) to {rep.path}\n"
                 f"  sha256 {rep.file_sha256}, {rep.bytes} bytes, {rep.seconds}s; new chain anchor {rep.last_mac}")
    emit(rep.to_dict(), as_json, human)


@audit_app.command("verify-archive")
@handle_errors
def audit_verify_archive(
    files: list[Path] = typer.Argument(..., help="Archive file(s) written by `audit archive`, in any order."),
    standalone: bool = typer.Option(False, "--standalone", help="Check the files only, not their link to the database chain."),
    require_complete: bool = typer.Option(False, "--require-complete", help="Exit 1 unless the files and the database cover the whole chain."),
    expect_head: Optional[str] = typer.Option(None, "--expect-head", help="A head MAC recorded earlier: it must be in the archives or the database chain."),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Verify archive files (and, by default, that they join the database chain): exit 0 if
    intact, 1 if any event was edited, removed, reordered or inserted."""
    with _gallery(data_dir, store) as g:
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


# --- keys ---------------------------------------------------------------------------------------

keys_app = typer.Typer(help="API keys for the REST service (stored hashed; the secret is shown once).", no_args_is_help=True)


@keys_app.command("create")
@handle_errors
def keys_create(
    name: str = typer.Argument(..., help="A unique name for the key (e.g. the client)."),
    scopes: list[str] = typer.Option(..., "--scopes", help="Comma-separated: verify, identify, enroll, admin."),
    collections: Optional[list[str]] = typer.Option(None, "--collections", help="Comma-separated collections [default: all]."),
    expires: Optional[str] = typer.Option(None, "--expires", help="Expiry: ISO date/time or a duration like 90d."),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Create an API key and print its secret (once: it is not stored)."""
    cols = _split(collections) or None
    with _gallery(data_dir, store) as g:
        record, secret = g.keys.create(name, _split(scopes), cols, expires_at=parse_time(expires, "--expires"), actor=_actor(actor))
    if as_json:
        print_json({**record.to_dict(), "secret": secret})
        return
    console.print(f"created API key [bold]{record.name}[/] ({record.prefix}) scopes {', '.join(record.scopes)}, "
                  f"collections {', '.join(record.collections) if record.collections else 'all'}")
    console.print("secret (shown once — store it now):", highlight=False)
    console.print(secret, highlight=False, soft_wrap=True)


@keys_app.command("list")
@handle_errors
def keys_list(
    include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """API keys (never their secrets)."""
    with _gallery(data_dir, store) as g:
        keys = g.keys.list(include_revoked=include_revoked)
    if as_json:
        print_json([k.to_dict() for k in keys])
        return
    table = Table(title=f"{len(keys)} API key(s)")
    for col in ("name", "prefix", "scopes", "collections", "created", "last used", "state"):
        table.add_column(col)
    for k in keys:
        state = "[green]active[/]" if k.active else ("[red]revoked[/]" if k.revoked_at else "[yellow]expired[/]")
        table.add_row(k.name, k.prefix, ", ".join(k.scopes), ", ".join(k.collections) if k.collections else "all",
                      _fmt_time(k.created_at), _fmt_time(k.last_used_at), state)
    console.print(table)


@keys_app.command("revoke")
@handle_errors
def keys_revoke(
    name: str = typer.Argument(..., help="Key name or prefix."),
    data_dir: Optional[Path] = DataDirOption,
    store: Optional[str] = StoreOption,
    actor: Optional[str] = ActorOption,
    as_json: bool = JsonOption,
) -> None:
    """Revoke an API key (effective for the next request)."""
    with _gallery(data_dir, store) as g:
        record = g.keys.revoke(name, actor=_actor(actor))
    if as_json:
        print_json(record.to_dict())
    else:
        console.print(f"revoked API key [bold]{record.name}[/] ({record.prefix})")


def register(app: typer.Typer) -> None:
    """Add the gallery commands to the main ``facegate`` app."""
    app.add_typer(collection_app, name="collection")
    app.command("enroll")(handle_errors(enroll))
    app.command("identify")(handle_errors(identify))
    app.add_typer(subject_app, name="subject")
    app.add_typer(consent_app, name="consent")
    app.command("purge")(handle_errors(purge))
    app.add_typer(audit_app, name="audit")
    app.add_typer(keys_app, name="keys")
    app.add_typer(master_key_app, name="master-key")
