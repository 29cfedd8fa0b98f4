"""What importing facegate costs: the typed client is installed on integrators' app servers and
must not drag in the service, the database layer or the models."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("fastapi", "starlette", "sqlalchemy", "alembic", "onnxruntime", "onnx", "cv2", "numpy", "faiss", "psycopg")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_client_does_not_import_the_service_database_or_models():
    assert _loaded_after("import facegate.client") == []


def test_top_level_import_is_lazy_until_an_engine_is_asked_for():
    assert _loaded_after("import facegate") == []
    assert "onnxruntime" in _loaded_after("from facegate import FaceEngine")


def test_onnx_is_imported_only_to_prepare_a_model_graph():
    # Each CLI process or gallery child that loads no model saves about a second.
    assert "onnx" not in _loaded_after("import facegate.gallery, facegate.cli")
    assert "onnx" in _loaded_after("from facegate import FaceEngine; FaceEngine()")


def test_public_names_resolve():
    import facegate

    for name in facegate.__all__:
        assert getattr(facegate, name) is not None
    assert sorted(dir(facegate)) == sorted(facegate.__all__)
