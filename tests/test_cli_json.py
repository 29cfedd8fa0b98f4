"""One JSON contract for every command that takes --json: a result or {"error": {...}} on stdout,
usage errors and declined prompts included, with the human message on stderr."""

from __future__ import annotations

import json

import pytest
import typer

from cli_support import invoke as run
from facegate.cli import app


def _json_commands() -> list[list[str]]:
    """Every command path (e.g. ["collection", "list"]) with a --json option."""
    found: list[list[str]] = []

    def walk(cmd, path: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])
        if any("--json" in getattr(p, "opts", ()) for p in cmd.params):
            found.append(path)

    walk(typer.main.get_command(app), [])
    return found


JSON_COMMANDS = _json_commands()


def test_the_walk_finds_the_commands() -> None:
    names = {" ".join(p) for p in JSON_COMMANDS}
    assert {"verify", "detect", "embed", "enroll", "collection list", "subject show", "consent grant", "keys create",
            "audit archive", "liveness check", "purge", "migrate", "pg status"} <= names


@pytest.mark.parametrize("path", JSON_COMMANDS, ids=" ".join)
def test_usage_error_under_json_is_a_json_error(path: list[str], tmp_path) -> None:
    res = run(*path, "--json", "--no-such-option", "--data-dir", tmp_path)
    assert res.returncode == 2
    err = json.loads(res.stdout)["error"]
    assert err["code"] == "usage" and "--no-such-option" in err["message"] and err["exit_code"] == 2
    assert "--no-such-option" in res.stderr  # the person still reads why on stderr


@pytest.mark.parametrize("path", JSON_COMMANDS, ids=" ".join)
def test_every_json_command_maps_library_errors(path: list[str]) -> None:
    """Each --json command runs under handle_errors, which prints FacegateError as JSON."""
    callback = typer.main.get_command(app)
    for name in path:
        callback = callback.commands[name]  # type: ignore[attr-defined]
    assert hasattr(callback.callback, "__wrapped__"), f"{' '.join(path)} is not wrapped by handle_errors"


def test_verify_usage_errors_under_json(photos) -> None:
    res = run("verify", photos["obama_1"], "--json")
    assert res.returncode == 2
    message = json.loads(res.stdout)["error"]["message"]
    assert message.endswith("give two images, or one image with --subject/--collection/--purpose")
    res = run("verify", photos["obama_1"], photos["obama_2"], "--fmr", "0.5", "--json")
    assert res.returncode == 2
    assert "0.001, 0.0001, 1e-05" in json.loads(res.stdout)["error"]["message"]


def test_library_error_under_json(tmp_path) -> None:
    res = run("collection", "show", "nope", "--json", "--data-dir", tmp_path)
    assert res.returncode == 3
    assert json.loads(res.stdout)["error"]["code"] == "collection_not_found"
    assert "no collection named 'nope'" in res.stderr


def test_erasure_under_json_needs_yes_and_erases_nothing_without_it(tmp_path) -> None:
    assert run("collection", "create", "c", "-p", "access", "--data-dir", tmp_path).returncode == 0
    res = run("collection", "delete", "c", "--json", "--data-dir", tmp_path)
    assert res.returncode == 2 and "--yes" in json.loads(res.stdout)["error"]["message"]
    assert run("collection", "show", "c", "--data-dir", tmp_path).returncode == 0
    res = run("collection", "delete", "c", "--json", "--yes", "--data-dir", tmp_path)
    assert res.returncode == 0 and json.loads(res.stdout)["deleted"] is True


def test_declined_prompt_erases_nothing(tmp_path) -> None:
    assert run("collection", "create", "c", "-p", "access", "--data-dir", tmp_path).returncode == 0
    res = run("collection", "delete", "c", "--data-dir", tmp_path, input="n\n")
    assert res.returncode == 1 and "nothing erased" in res.stderr
    assert run("collection", "show", "c", "--data-dir", tmp_path).returncode == 0


def test_without_json_usage_errors_stay_off_stdout(photos) -> None:
    res = run("verify", photos["obama_1"])
    assert res.returncode == 2 and res.stdout == "" and "give two images" in res.stderr
