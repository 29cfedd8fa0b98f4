"""`facegate collection …`: create, list, show and delete collections."""

from __future__ import annotations

import typer

from ._common import Actor, App, DataDir, Json, Store, calibrated_fmr, emit, handle_errors
from ._gallery import (
    LivenessRequiredOption,
    PurposesOption,
    YesOption,
    actor_name,
    confirm_erasure,
    open_gallery,
    split_list,
)
from ._render import Col, human, print_fields, print_table

app = App(help="Create, list, show and delete collections.", no_args_is_help=True)


@app.command("create")
@handle_errors
def collection_create(
    name: str = typer.Argument(..., help="Collection name."),
    purposes: list[str] = PurposesOption,
    model: str = typer.Option(
        "sface", "--model", "-m", help="Model the collection is pinned to: sface, accurate or arcface-mbf."),
    fmr: float = typer.Option(1e-4, "--fmr", callback=calibrated_fmr,
                             help="Target false-match rate per comparison: 1e-3, 1e-4 or 1e-5."),
    threshold: float | None = typer.Option(
        None, "--threshold", min=-1.0, max=1.0, help="Explicit cosine threshold (overrides --fmr calibration)."),
    retention_days: int = typer.Option(
        1095, "--retention-days", min=1, max=36500, help="Erase subjects this long after their last interaction."),
    description: str | None = typer.Option(None, "--description"),
    liveness_required: list[str] | None = LivenessRequiredOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Create a collection pinned to one model, with its allowed purposes and retention."""
    with open_gallery(data_dir, store) as g:
        col = g.create_collection(name, purposes=split_list(purposes), model=model, fmr=fmr, threshold=threshold,
                                  retention_days=retention_days, description=description,
                                  liveness_required=split_list(liveness_required), actor=actor_name(actor))
    emit(col.to_dict(), as_json,
         f"created collection [bold]{col.name}[/] — model {col.model_id}, purposes {', '.join(col.purposes)}, "
         f"threshold {col.threshold:.4f} ({col.threshold_source}, FMR {col.fmr:g}), retention {col.retention_days} d"
         + (f", liveness required for {', '.join(col.liveness_required)}" if col.liveness_required else ""))


@app.command("set-liveness")
@handle_errors
def collection_set_liveness(
    name: str = typer.Argument(...),
    operations: list[str] | None = typer.Argument(
        None, help="Operations that need a passed liveness check: enroll, verify, identify (comma-separated or several "
                   "arguments); 'none' or nothing turns the requirement off."),
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Require (or stop requiring) a passed liveness check for enrolment, verification or identification."""
    with open_gallery(data_dir, store) as g:
        col = g.set_collection_liveness(name, split_list(operations), actor=actor_name(actor))
    emit(col.to_dict(), as_json, f"collection [bold]{col.name}[/]: liveness required for "
         + (", ".join(col.liveness_required) if col.liveness_required else "nothing"))


@app.command("list")
@handle_errors
def collection_list(data_dir: DataDir = None, store: Store = None, as_json: Json = False) -> None:
    """All collections with subject and template counts."""
    with open_gallery(data_dir, store) as g:
        cols = g.list_collections()
    emit([c.to_dict() for c in cols], as_json, lambda: _print_collections(cols))


def _print_collections(cols: list) -> None:
    print_table(
        f"{len(cols)} collection(s)",
        [Col("name"), Col("purposes", drop=7, wrap=True), Col("subjects", drop=9, right=True),
         Col("templates", drop=8, right=True), Col("threshold", drop=6, right=True), Col("FMR", drop=3, right=True),
         Col("liveness for", drop=5, wrap=True), Col("retention", drop=4, right=True), Col("model", drop=2)],
        [[c.name, human(c.purposes), str(c.subjects), str(c.templates), f"{c.threshold:.4f}", f"{c.fmr:g}",
          human(c.liveness_required), f"{c.retention_days} d", c.model_id] for c in cols],
        more="facegate collection show NAME",
    )


@app.command("show")
@handle_errors
def collection_show(
    name: str = typer.Argument(...),
    stats: bool = typer.Option(False, "--index-stats", help="Also load the search index and report its mode, memory and recall."),
    data_dir: DataDir = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """One collection's settings and counts."""
    with open_gallery(data_dir, store) as g:
        col = g.get_collection(name)
        out = col.to_dict()
        if stats:
            out["index"] = g.index_stats(name)
    emit(out, as_json, lambda: print_fields(f"collection {col.name}", out))


@app.command("delete")
@handle_errors
def collection_delete(
    name: str = typer.Argument(...),
    yes: bool = YesOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Erase every subject of a collection, then the collection (audit tombstones remain)."""
    confirm_erasure(f"Erase collection {name!r} and every subject in it?", yes=yes, as_json=as_json)
    with open_gallery(data_dir, store) as g:
        n = g.delete_collection(name, actor=actor_name(actor))
    emit({"collection": name, "deleted": True, "subjects_erased": n}, as_json,
         f"deleted collection [bold]{name}[/] ({n} subject(s) erased)")
