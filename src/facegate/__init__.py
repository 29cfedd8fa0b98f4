"""facegate: consent-first face verification and identification."""

from .engine import Chosen, FaceEngine
from .errors import FacegateError
from .models import NonCommercialModelWarning
from .results import Embedding, Face, Quality, VerifyResult

__version__ = "0.1.0"
__all__ = ["Chosen", "Embedding", "Face", "FaceEngine", "FacegateError", "NonCommercialModelWarning", "Quality", "VerifyResult", "__version__"]
