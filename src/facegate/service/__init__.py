"""facegate REST service and web console (FastAPI): ``create_app(Settings(...))``.

Loaded on first use (PEP 562): the typed client imports ``facegate.service.schemas`` without
pulling in FastAPI, the gallery or the models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # ``X as X`` marks an explicit re-export for type checkers; at run time __getattr__ loads them.
    from .app import create_app as create_app
    from .core import Service as Service
    from .settings import Settings as Settings

_EXPORTS = {"Service": ".core", "create_app": ".app", "Settings": ".settings"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'facegate.service' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
