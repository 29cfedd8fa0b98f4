"""Engine commands: detect, verify, embed, eval, calibrate, demo: the engine the service uses, from a shell."""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..calibration import DEFAULT_FMR, SUPPORTED_FMRS
from ..errors import FacegateError
from ._common import (
    BOX_HELP,
    EXIT_INPUT,
    EXIT_NEGATIVE,
    FACE_HELP,
    Actor,
    App,
    DataDir,
    Json,
    ModelOption,
    NonCommercialOption,
    Store,
    calibrated_fmr,
    console,
    emit,
    err_console,
    get_engine,
    handle_errors,
    parse_face_choice,
    print_json,
    progress,
)
from .gallery import verify_subject

app = App()


@app.command()
@handle_errors
def detect(
    images: list[Path] = typer.Argument(..., help="Image files."),
    as_json: Json = False,
) -> None:
    """Find faces: number, box, 5 landmarks, detector score and quality for each, and which is the
    subject. Choose another face for verify/embed by its number (--face, --face-a, --face-b)."""
    engine = get_engine()
    failed = False
    for path in images:
        try:
            faces, chosen = engine.detect_subject(path)
        except FacegateError as exc:
            failed = True
            _image_error(path, exc, as_json)
            continue
        subject = next((i for i, f in enumerate(faces) if f is chosen), None)
        emit({"image": str(path), "subject": subject, "faces": [{"index": i, **f.to_dict()} for i, f in enumerate(faces)]},
             as_json, functools.partial(_print_faces, path, faces, subject))
    if failed:
        raise typer.Exit(EXIT_INPUT)


def _image_error(path: Path, exc: FacegateError, as_json: bool) -> None:
    """One image of several failed: its error in place of its result; the others still run."""
    if as_json:
        print_json({"image": str(path), "error": exc.to_dict()})
    else:
        err_console.print(f"[red]{escape(str(path))}[/]: {escape(exc.message)}", highlight=False, soft_wrap=True)


def _print_faces(path: Path, faces: list, subject: int | None) -> None:
    from ._render import Col, print_table

    print_table(
        f"{path}: {len(faces)} face(s)",
        [Col("face", right=True), Col("box x,y,w,h", right=True), Col("score", drop=7, right=True),
         Col("eyes px", drop=6, right=True), Col("sharp", drop=5, right=True), Col("yaw°", drop=4, right=True),
         Col("pitch°", drop=3, right=True), Col("bright", drop=2, right=True)],
        [[f"{i}{' *' if i == subject else ''}", ",".join(f"{v:.0f}" for v in f.box), f"{f.score:.2f}",
          f"{f.quality.inter_eye_px:.0f}", f"{f.quality.sharpness:.0f}", f"{f.quality.yaw_deg:+.0f}",
          f"{f.quality.pitch_deg:+.0f}", f"{f.quality.brightness:.0f}"] for i, f in enumerate(faces)],
    )
    if subject is not None:
        console.print(f"subject: face {subject} (*)")
    elif faces:
        console.print("no clear subject: choose a face by its number (--face, --face-a, --face-b)")


@app.command()
@handle_errors
def verify(
    image_a: Path = typer.Argument(..., help="First image (e.g. the selfie)."),
    image_b: Path | None = typer.Argument(None, help="Second image (e.g. the ID photo); omit with --subject."),
    subject: str | None = typer.Option(None, "--subject", "-s", help="Verify IMAGE_A against this enrolled subject instead."),
    collection: str | None = typer.Option(None, "--collection", "-c", help="The subject's collection (with --subject)."),
    purpose: str | None = typer.Option(
        None, "--purpose", help="Declared purpose, covered by the subject's consent (with --subject)."),
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    liveness_override: str | None = typer.Option(
        None, "--liveness-override", metavar="REASON",
        help="With --subject, in a collection that requires liveness for verify: supervised override (the person is "
             "in front of you); REASON is audited."),
    fmr: float = typer.Option(
        DEFAULT_FMR, callback=calibrated_fmr,
        help=f"Target false-match rate: one of {', '.join(f'{f:g}' for f in SUPPORTED_FMRS)} "
        "(two-image mode; a collection has its own)."),
    face_a: int | None = typer.Option(None, "--face-a", min=0, help=FACE_HELP + " In IMAGE_A."),
    face_b: int | None = typer.Option(None, "--face-b", min=0, help=FACE_HELP + " In IMAGE_B."),
    box_a: str | None = typer.Option(None, "--box-a", metavar="X,Y,W,H", help=BOX_HELP + " In IMAGE_A."),
    box_b: str | None = typer.Option(None, "--box-b", metavar="X,Y,W,H", help=BOX_HELP + " In IMAGE_B."),
    model: str = ModelOption,
    allow_noncommercial: bool = NonCommercialOption,
    as_json: Json = False,
) -> None:
    """Is the person in IMAGE_A the person in IMAGE_B (or the enrolled --subject)? Exit 0 on match, 1 on no match."""
    choice_a, choice_b = parse_face_choice(face_a, box_a, "-a"), parse_face_choice(face_b, box_b, "-b")
    if subject is not None:
        if choice_a is not None or choice_b is not None:
            raise typer.BadParameter("--face-a/--box-a choose faces of two images; crop a probe verified against --subject")
        if image_b is not None:
            raise typer.BadParameter("give one image with --subject, not two")
        if not collection or not purpose:
            raise typer.BadParameter("--subject needs --collection and --purpose")
        verify_subject(collection, subject, image_a, purpose, data_dir=data_dir, store=store, actor=actor,
                       as_json=as_json, allow_noncommercial=allow_noncommercial, liveness_override=liveness_override)
        return
    if liveness_override is not None:
        raise typer.BadParameter("--liveness-override applies to --subject verification only")
    if image_b is None:
        raise typer.BadParameter("give two images, or one image with --subject/--collection/--purpose")
    result = get_engine(model, allow_noncommercial).verify(image_a, image_b, fmr=fmr, face_a=choice_a, face_b=choice_b)
    verdict = "[bold green]MATCH[/]" if result.match else "[bold red]NO MATCH[/]"
    emit(result.to_dict(), as_json,
         f"{verdict}  score {result.score:.4f}  threshold {result.threshold:.4f} (FMR {result.fmr:g}, {result.model})",
         exit_code=0 if result.match else EXIT_NEGATIVE)


@app.command()
@handle_errors
def embed(
    images: list[Path] = typer.Argument(..., help="Image files."),
    face: int | None = typer.Option(None, "--face", min=0, help=FACE_HELP + " Needs exactly one image."),
    box: str | None = typer.Option(None, "--box", metavar="X,Y,W,H", help=BOX_HELP + " Needs exactly one image."),
    model: str = ModelOption,
    allow_noncommercial: bool = NonCommercialOption,
    as_json: Json = False,
) -> None:
    """Print the subject face's template (L2-normalised) for each image (or the chosen face's)."""
    choice = parse_face_choice(face, box, "")
    if choice is not None and len(images) != 1:
        raise typer.BadParameter("--face/--box choose a face of one image: give exactly one")
    from ..engine import Chosen

    engine = get_engine(model, allow_noncommercial)
    results = engine.embed_many(images if choice is None else [Chosen(images[0], choice)])
    failed = False
    for path, res in zip(images, results):
        if isinstance(res, FacegateError):
            failed = True
            _image_error(path, res, as_json)
        else:
            head = " ".join(f"{v:+.3f}" for v in res.vector[:6])
            emit({"image": str(path), **res.to_dict()}, as_json, f"{path}: {res.model} dim {res.dim} [{head} …]")
    if failed:
        raise typer.Exit(EXIT_INPUT)


def _embed_with_progress(engine, paths: list[str], root: Path, as_json: bool) -> dict[str, np.ndarray | None]:
    vectors: dict[str, np.ndarray | None] = {}
    chunk = 32
    with progress("embedding", len(paths), enabled=not as_json) as bar:
        for start in range(0, len(paths), chunk):
            part = paths[start : start + chunk]
            for p, res in zip(part, engine.embed_many([root / p for p in part])):
                vectors[p] = None if isinstance(res, FacegateError) else res.vector
            bar.advance(len(part))
    return vectors


def _score(engine, pairs_file: Path, root: Path, all_impostors: bool, as_json: bool):
    from ..evaluation import all_impostor_pairs, read_pairs, score_pairs

    try:
        pairs = read_pairs(str(pairs_file))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pairs") from None
    if all_impostors:
        pairs = [p for p in pairs if p[2]] + all_impostor_pairs(pairs)
    if len({same for _, _, same in pairs}) < 2:
        raise typer.BadParameter("needs both genuine (1) and impostor (0) pairs", param_hint="--pairs")
    paths = sorted({p for a, b, _ in pairs for p in (a, b)})
    vectors = _embed_with_progress(engine, paths, root, as_json)
    scores, same = score_pairs(vectors, pairs)
    failed_images = sum(v is None for v in vectors.values())
    return scores, same, len(paths), failed_images


PairsOption = typer.Option(..., "--pairs", exists=True, dir_okay=False, help="TSV: path_a, path_b, same (1/0).")
RootOption = typer.Option(Path("."), "--root", exists=True, file_okay=False, help="Directory the pair paths are relative to.")
AllImpostorsOption = typer.Option(
    False, "--all-impostors", help="Use every cross-identity pair of the listed images as impostors (finer FMR)."
)


@app.command("eval")
@handle_errors
def eval_(
    pairs: Path = PairsOption,
    root: Path = RootOption,
    det: Path | None = typer.Option(
        None, "--det", help="Also save the DET curve as this PNG (needs pip install 'facegate[plots]')."),
    all_impostors: bool = AllImpostorsOption,
    model: str = ModelOption,
    allow_noncommercial: bool = NonCommercialOption,
    as_json: Json = False,
) -> None:
    """Accuracy on labelled pairs: TAR at FMR 1e-3/1e-4/1e-5, EER, failure to acquire, DET curve."""
    from ..evaluation import evaluate, plot_det
    from ..extras import require

    if det is not None:  # before the long part, not after it
        require("plots", "the DET curve (--det)")
    engine = get_engine(model, allow_noncommercial)
    scores, same, n_images, failed_images = _score(engine, pairs, root, all_impostors, as_json)
    report = evaluate(scores, same)
    if det is not None:
        plot_det({engine.model_id: (scores, same)}, str(det), title=f"DET — {pairs.name}")
    out = {"model": engine.model_id, "images": n_images, "fta_images": failed_images,
           "fta_image_rate": failed_images / max(n_images, 1), **report.to_dict(), "det_png": det and str(det)}
    emit(out, as_json, lambda: _print_report(engine.model_id, pairs, report, n_images, failed_images, det))


def _print_report(model_id: str, pairs: Path, report, n_images: int, failed_images: int,  # report: EvalReport
                  det: Path | None) -> None:
    table = Table(title=f"{model_id} on {pairs}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("pairs (genuine / impostor)", f"{report.genuine:,} / {report.impostor:,}")
    for f, tar in report.tar_at_fmr.items():
        note = "  (below FMR resolution)" if f < report.fmr_resolution else ""
        table.add_row(f"TAR @ FMR {f:g}", f"{tar:.4f}{note}")
    table.add_row("EER", f"{report.eer:.4f}")
    table.add_row("FTA (images)", f"{failed_images} / {n_images} = {failed_images / max(n_images, 1):.4f}")
    table.add_row("FTA (pairs)", f"{report.fta_rate:.4f}")
    if det is not None:
        table.add_row("DET curve", str(det))
    console.print(table)


@app.command()
@handle_errors
def calibrate(
    pairs: Path = PairsOption,
    root: Path = RootOption,
    dataset: str = typer.Option(None, help="Name of the data set, recorded with the thresholds."),
    all_impostors: bool = AllImpostorsOption,
    output: Path | None = typer.Option(None, "--output", "-o", help="Merge the entry into this calibration JSON."),
    model: str = ModelOption,
    allow_noncommercial: bool = NonCommercialOption,
) -> None:
    """Thresholds for FMR 1e-3/1e-4/1e-5 from labelled pairs, as a calibration table entry."""
    from ..evaluation import evaluate

    engine = get_engine(model, allow_noncommercial)
    scores, same, n_images, failed_images = _score(engine, pairs, root, all_impostors, as_json=False)
    report = evaluate(scores, same)
    entry = {
        "thresholds": {f"{f:g}": round(t, 6) for f, t in report.threshold_at_fmr.items()},
        "dataset": dataset or str(pairs),
        "genuine_pairs": report.genuine,
        "impostor_pairs": report.impostor,
        "date": dt.date.today().isoformat(),
        "notes": (
            f"{n_images} images, {failed_images} without a usable face; "
            f"{'all cross-identity pairs' if all_impostors else 'listed pairs'}; "
            f"TAR at these thresholds: " + ", ".join(f"{f:g}: {t:.4f}" for f, t in report.tar_at_fmr.items())
            + f"; FMR resolution {report.fmr_resolution:.1e}"
        ),
    }
    if output:
        table = json.loads(output.read_text()) if output.exists() else {}
        table[engine.model_id] = entry
        output.write_text(json.dumps(table, indent=2) + "\n")
        err_console.print(f"wrote {engine.model_id} calibration to {output}")
    print_json({engine.model_id: entry})


@app.command()
@handle_errors
def demo(
    out: Path = typer.Option(Path("facegate-demo"), "--out", help="Where to copy the sample photos to try other commands on."),
    as_json: Json = False,
) -> None:
    """Compare facegate's sample photos, and copy them to --out to try other commands on. They
    are public domain: three photos of one person, two of other people."""
    import shutil
    from importlib.resources import as_file, files

    from ._render import Col, print_table

    engine = get_engine()
    out.mkdir(parents=True, exist_ok=True)
    with as_file(files("facegate") / "data" / "demo") as samples:
        for f in sorted(samples.iterdir()):
            shutil.copy2(f, out / f.name)
    photos = sorted(out.glob("*.jpg"))
    results = [(a, b, engine.verify(a, b)) for a in photos for b in photos if a.name < b.name]

    def human() -> None:
        r0 = results[0][2]
        print_table(
            f"sample photos, compared at threshold {r0.threshold:.3f} (FMR {r0.fmr:g}, {r0.model})",
            [Col("photo"), Col("photo"), Col("score", right=True), Col("decision")],
            [[a.name, b.name, f"{r.score:+.3f}",
              Text("match", style="green") if r.match else Text("no match", style="red")] for a, b, r in results],
        )
        console.print(f"\nThe photos are in {out}/. Try:\n  facegate verify {out}/obama_1.jpg {out}/obama_2.jpg",
                      highlight=False, soft_wrap=True)

    emit({"photos": str(out), "pairs": [{"a": a.name, "b": b.name, **r.to_dict()} for a, b, r in results]}, as_json, human)
