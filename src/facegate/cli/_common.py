"""What every CLI command shares: one engine per process, error -> exit code, JSON/Rich output."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar, cast

import rich.progress
import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

# typer ≥ 0.29 carries its own copy of click: its context and errors, not the click package's
from typer._click.core import Context
from typer._click.exceptions import UsageError
from typer.core import TyperCommand, TyperGroup

from ..clock import SYSTEM
from ..errors import FacegateError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes: 1 = a decision/result was negative (e.g. verify: no match), 2 = usage (Typer's),
# 3 = bad input image / no usable face, 4 = model or configuration problem (incl. a missing extra), 5 = other.
EXIT_NEGATIVE, EXIT_INPUT, EXIT_MODEL, EXIT_OTHER = 1, 3, 4, 5


def first_sentence(help_text: str | None) -> str:
    """A command's summary in its group's list: its first sentence whole, which the help
    formatter wraps, rather than Click's cut at a fixed width with "..."."""
    para = inspect.cleandoc(help_text or "").split("\n\n")[0].replace("\n", " ")
    return para.split(". ")[0].rstrip(".")


class Command(TyperCommand):
    """A facegate command: its usage line names the arguments as the help texts do
    (``verify [OPTIONS] IMAGE_A [IMAGE_B]``); its summary is its first sentence."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or first_sentence(self.help)

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


class Group(TyperGroup):
    """A facegate command group: its summary is its first sentence, as a command's."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or first_sentence(self.help)


class App(typer.Typer):
    """The Typer of every facegate command group: plain help that the terminal wraps (Rich panels
    squeeze it at 80 columns, show flags as ``<bool>`` and take ``[default: …]`` for markup),
    groups of class ``Group`` and commands of class ``Command``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("rich_markup_mode", None)
        kwargs.setdefault("cls", Group)
        super().__init__(**kwargs)

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None,
                **kwargs: Any) -> Callable[[F], F]:
        return super().command(name, cls=cls or Command, **kwargs)


class RootGroup(Group):
    """The ``facegate`` group. Under ``--json`` a usage error or an aborted prompt is also one
    ``{"error": …}`` line on stdout, as every other error is, so a script reads one contract."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        ctx.meta["facegate.argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            if _json_requested(ctx):
                print_json({"error": {"code": "usage", "message": exc.format_message(), "exit_code": exc.exit_code}})
            raise
        except typer.Abort:
            if _json_requested(ctx):
                print_json({"error": {"code": "aborted", "message": "aborted at a prompt", "exit_code": 1}})
            raise


def _json_requested(ctx: Context) -> bool:
    argv: list[str] = ctx.meta.get("facegate.argv", [])
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv


def exit_code_for(exc: FacegateError) -> int:
    from ..errors import CalibrationError, ModelError
    from ..extras import ExtraMissingError

    if isinstance(exc, (ModelError, CalibrationError, ExtraMissingError)):
        return EXIT_MODEL
    if exc.http_status in (400, 404, 413, 415, 422):
        return EXIT_INPUT
    return EXIT_OTHER


# What a CLI user does about an error whose library message cannot name CLI flags.
CLI_HINTS = {
    "consent_required": "record the subject's consent with --purposes P[,P...] and --evidence REF",
}


def calibrated_fmr(value: float) -> float:
    """Typer callback: an FMR with a calibrated threshold, else a usage error (exit 2) listing them."""
    from ..calibration import supported_fmr

    try:
        return supported_fmr(value)
    except FacegateError as exc:
        raise typer.BadParameter(exc.message) from None


def handle_errors(fn: F) -> F:
    """Turn FacegateError into a one-line message on stderr (plus the faces to choose from, when
    it lists candidates) and a specific exit code; with ``--json`` also ``{"error": ...}`` on stdout."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FacegateError as exc:
            # soft_wrap: the terminal wraps a long message; Rich would break it mid-phrase at 80 columns
            # escape: messages quote user input and name extras like facegate[postgres], not markup
            err_console.print(f"[bold red]error[/] ({exc.code}): {escape(exc.message)}", highlight=False, soft_wrap=True)
            hint = CLI_HINTS.get(exc.code)
            if hint:
                err_console.print(f"hint: {escape(hint)}", highlight=False, soft_wrap=True)
            for c in cast(list[dict[str, Any]], exc.details.get("candidates", ())):
                box = ",".join(f"{v:.0f}" for v in c["box"])
                err_console.print(f"  face {c['face']}: box {box}  score {c['score']:.2f}", highlight=False)
            if kwargs.get("as_json"):
                print_json({"error": {**exc.to_dict(), **({"hint": hint} if hint else {})}})
            raise typer.Exit(exit_code_for(exc)) from None

    return wrapper  # type: ignore[return-value]


def parse_face_choice(face: int | None, box: str | None, option: str) -> int | list[float] | None:
    """A ``--face N`` / ``--box x,y,w,h`` pair of options as the engine's ``face=`` argument."""
    if face is not None and box is not None:
        raise typer.BadParameter(f"choose the face by --face{option} or by --box{option}, not both")
    if box is None:
        return face
    try:
        values = [float(v) for v in box.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        raise typer.BadParameter(f"--box{option} is x,y,width,height in image pixels, e.g. 120,80,200,240")
    return values


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit(data: Any, as_json: bool, human: str | Callable[[], None], *, exit_code: int = 0) -> None:
    """A command's result: ``data`` as one JSON line, or the human rendering (Rich markup or a
    function that prints); then exit with ``exit_code`` when it is not 0 (a negative result)."""
    if as_json:
        print_json(data)
    elif callable(human):
        human()
    else:
        console.print(human)
    if exit_code:
        raise typer.Exit(exit_code)


_engines: dict[tuple[str, bool], Any] = {}


def get_engine(model: str = "sface", allow_noncommercial: bool = False):  # -> FaceEngine
    """One engine per (model, licence opt-in) per process; model loading is the slow part."""
    from ..engine import FaceEngine

    key = (model, allow_noncommercial)
    if key not in _engines:
        _engines[key] = FaceEngine(model, allow_noncommercial=allow_noncommercial)
    return _engines[key]


ModelOption = typer.Option(
    "sface", "--model", "-m",
    help="Embedding model: sface (default), accurate (SFace + dlib ResNet; pip install 'facegate[accurate]') "
    "or arcface-mbf (non-commercial).",
)
NonCommercialOption = typer.Option(
    False, "--allow-noncommercial", help="Accept a non-commercial model licence (research use only)."
)
FACE_HELP = "Which face is meant when the image shows several: its number from `facegate detect` (0 = most prominent)."
BOX_HELP = "Which face is meant, as a box x,y,width,height in image pixels: the detected face overlapping it most."

# The options every gallery command takes, declared once. They stay per-command (not on the root
# callback) so that `facegate enroll C S img --data-dir D --json` keeps working.
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="FACEGATE_DATA_DIR", help="Gallery data directory [default: ./.facegate].")]
Store = Annotated[str | None, typer.Option(
    "--store", envvar="FACEGATE_STORE", help="Database URL [default: SQLite file in the data dir].")]
Actor = Annotated[str | None, typer.Option("--actor", help="Who acts, for the audit log [default: cli:$USER].")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class Progress(Protocol):
    """What a long job reports while it runs; the quiet one ignores it."""

    def advance(self, n: int = 1) -> None: ...

    def update(self, done: int, total: int | None = None) -> None: ...

    def describe(self, text: str) -> None:
        """Replace the label, e.g. with the step a job without counts is at."""
        ...


class _Quiet:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, done: int, total: int | None = None) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class _Bar:
    bar: rich.progress.Progress
    task: rich.progress.TaskID

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.bar.update(self.task, total=total)
        self.bar.update(self.task, completed=done)

    def describe(self, text: str) -> None:
        self.bar.update(self.task, description=escape(text))


class _RateColumn(rich.progress.ProgressColumn):
    """Items per second (Rich's own speed column counts bytes)."""

    def render(self, task: rich.progress.Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f}/s" if speed else "", style="progress.data.speed")


@contextmanager
def progress(label: str, total: int | None, *, enabled: bool, out: Console | None = None) -> Iterator[Progress]:
    """A progress bar on stderr for a long job: ``label``, done/total, rate and time left.

    Drawn only when ``enabled`` (pass ``not as_json``) and stderr is a terminal, so JSON, pipes and
    logs get no bar; ``total=None`` when the count is not known yet (``update`` can set it later).
    The bar is removed when the job ends, leaving the command's own result as its output."""
    out = out or err_console
    if not enabled or not out.is_terminal or out.is_dumb_terminal:
        yield _Quiet()
        return
    bar = rich.progress.Progress(
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(bar_width=24),
        rich.progress.MofNCompleteColumn(),
        _RateColumn(),
        rich.progress.TimeRemainingColumn(),
        console=out,
        transient=True,
        get_time=SYSTEM.monotonic,
    )
    with bar:
        yield _Bar(bar, bar.add_task(escape(label), total=total))
