"""facegate gallery: consented enrolment, purpose-bound 1:N search, audit, erasure, API keys.

See docs/gallery.md for the full contract.
"""

from . import errors as _errors
from . import types as _types
from .errors import *  # noqa: F403 - every gallery error is public; errors.__all__ lists them
from .gallery import Gallery
from .index import IndexConfig
from .keys import ApiKeys
from .records import ADMIN, scope_granted
from .types import *  # noqa: F403 - the API's value types; types.__all__ lists them

__all__ = ["ADMIN", "ApiKeys", "Gallery", "IndexConfig", "scope_granted"]
__all__ += _errors.__all__
__all__ += _types.__all__
