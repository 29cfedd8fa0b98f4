"""Gallery stores at an older schema revision, as an older facegate left them."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import facegate.gallery.store as store_module


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(store_module.__file__).with_name("migrations")))
    return cfg


def script_head() -> str | None:
    """The newest revision among the packaged migration scripts."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def downgrade(store: store_module.Store, revision: str) -> None:
    """Run the packaged migrations' downgrades on ``store`` down to ``revision`` (tables added
    later are dropped, so the next open upgrades a store like the real legacy one)."""
    cfg = _config()
    with store.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
