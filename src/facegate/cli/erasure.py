"""`facegate purge` and `facegate master-key …`: erasure by retention and consent, and the master key
whose rotation completes erasures in earlier backups."""

from __future__ import annotations

import typer

from ._common import Actor, App, DataDir, Json, Store, console, emit, handle_errors, progress
from ._gallery import actor_name, open_gallery
from ._render import print_fields

app = App()


NewKeyEnvOption = typer.Option(
    None, "--new-key-env", metavar="VAR",
    help="Take the new master key (32 bytes, base64) from environment variable VAR. Required when the "
         "current key comes from $FACEGATE_MASTER_KEY; optional otherwise (default: a random key).")


def _new_key_from_env(var: str | None) -> str | None:
    if var is None:
        return None
    import os

    from ..gallery.errors import InvalidArgumentError

    value = os.environ.get(var)
    if not value:
        raise InvalidArgumentError(
            f"--new-key-env {var}: the environment variable is not set (generate one: facegate master-key generate)")
    return value


@app.command()
@handle_errors
def purge(
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be erased; change nothing."),
    rotate_master_key: bool = typer.Option(
        False, "--rotate-master-key",
        help="Then rotate the master key, so that erased subjects are unreadable in earlier backups too."),
    new_key_env: str | None = NewKeyEnvOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Erase subjects past retention or with no active consent. Idempotent; safe from cron
    (a second concurrent run exits 5 with code `locked`)."""
    new_key = _new_key_from_env(new_key_env)
    with open_gallery(data_dir, store) as g, progress("purging", None, enabled=not as_json) as bar:
        rep = g.purge(dry_run=dry_run, actor=actor_name(actor) if actor else "purge", rotate_master_key=rotate_master_key,
                      new_key=new_key, progress=bar.update)
    def human() -> None:
        verb = "would erase" if dry_run else "erased"
        console.print(f"purge: {verb} {len(rep.erased)} subject(s)")
        for e in rep.erased:
            console.print(f"  {e.collection}/{e.subject}: {e.reason}", highlight=False)
        if rep.rotation is not None:
            _print_rotation(rep.rotation)

    emit(rep.to_dict(), as_json, human)


master_key_app = App(
    help="The master key that wraps every subject's data key: status, rotation (completes erasures in backups).",
    no_args_is_help=True)


def _print_rotation(rot) -> None:  # MasterKeyRotation
    console.print(f"master key rotated: {rot.old_key_id} → [bold]{rot.new_key_id}[/] ({rot.subjects} subject key(s), "
                  f"{rot.keyring_entries} keyring secret(s) re-wrapped in {rot.seconds:.2f} s)", highlight=False)
    if rot.key_file:
        old = "overwritten and removed" if rot.old_key_destroyed else "not found"
        console.print(f"new key in {rot.key_file}; old key {old}", highlight=False)
    else:
        console.print("[bold yellow]now[/]: store the new key as $FACEGATE_MASTER_KEY wherever the old one was, restart the "
                      "services using this store, and destroy the old key", highlight=False)


@master_key_app.command("rotate")
@handle_errors
def master_key_rotate(
    new_key_env: str | None = NewKeyEnvOption,
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Re-wrap every subject key under a new master key and destroy the old key file: database
    backups taken before become unreadable (erasures complete). Crash-safe; exits 5 (`locked`)
    if another rotation runs."""
    new_key = _new_key_from_env(new_key_env)
    with open_gallery(data_dir, store) as g:
        rot = g.rotate_master_key(actor=actor_name(actor), new_key=new_key)
    emit(rot.to_dict(), as_json, lambda: _print_rotation(rot))


@master_key_app.command("status")
@handle_errors
def master_key_status(
    data_dir: DataDir = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """The store's master key id (fingerprint), the previous one, the last rotation, where the key
    comes from, and files left by an interrupted rotation. Never prints key material."""
    with open_gallery(data_dir, store) as g:
        out = g.master_key_status()
    emit(out, as_json, lambda: print_fields("master key", out))


@master_key_app.command("generate")
def master_key_generate() -> None:
    """Print a new random master key (base64) for `--new-key-env` when keys live in a secret
    store. Treat the output as a secret."""
    from ..gallery.crypto import encode_key, generate_key

    print(encode_key(generate_key()))
