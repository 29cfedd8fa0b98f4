"""`facegate enroll-batch MANIFEST --collection C`: bulk enrolment from a manifest (registry/).

The whole manifest is validated first (every bad row listed with its line, nothing enrolled),
then enrolled as a resumable job: run the same command again after a crash or Ctrl-C and it
continues where it stopped, never storing a template twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import typer

from ..clock import SYSTEM
from ._common import (
    EXIT_INPUT,
    Actor,
    App,
    DataDir,
    Json,
    NonCommercialOption,
    Store,
    console,
    emit,
    err_console,
    handle_errors,
    progress,
)
from ._gallery import actor_name, open_gallery

app = App()


@app.command("enroll-batch")
@handle_errors
def enroll_batch(
    manifest: Path = typer.Argument(..., help="CSV or JSON Lines: subject, image, purposes, evidence[, label, expires]."),
    collection: str = typer.Option(..., "--collection", "-c", help="Collection to enrol into."),
    dedup_purpose: str | None = typer.Option(
        None, "--dedup-purpose",
        help="Flag faces that match another subject consenting to this purpose (no search without it)."),
    report: Path | None = typer.Option(None, "--report", help="Write the per-row outcomes here (.csv or .json)."),
    allow_noncommercial: bool = NonCommercialOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Enrol every row of MANIFEST (image paths relative to it; each row names the consent's
    purposes and evidence reference). Exit 0 when the batch ran to its end (rejected rows are in
    the report), 3 when the manifest is invalid or no row was accepted, 5 when another registry
    job holds the collection or the batch failed. Run it again to resume an interrupted batch."""
    from ..registry.batch import KIND, BatchSettings, batch_kind, directory_params, report_csv, report_json, validate
    from ..registry.batch import report as batch_report
    from ..registry.batch_sources import DirectorySource
    from ..registry.jobs import JobActiveError, JobFailedError, JobRunner
    from ..registry.manifest import ManifestError

    if report is not None and report.suffix.lower() not in (".csv", ".json"):
        raise typer.BadParameter("--report must end in .csv or .json")
    settings = BatchSettings()
    try:
        data = manifest.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {manifest}: {exc.strerror}") from None
    who = actor_name(actor)
    with open_gallery(data_dir, store, allow_noncommercial) as g, progress("enrolling", None, enabled=not as_json) as bar:
        source = DirectorySource(manifest.parent, settings.max_image_bytes)
        try:
            parsed = validate(g, collection, data, name=manifest.name, source=source, settings=settings, now=SYSTEM.now())
        except ManifestError as exc:
            for e in cast(list[dict[str, Any]], exc.details.get("errors", [])):
                err_console.print(f"  line {e['line']}: {e['message']}", highlight=False, soft_wrap=True)
            raise
        runner = JobRunner(g.store, {KIND: batch_kind(g, settings, on_progress=bar.update)})
        params = directory_params(manifest, parsed, dedup_purpose=dedup_purpose)
        active = runner.jobs.active(collection)
        resumable = active is not None and active.kind == KIND and active.params.get("manifest") == params["manifest"] \
            and active.params.get("manifest_sha256") == parsed.sha256
        if active is not None and not resumable:
            raise JobActiveError(f"collection {collection!r} has a registry job running or queued ({active.kind} "
                                 f"{active.id}); wait for it or cancel it", collection=collection, job=active.id)
        job = active if active is not None else runner.create(KIND, collection, params=params, actor=who,
                                                              total=len(parsed.rows))
        if active is not None and not as_json:
            err_console.print(f"resuming batch {job.id} ({job.done} of {job.total} rows done)", highlight=False)
        ended = runner.run(job.id)
        rows = list(batch_report(g, job.id))
    if report is not None:
        text = report_csv(iter(rows)) if report.suffix.lower() == ".csv" else report_json(iter(rows))
        report.write_text(text, encoding="utf-8")
    if ended.status == "failed":
        err = ended.error or {}
        raise JobFailedError(f"batch {ended.id} failed ({err.get('code')}): {err.get('message')}", error=err, job=ended.id)
    summary = {"job": ended.to_dict(), "report": str(report) if report is not None else None}
    res = ended.result or {}

    def human() -> None:
        console.print(f"batch {ended.id} {ended.status}: {res.get('rows', 0)} rows, {res.get('accepted', 0)} accepted, "
                      f"{res.get('rejected', 0)} rejected, {res.get('skipped', 0)} already enrolled, "
                      f"{res.get('flagged', 0)} flagged as possible duplicates", highlight=False)
        for r in rows:
            if r["outcome"] == "rejected":
                console.print(f"  line {r['line']} {r['subject']} {r['image']}: [red]{r['reason']}[/] {r['message']}",
                              highlight=False)
        if report is not None:
            console.print(f"report: {report}", highlight=False)

    nothing = res.get("accepted", 0) + res.get("skipped", 0) == 0
    emit(summary, as_json, human, exit_code=EXIT_INPUT if nothing else 0)
