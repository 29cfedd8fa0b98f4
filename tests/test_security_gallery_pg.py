"""The audit witness and the legacy-names check on PostgreSQL: several processes (each with its
own data directory, as several `facegate serve` replicas) sharing one database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

import pg_support
from facegate.gallery import AuditTamperedError, ConsentSpec, Gallery
from facegate.gallery.crypto import encode_key, generate_key
from facegate.gallery.store import SCHEMA_HEAD
from store_support import downgrade
from test_security_gallery import legacy_subject

ACCESS = ConsentSpec(("access",), evidence_ref="form-1")


@pytest.fixture
def pg(monkeypatch):
    url = pg_support.fresh_database()
    monkeypatch.setenv("FACEGATE_MASTER_KEY", encode_key(generate_key()))
    monkeypatch.setenv("FACEGATE_STORE", url)
    yield url
    pg_support.drop_database(url)


def sql(url: str, *statements: str) -> None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
                         autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def truncate_newest(url: str, n: int) -> None:
    sql(url, "ALTER TABLE audit_events DISABLE TRIGGER USER",
        f"DELETE FROM audit_events WHERE seq > (SELECT max(seq) FROM audit_events) - {n}",
        "UPDATE audit_head SET seq = (SELECT max(seq) FROM audit_events), "
        "mac = (SELECT mac FROM audit_events ORDER BY seq DESC LIMIT 1)")


def test_each_process_witness_catches_truncation(pg, tmp_path, engine, photos):
    a = Gallery.open(tmp_path / "a", engine=engine)
    b = Gallery.open(tmp_path / "b", engine=engine)
    try:
        a.create_collection("c", purposes=["access"])
        a.enroll("c", "E1", photos["obama_1"], consent=ACCESS)
        for _ in range(2):
            b.identify("c", photos["obama_2"], purpose="access")
        rep = a.audit_verify()  # a verify also witnesses the other processes' events
        assert rep.ok and rep.witnessed_seq == rep.head_seq
        assert b.audit_verify().ok
        truncate_newest(pg, 2)
        for g in (a, b):
            rep = g.audit_verify()
            assert not rep.ok and "removed" in rep.problem and rep.witnessed_seq == rep.head_seq + 2
        # A data directory that had never appended nor verified cannot know what came before it:
        # its first verify accepts the shortened chain and witnesses it from there on.
        with Gallery.open(tmp_path / "fresh", engine=engine) as fresh:
            rep = fresh.audit_verify()
            assert rep.ok and rep.witnessed_seq == rep.head_seq
        sql(pg, "DELETE FROM audit_head")
        rep = a.audit_verify()
        assert not rep.ok and "head row is missing" in rep.problem
        with pytest.raises(AuditTamperedError):
            a.enroll("c", "E2", photos["biden_1"], consent=ACCESS)
    finally:
        a.close()
        b.close()


def test_legacy_invalid_names_reported_and_erasable_on_postgresql(pg, tmp_path):
    with Gallery.open(tmp_path / "a") as g:
        g.create_collection("bank", purposes=["kyc"])
        legacy_subject(g, "bank", "..", "kyc")
        legacy_subject(g, "bank", "ok-1", "kyc")
        downgrade(g.store, "0005")  # the store as a facegate before migration 0006 left it
    with Gallery.open(tmp_path / "a") as g:
        assert g.store.schema_version() == SCHEMA_HEAD
        assert g.audit_list(action="store.names_check")[0].subjects == ("..",)
    env = {**os.environ, "FACEGATE_DATA_DIR": str(tmp_path / "cli")}
    r = subprocess.run([sys.executable, "-m", "facegate", "subject", "delete", "bank", "..", "--yes", "--json"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["erased"] is True
    with Gallery.open(tmp_path / "a") as g:
        assert [s.external_id for s in g.list_subjects("bank")] == ["ok-1"]
        assert g.audit_verify().ok
