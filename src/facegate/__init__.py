"""facegate: consent-first face verification and identification.

The names below are loaded on first use (PEP 562), so ``import facegate`` and the typed client
(``facegate.client``, what integrators install on their app servers) do not load onnxruntime,
OpenCV or the models until an engine is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # ``X as X`` marks an explicit re-export for type checkers; at run time __getattr__ loads them.
    from .engine import Chosen as Chosen
    from .engine import FaceEngine as FaceEngine
    from .errors import FacegateError as FacegateError
    from .models import NonCommercialModelWarning as NonCommercialModelWarning
    from .results import Embedding as Embedding
    from .results import Face as Face
    from .results import Quality as Quality
    from .results import VerifyResult as VerifyResult

__version__ = "0.1.0"

_EXPORTS = {
    "Chosen": ".engine",
    "FaceEngine": ".engine",
    "FacegateError": ".errors",
    "NonCommercialModelWarning": ".models",
    "Embedding": ".results",
    "Face": ".results",
    "Quality": ".results",
    "VerifyResult": ".results",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'facegate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
