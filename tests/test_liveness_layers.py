"""Where liveness sits: its logic loads without the web framework, its tables without the gallery
importing it, every session store satisfies the one ``SessionStore`` interface, and the service's
frame checks are bounded to its worker count."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

from facegate.liveness import InMemorySessionStore, SessionStore


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_the_liveness_package_does_not_load_fastapi_or_sqlalchemy():
    loaded = _modules_after("import facegate.liveness")
    assert "facegate.liveness.flow" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("fastapi", "starlette", "sqlalchemy")}


def test_the_gallery_schema_does_not_import_liveness():
    loaded = _modules_after("import facegate.gallery.schema")
    assert "facegate.gallery.schema" in loaded
    assert not {m for m in loaded if m.startswith("facegate.liveness")}


def test_liveness_tables_join_the_gallery_metadata():
    from facegate.gallery.schema import Base
    from facegate.liveness.schema import LivenessResultRow

    assert LivenessResultRow.__table__ is Base.metadata.tables["liveness_results"]
    assert {"liveness_sessions", "liveness_frame_digests"} <= set(Base.metadata.tables)


def test_every_session_store_satisfies_the_interface(tmp_path):
    from facegate.liveness.db_store import DatabaseSessionStore
    from facegate.service.liveness import GalleryDatabaseSessionStore

    assert isinstance(InMemorySessionStore(), SessionStore)
    db = DatabaseSessionStore.open(f"sqlite:///{tmp_path / 'gallery.db'}")
    try:
        assert isinstance(db, SessionStore)
    finally:
        db.close()
    follower = GalleryDatabaseSessionStore(SimpleNamespace(gallery=None))
    assert isinstance(follower, SessionStore)
    assert isinstance(follower.target, InMemorySessionStore)  # no gallery database: this process's memory


def test_frame_checks_run_at_most_limit_at_once():
    from facegate.service.liveness import BoundedFrameEngine

    running, most = 0, 0
    lock = threading.Lock()

    def detect(image):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return []

    engine = BoundedFrameEngine(SimpleNamespace(engine=SimpleNamespace(detect=detect, model_id="m")), 2)
    threads = [threading.Thread(target=engine.detect, args=(None,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 2 and engine.model_id == "m"
