"""`facegate keys …`: API keys for the REST service."""

from __future__ import annotations

import typer
from rich.text import Text

from ._common import Actor, App, DataDir, Json, Store, console, emit, handle_errors
from ._gallery import actor_name, open_gallery, parse_time, split_list
from ._render import Col, fmt_time, human, print_table

app = App(help="API keys for the REST service (stored hashed; the secret is shown once).", no_args_is_help=True)


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
    def state(k) -> Text:  # noqa: ANN001 - ApiKey
        if k.active:
            return Text("active", style="green")
        return Text("revoked", style="red") if k.revoked_at else Text("expired", style="yellow")

    print_table(
        f"{len(keys)} API key(s)",
        [Col("name"), Col("prefix"), Col("state", drop=7), Col("scopes", drop=6, wrap=True),
         Col("collections", drop=5, wrap=True), Col("created", drop=3, wrap=True), Col("last used", drop=4, wrap=True)],
        [[k.name, k.prefix, state(k), human(k.scopes), human(k.collections) if k.collections else "all",
          fmt_time(k.created_at), fmt_time(k.last_used_at)] for k in keys],
    )


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
