"""facegate REST service and web console (FastAPI): ``create_app(Settings(...))``."""

from .app import Service, create_app
from .settings import Settings

__all__ = ["Service", "Settings", "create_app"]
