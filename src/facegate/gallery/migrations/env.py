"""Alembic environment for the gallery schema (run programmatically by Store.migrate()).

Online only, on the connection the caller passes in ``config.attributes["connection"]`` (already
inside the caller's transaction, so the whole upgrade is atomic). For an offline SQL script for
a DBA: ``alembic -x url=postgresql://… upgrade head --sql`` with script_location pointing here.
"""

from __future__ import annotations

from alembic import context

from facegate.gallery.schema import Base
import facegate.liveness.schema  # noqa: F401  (its tables join Base.metadata)
import facegate.registry.batch_schema  # noqa: F401  (its tables join Base.metadata)
import facegate.registry.dedup_schema  # noqa: F401  (its tables join Base.metadata)

config = context.config
target_metadata = Base.metadata


def run_offline() -> None:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from sqlalchemy import create_engine

        url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
        if url is None:
            raise RuntimeError("no database: pass -x url=... or set sqlalchemy.url")
        with create_engine(url).begin() as connection:
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
