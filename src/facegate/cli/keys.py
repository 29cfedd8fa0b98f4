"""`facegate keys …`: API keys for the REST service."""

from __future__ import annotations

import typer
from rich.table import Table

from ._common import Actor, DataDir, Json, Store, console, emit, handle_errors
from ._gallery import actor_name, fmt_time, open_gallery, parse_time, split_list

app = typer.Typer(help="API keys for the REST service (stored hashed; the secret is shown once).", no_args_is_help=True)


@app.command("create")
@handle_errors
def keys_create(
    name: str = typer.Argument(..., help="A unique name for the key (e.g. the client)."),
    scopes: list[str] = typer.Option(..., "--scopes", help="Comma-separated: verify, identify, enroll, admin."),
    collections: list[str] | None = typer.Option(None, "--collections", help="Comma-separated collections [default: all]."),
    expires: str | None = typer.Option(None, "--expires", help="Expiry: ISO date/time or a duration like 90d."),
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Create an API key and print its secret (once: it is not stored)."""
    cols = split_list(collections) or None
    with open_gallery(data_dir, store) as g:
        record, secret = g.keys.create(name, split_list(scopes), cols, expires_at=parse_time(expires, "--expires"),
                                       actor=actor_name(actor))

    def human() -> None:
        console.print(f"created API key [bold]{record.name}[/] ({record.prefix}) scopes {', '.join(record.scopes)}, "
                      f"collections {', '.join(record.collections) if record.collections else 'all'}")
        console.print("secret (shown once — store it now):", highlight=False)
        console.print(secret, highlight=False, soft_wrap=True)

    emit({**record.to_dict(), "secret": secret}, as_json, human)


@app.command("list")
@handle_errors
def keys_list(
    include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
    data_dir: DataDir = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """API keys (never their secrets)."""
    with open_gallery(data_dir, store) as g:
        keys = g.keys.list(include_revoked=include_revoked)
    emit([k.to_dict() for k in keys], as_json, lambda: _print_keys(keys))


def _print_keys(keys: list) -> None:
    table = Table(title=f"{len(keys)} API key(s)")
    for col in ("name", "prefix", "scopes", "collections", "created", "last used", "state"):
        table.add_column(col)
    for k in keys:
        state = "[green]active[/]" if k.active else ("[red]revoked[/]" if k.revoked_at else "[yellow]expired[/]")
        table.add_row(k.name, k.prefix, ", ".join(k.scopes), ", ".join(k.collections) if k.collections else "all",
                      fmt_time(k.created_at), fmt_time(k.last_used_at), state)
    console.print(table)


@app.command("revoke")
@handle_errors
def keys_revoke(
    name: str = typer.Argument(..., help="Key name or prefix."),
    data_dir: DataDir = None,
    store: Store = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Revoke an API key (effective for the next request)."""
    with open_gallery(data_dir, store) as g:
        record = g.keys.revoke(name, actor=actor_name(actor))
    emit(record.to_dict(), as_json, f"revoked API key [bold]{record.name}[/] ({record.prefix})")
