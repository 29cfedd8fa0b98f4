"""`facegate liveness …`: the liveness checker over a video file or a list of frames."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._common import EXIT_NEGATIVE, App, Json, ModelOption, NonCommercialOption, console, emit, get_engine, handle_errors

app = App(
    help="Active liveness: did a live person perform the asked head movements? (docs/liveness.md)",
    no_args_is_help=True,
)


@app.command("check")
@handle_errors
def check(
    inputs: list[Path] = typer.Argument(..., help="A video file, a directory of frames, or frame images in capture order."),
    challenge: str = typer.Option(
        ..., "--challenge", "-c",
        help="Movements asked, in order, comma-separated: left, right, up, down, closer "
             "(the person's own left/right). An empty string runs the passive checks only.",
    ),
    fps: float = typer.Option(10.0, "--fps", help="Frame rate of image inputs; most frames per second read from a video."),
    model: str = ModelOption,
    allow_noncommercial: bool = NonCommercialOption,
    as_json: Json = False,
) -> None:
    """Decide live / not live for a capture. Exit 0 when live, 1 when not, 3 on unusable input."""
    from ..liveness import Challenge, LivenessChecker, read_frames, read_video
    from ..liveness.capture import IMAGE_SUFFIXES

    asked = Challenge.parse_list(challenge)
    if len(inputs) == 1 and inputs[0].is_file() and inputs[0].suffix.lower() not in IMAGE_SUFFIXES:
        frames = read_video(inputs[0], max_fps=fps)
    else:
        frames = read_frames(inputs, fps=fps)
    checker = LivenessChecker(get_engine(model, allow_noncommercial))
    result = checker.check(frames, asked)
    emit({"input": [str(p) for p in inputs], **result.to_dict()}, as_json, lambda: _print_result(result),
         exit_code=0 if result.live else EXIT_NEGATIVE)


def _print_result(result) -> None:  # LivenessResult
    verdict = "[bold green]LIVE[/]" if result.live else "[bold red]NOT LIVE[/]"
    why = ", ".join(result.reasons) if result.reasons else "all checks passed"
    console.print(f"{verdict}  {why}  ({result.frames} frames, {result.duration_s:.1f} s, {result.model})")
    if result.challenges:
        table = Table()
        for col in ("challenge", "status", "start s", "peak s", "peak"):
            table.add_column(col)
        for s in result.challenges:
            e = s.event
            table.add_row(s.challenge.value, s.status, f"{e.start_t:.2f}" if e else "", f"{e.peak_t:.2f}" if e else "",
                          f"{e.peak:.2f}" if e else "")
        console.print(table)
    moves = ", ".join(f"{e.kind.value}@{e.start_t:.1f}s" for e in result.events) or "none"
    console.print(f"movements seen: {moves}; best frame: {result.best_frame}")


@app.command("challenge")
@handle_errors
def new_challenge(
    n: int | None = typer.Option(None, "--n", min=2, max=4, help="How many movements (default: random 2–4)."),
    as_json: Json = False,
) -> None:
    """Draw a random challenge sequence (what a session would ask), e.g. to record a test video."""
    from ..liveness import random_challenges

    seq = random_challenges(n)

    def human() -> None:
        for i, c in enumerate(seq, 1):
            console.print(f"{i}. {c.prompt}  [dim]({c.value})[/]")
        console.print(f"[dim]facegate liveness check VIDEO --challenge {','.join(c.value for c in seq)}[/]")

    emit({"challenges": [c.value for c in seq], "prompts": [c.prompt for c in seq]}, as_json, human)

