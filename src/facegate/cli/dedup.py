"""`facegate dedup …`: whole-collection de-duplication — plan and run, list the clusters found,
record a reviewer's decision on one, list past runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from ..registry.dedup_plan import DEFAULT_FMR, DEFAULT_MAX_EXPECTED_FALSE_PAIRS, DedupPlan
from ..registry.dedup_report import DedupReport, DedupRun
from ._common import Actor, App, DataDir, Json, Store, calibrated_fmr, console, emit, handle_errors, progress
from ._gallery import actor_name, open_gallery
from ._render import Col, fmt_time, print_fields, print_table

app = App(help="Find subjects registered twice, review the clusters found.", no_args_is_help=True)

ReportOption = typer.Option(None, "--report", help="Also write the report to this file: .json or .csv (one row per pair).")


@app.command("run")
@handle_errors
def dedup_run(
    collection: str = typer.Argument(..., help="Collection."),
    purpose: str = typer.Option(..., "--purpose", help="Declared purpose; only subjects consenting to it take part."),
    fmr: float = typer.Option(DEFAULT_FMR, "--fmr", callback=calibrated_fmr,
                              help="False-match rate whose calibrated threshold decides a pair."),
    incremental: bool = typer.Option(False, "--incremental",
                                     help="Only subjects new or changed since the last run (same purpose and FMR) "
                                          "against everyone."),
    plan_only: bool = typer.Option(False, "--plan", help="Print the arithmetic and stop: nothing is searched."),
    max_false: float = typer.Option(DEFAULT_MAX_EXPECTED_FALSE_PAIRS, "--max-expected-false-pairs", min=0,
                                    help="Refuse a run expected to report more false pairs than this."),
    report: Path | None = ReportOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Pair every subject consenting to PURPOSE with everyone else and report the pairs scoring at
    or above the threshold for FMR, grouped into clusters. The arithmetic (pairs compared and the
    false pairs to expect) is printed first; a run expected to exceed the limit is refused (exit 3)."""
    from ..registry.dedup import Dedup

    _check_report_path(report)
    with open_gallery(data_dir, store) as g:
        d = Dedup(g)
        plan = d.plan(collection, purpose=purpose, fmr=fmr, incremental=incremental, max_expected_false_pairs=max_false)
        if plan_only:
            emit({"plan": plan.to_dict()}, as_json, lambda: _print_plan(plan))
            return
        if not as_json:
            _print_plan(plan)
        with progress("searching", plan.queried, enabled=not as_json) as bar:
            rep = d.run(collection, purpose=purpose, fmr=fmr, incremental=incremental,
                        max_expected_false_pairs=max_false, actor=actor_name(actor),
                        on_progress=lambda done, total: bar.update(done, total))
    _emit_report(rep, report, as_json)


@app.command("clusters")
@handle_errors
def dedup_clusters(
    collection: str = typer.Argument(..., help="Collection."),
    run: int | None = typer.Option(None, "--run", help="A run id [default: the latest completed run]."),
    include_reviewed: bool = typer.Option(False, "--all", help="Also the clusters already reviewed, with the decision."),
    report: Path | None = ReportOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """The clusters of a run (and of the runs it continues) awaiting review. Subjects erased
    since, or whose consent no longer covers the run's purpose, are left out. Audited."""
    from ..registry.dedup import Dedup

    _check_report_path(report)
    with open_gallery(data_dir, store) as g:
        rep = Dedup(g).report(collection, run=run, include_reviewed=include_reviewed, actor=actor_name(actor))
    _emit_report(rep, report, as_json)


@app.command("review")
@handle_errors
def dedup_review(
    collection: str = typer.Argument(..., help="Collection."),
    cluster: str = typer.Argument(..., help="The cluster's key (from `facegate dedup clusters`)."),
    same: bool = typer.Option(False, "--same", help="One person registered several times."),
    different: bool = typer.Option(False, "--different", help="Different people."),
    note: str = typer.Option(..., "--note", help="Why (what was checked); recorded in the audit log."),
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Record the decision on a cluster; a reviewed cluster is not reported again."""
    from ..registry.dedup import Dedup

    if same == different:
        raise typer.BadParameter("give exactly one of --same or --different")
    with open_gallery(data_dir, store) as g:
        r = Dedup(g).review(collection, cluster, decision="same" if same else "different", note=note,
                            actor=actor_name(actor))
    emit(r.to_dict(), as_json, lambda: console.print(Text(f"cluster {r.key} marked {r.decision} by {r.actor}")))


@app.command("runs")
@handle_errors
def dedup_runs(
    collection: str = typer.Argument(..., help="Collection."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    data_dir: DataDir = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Past de-duplication runs of a collection, newest first."""
    from ..registry.dedup import Dedup

    with open_gallery(data_dir, store) as g:
        runs = Dedup(g).runs(collection, limit=limit)
    emit([r.to_dict() for r in runs], as_json, lambda: _print_runs(collection, runs))


def _check_report_path(path: Path | None) -> None:
    if path is not None and path.suffix.lower() not in (".json", ".csv"):
        raise typer.BadParameter("--report must end in .json or .csv")


def _emit_report(rep: DedupReport, path: Path | None, as_json: bool) -> None:
    """The report to ``path`` (JSON or CSV by its suffix) when given, and to stdout."""
    import json

    if path is not None:
        text = rep.to_csv() if path.suffix.lower() == ".csv" else json.dumps(rep.to_dict(), ensure_ascii=False, indent=1)
        path.write_text(text, encoding="utf-8")
    emit(rep.to_dict(), as_json, lambda: _print_report(rep))


def _print_plan(plan: DedupPlan) -> None:
    fields = {
        f"subjects consenting to {plan.purpose}": f"{plan.subjects:,}",
        **({f"new or changed since run {plan.after_run}": f"{plan.queried:,}"} if plan.mode == "incremental" else {}),
        "pairs compared": f"{plan.pairs_compared:,}",
        "FMR": f"{plan.fmr:g} (threshold {plan.threshold:.4f}, {plan.model_id})",
        "expected false pairs": f"{plan.expected_false_pairs:,.2f} (pairs compared × FMR)",
        "limit": f"{plan.max_expected_false_pairs:g}",
    }
    print_fields(f"de-duplication of {plan.collection} ({plan.mode})", fields)
    if not plan.within_limit:
        console.print(Text(f"over the limit: this run needs FMR {plan.fmr_needed or 0:.1e} or lower, or "
                           "--max-expected-false-pairs raised knowing each false pair is a review", style="bold red"))


def _print_report(rep: DedupReport) -> None:
    r = rep.run
    hidden = f", {rep.reviewed_hidden} reviewed cluster(s) not shown" if rep.reviewed_hidden else ""
    console.print(Text(f"run {r.id} ({r.mode}, {r.status}): {rep.pairs} pair(s) in {len(rep.clusters)} cluster(s) "
                       f"to review{hidden}"))
    for c in rep.clusters:  # ids and notes are data: Text, never markup
        line = Text(c.key, style="bold") + Text(f"  {len(c.subjects)} subjects, best {c.max_score:.4f}")
        if c.review is not None:
            line += Text(f"  [{c.review.decision}: {c.review.note}]")
        console.print(line)
        for p in c.pairs:
            console.print(Text(f"    {p.a}  {p.b}  {p.score:.4f}"))


RUN_COLS = (Col("run"), Col("status"), Col("mode", drop=5), Col("purpose", drop=6), Col("FMR", drop=7, right=True),
            Col("subjects", drop=8, right=True), Col("searched", drop=3, right=True),
            Col("expected false", drop=4, right=True), Col("found", right=True), Col("started", drop=2),
            Col("seconds", drop=1, right=True), Col("actor", drop=1))


def _print_runs(collection: str, runs: list[DedupRun]) -> None:
    rows = [[str(r.id), r.status, r.mode, r.purpose, f"{r.fmr:g}", f"{r.subjects:,}", f"{r.queried:,}",
             f"{r.expected_false_pairs:,.1f}", "—" if r.pairs_found is None else f"{r.pairs_found:,}",
             fmt_time(r.started_at), "—" if r.seconds is None else f"{r.seconds:.1f}", r.actor] for r in runs]
    print_table(f"de-duplication runs of {collection}", RUN_COLS, rows, more="facegate dedup runs --json")
