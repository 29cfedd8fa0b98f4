"""Service settings: defaults, then ``FACEGATE_*`` environment variables, then explicit values."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

ENV_PREFIX = "FACEGATE_"


def default_data_dir() -> Path:
    return Path(os.environ.get("FACEGATE_DATA_DIR") or ".facegate")


class Settings(BaseModel):
    """Everything ``create_app`` needs. Every field can be set as ``FACEGATE_<NAME>`` (upper case)."""

    model_config = {"frozen": True}

    data_dir: Path = Field(default_factory=default_data_dir, description="Where the embedded store and master key live.")
    host: str = Field("127.0.0.1", description="Interface to bind; 127.0.0.1 keeps the service local.")
    port: int = Field(8000, ge=0, le=65535)
    model: str = Field("sface", description="Embedding model for image-to-image verification and new collections.")

    # --- limits -----------------------------------------------------------------------------
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body accepted (bytes).")
    max_pixels: int = Field(25_000_000, ge=10_000, description="Largest decoded image (width x height).")
    max_faces: int = Field(20, ge=1, description="More faces than this in one image is refused (no crowd scanning).")
    max_images_per_request: int = Field(10, ge=1, description="Most images in one enrolment request.")
    decode_memory_mb: int = Field(
        256, ge=16, description="Memory (MiB) the image decodes running at once may hold together: a decode waits for "
        "room, and an image that alone needs more is refused (413 decode_too_large). A 25-megapixel photo needs about 175 MiB.")
    rate_limit_per_s: float = Field(20.0, gt=0, description="Sustained requests per second per API key.")
    rate_limit_burst: int = Field(40, ge=1, description="Requests a key may make at once before throttling.")
    auth_failures_per_min: int = Field(30, ge=1, description="Failed sign-ins per client address per minute.")

    # --- CPU work ---------------------------------------------------------------------------
    workers: int = Field(default_factory=lambda: max(2, min(8, os.cpu_count() or 2)), ge=1,
                         description="Threads running face detection / embedding / store calls.")
    max_queue: int = Field(64, ge=1, description="Requests that may wait for a worker before 503 is returned.")
    request_timeout_s: float = Field(30.0, gt=0, description="Longest a biometric request may wait plus run.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="Time in-flight requests get to finish on shutdown.")

    # --- deployment behind a proxy, monitoring ---------------------------------------------
    trusted_proxies: str = Field(
        "", description="Comma-separated addresses or networks of reverse proxies (e.g. 10.0.0.5,10.1.0.0/16) whose "
        "X-Forwarded-For / X-Forwarded-Proto are believed for the client address (sign-in throttle, logs). "
        "Empty: those headers are ignored, so a client cannot pick its own address.")
    metrics_token: str = Field(
        "", description="When set, /metrics requires 'Authorization: Bearer <token>' (for a Prometheus scrape job). "
        "Empty: /metrics is open (it carries no biometric data).")

    # --- misc -------------------------------------------------------------------------------
    log_level: str = "info"
    log_json: bool = True
    console: bool = Field(True, description="Serve the web console at /.")
    bootstrap_admin_key: bool = Field(True, description="Create and print an admin key on first start when none exists.")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: str) -> str:
        for item in _split_list(v):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {item!r} is not an IP address or network") from None
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        if v not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("log_level must be debug, info, warning, error or critical")
        return v

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``FACEGATE_*`` variables; keyword overrides (not None) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def trusted_proxy_list(self) -> list[str]:
        return _split_list(self.trusted_proxies)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "facegate.db"


def _split_list(value: str) -> list[str]:
    """Items of a comma-separated setting, blanks dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]
