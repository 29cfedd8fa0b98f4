"""PostgreSQL backend against a real server started by the test suite: shared gallery across
instances, erasure and withdrawal visibility, filtering that never costs a result slot, rotated
search vectors, key rotation and the cold load from them, the upgrade of a database in the
older layout, a database without any extension, the database stopped mid-enrolment, and
SQLite → PostgreSQL migration with its verification. Small data: seconds, not minutes."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pytest
from sqlalchemy import text

import pg_support
from facegate.gallery import ConsentSpec, Gallery, StoreUnavailableError
from facegate.gallery.index import GalleryIndex
from facegate.gallery.pg.memory import PgGalleryMemoryIndex
from facegate.gallery.pg.store import PgStore, PgStoreTx
from facegate.gallery.pg.vectors import vec_table
from facegate.gallery.synth import FaceLikeGenerator

MODEL = "sface-2021dec-int8bq"
DIM = 128
UTC = dt.UTC


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    monkeypatch.delenv("FACEGATE_DATABASE_URL", raising=False)


@pytest.fixture
def pg_url():
    url = pg_support.fresh_database()
    yield url
    pg_support.drop_database(url)


def open_pg(data_dir, url, **kw) -> Gallery:
    """A gallery on PostgreSQL searched by the in-memory index (``index_config`` as given)."""
    return Gallery.open(data_dir, store=url, **kw)


def synth(n_subjects: int, per: int = 2, seed: int = 0):
    gen = FaceLikeGenerator(DIM, seed=seed)
    C = gen.centres(np.arange(n_subjects))
    return gen, C, gen.samples(C, per, seed=1)


def cid_of(g: Gallery, name: str) -> int:
    with g.store.read() as tx:
        return tx.collection_by_name(name).id


def test_embedded_server_is_loopback_only_with_passwords():
    srv = pg_support.server()
    st = srv.status()
    assert st["running"] and st["port"]
    assert (srv.root / "password").stat().st_mode & 0o077 == 0
    import psycopg

    with pytest.raises(psycopg.OperationalError):  # no password, no entry
        psycopg.connect(
            host="127.0.0.1", port=st["port"], user="facegate", dbname="facegate", password="wrong", connect_timeout=5
        )
    with psycopg.connect(srv.url(driver="postgresql")) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'").fetchone()[0] == 0  # none needed


def test_two_galleries_share_one_database(tmp_path, pg_url):
    """Enrolment through one instance is identified through the other; an erasure or a
    withdrawal through one is never returned by the other afterwards."""
    a = open_pg(tmp_path / "a", pg_url)
    key = (tmp_path / "a" / "master.key").read_text().strip()
    b = open_pg(tmp_path / "b", pg_url, master_key=key)  # another host: same master key, own data dir
    a.create_collection("c", purposes=["access", "payments"], threshold=0.5)
    _gen, C, V = synth(40)
    gen2 = FaceLikeGenerator(DIM, seed=0)
    P = gen2.samples(C, 1, seed=7)  # fresh "photos" of the same people
    a.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("access",))) for i in range(30)], model_id=MODEL)
    for i in range(30):
        assert b.identify_vector("c", P[i], purpose="access", model_id=MODEL).candidates[0].subject == f"s{i}"
    b.import_templates(
        "c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("access", "payments"))) for i in range(30, 40)], model_id=MODEL
    )
    assert a.identify_vector("c", P[35], purpose="payments", model_id=MODEL).candidates[0].subject == "s35"
    # Erasure through a: b never returns s3 again, whatever the probe.
    a.delete_subject("c", "s3")
    for q in (P[3], V[6], V[7]):
        assert "s3" not in [c.subject for c in b.identify_vector("c", q, purpose="access", top_k=10, model_id=MODEL).candidates]
    # Withdrawal through b: invisible to a's very next search.
    b.withdraw_consent("c", "s36", ["payments"])
    assert a.identify_vector("c", P[36], purpose="payments", model_id=MODEL).candidates == ()
    assert a.identify_vector("c", P[36], purpose="access", model_id=MODEL).candidates[0].subject == "s36"
    assert a.index_stats("c")["templates"] == b.index_stats("c")["templates"] == 78
    assert a.audit_verify().ok and b.audit_verify().ok
    a.close()
    b.close()


def test_erasure_removes_search_vectors_in_the_same_transaction(tmp_path, pg_url):
    g = open_pg(tmp_path, pg_url)
    g.create_collection("c", purposes=["p"], threshold=0.5)
    _gen, _C, V = synth(10)
    g.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p",))) for i in range(10)], model_id=MODEL)
    cid = cid_of(g, "c")
    with g.store.read() as tx:
        sid = tx.subject(cid, "s4").id
    g.delete_subject("c", "s4")
    with g.store.read() as tx:
        for table, col in (
            ("subjects", "id"),
            ("templates", "subject_id"),
            ("consents", "subject_id"),
            (vec_table(cid), "subject_id"),
        ):
            assert tx.execute(text(f"SELECT count(*) FROM {table} WHERE {col} = :s"), {"s": sid}).scalar() == 0
    assert g.store.vacuum() < 30
    assert [tuple(e.subjects) for e in g.audit_list(action="subject.erase")] == [("s4",)]
    # Deleting the collection drops its vector table and rotation keys.
    g.delete_collection("c")
    with g.store.read() as tx:
        assert tx.execute(text("SELECT to_regclass(:t)"), {"t": vec_table(cid)}).scalar() is None
        assert tx.execute(text("SELECT count(*) FROM keyring WHERE name LIKE 'vecrot:%'")).scalar() == 0
    g.close()


def test_heavy_filtering_never_costs_a_result_slot(tmp_path, pg_url):
    """Only 5 of 400 subjects consented to "rare": top-5 for "rare" returns exactly those,
    even when the nearest templates all belong to subjects who did not consent."""
    g = open_pg(tmp_path, pg_url)
    g.create_collection("c", purposes=["common", "rare"], threshold=-1.0)
    _gen, C, V = synth(400)
    rare = {7, 77, 177, 277, 377}
    g.import_templates(
        "c",
        [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("common", "rare") if i in rare else ["common"])) for i in range(400)],
        model_id=MODEL,
    )
    for probe in (V[0], V[100], C[200]):  # probes close to subjects without the purpose
        res = g.identify_vector("c", probe, purpose="rare", top_k=5, model_id=MODEL)
        assert sorted(c.subject for c in res.candidates) == sorted(f"s{i}" for i in rare)
        assert res.searched_subjects == 5
        res = g.identify_vector("c", probe, purpose="common", top_k=5, model_id=MODEL)
        assert len(res.candidates) == 5
    # A withdrawal through another instance: the next search here has one subject fewer.
    other = open_pg(tmp_path, pg_url)
    other.withdraw_consent("c", "s77", ["rare"])
    res = g.identify_vector("c", V[154], purpose="rare", top_k=5, model_id=MODEL)
    assert sorted(c.subject for c in res.candidates) == sorted(f"s{i}" for i in rare - {77})
    assert res.searched_subjects == 4
    other.close()
    g.close()


def stored_vectors(g: Gallery, cid: int) -> np.ndarray:
    """The collection's search copy as stored (rotated), in template-id order."""
    with g.store.read() as tx:
        rows = tx.execute(text(f"SELECT embedding FROM {vec_table(cid)} ORDER BY template_id")).all()
    return np.stack([np.frombuffer(r[0], ">f4") for r in rows]).astype(np.float32)


def assert_cold_load_equals_decryption(g: Gallery, cid: int) -> None:
    """What a fresh process loads from the search copy equals the decrypted templates (1e-6)."""
    idx = g.index
    with g.store.read() as tx:
        subjects = {r.id: r for r in tx.collection_subjects(cid)}
        loaded = idx.read_vectors(tx, cid, DIM, MODEL, subjects)
        decrypted = GalleryIndex.read_vectors(idx, tx, cid, DIM, MODEL, subjects)  # the SQLite path: AES-GCM per template
    assert isinstance(idx, PgGalleryMemoryIndex) and len(loaded[0]) == len(decrypted[0]) > 0
    order_a, order_b = np.argsort(loaded[0]), np.argsort(decrypted[0])
    np.testing.assert_array_equal(loaded[0][order_a], decrypted[0][order_b])
    np.testing.assert_array_equal(loaded[1][order_a], decrypted[1][order_b])
    np.testing.assert_allclose(loaded[2][order_a], decrypted[2][order_b], atol=1e-6)


def test_stored_vectors_are_rotated_per_collection_and_key_rotation_keeps_scores(tmp_path, pg_url):
    from facegate.gallery.pg.admin import rotate_key

    g = open_pg(tmp_path, pg_url)
    for name in ("a", "b"):
        g.create_collection(name, purposes=["p"], threshold=0.3)
    _gen, C, V = synth(50)
    for name in ("a", "b"):
        g.import_templates(name, [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p",))) for i in range(50)], model_id=MODEL)
    ca, cb = cid_of(g, "a"), cid_of(g, "b")

    def stored(cid):
        return stored_vectors(g, cid)

    Sa, Sb = stored(ca), stored(cb)
    # Not the plaintext, not each other's, yet the same geometry (orthogonal maps keep cosines).
    assert np.abs((Sa * V).sum(1)).max() < 0.5 and np.abs((Sa * Sb).sum(1)).max() < 0.5
    np.testing.assert_allclose(Sa @ Sa.T, V @ V.T, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(Sa, axis=1), 1.0, atol=1e-5)
    before = g.identify_vector("a", V[10], purpose="p", model_id=MODEL).candidates[0]

    other = open_pg(tmp_path, pg_url)  # a second process that cached the old rotation
    assert other.identify_vector("a", V[11], purpose="p", model_id=MODEL).candidates[0].subject == "s5"
    out = rotate_key(g, "a", actor="test")
    assert out["version"] == 2 and out["vectors"] == 100
    Sa2 = stored(ca)
    assert np.abs((Sa2 * Sa).sum(1)).max() < 0.5  # every stored vector changed
    np.testing.assert_allclose(Sa2 @ Sa2.T, V @ V.T, atol=3e-5)
    after = g.identify_vector("a", V[10], purpose="p", model_id=MODEL).candidates[0]
    assert after.subject == before.subject and after.score == pytest.approx(before.score, abs=1e-5)
    assert other.identify_vector("a", V[11], purpose="p", model_id=MODEL).candidates[0].subject == "s5"  # saw the new version
    with g.store.read() as tx:
        names = {r[0] for r in tx.execute(text("SELECT name FROM keyring WHERE name LIKE 'vecrot:%'"))}
    assert names == {f"vecrot:{ca}:2", f"vecrot:{cb}:1"}  # the old seed is gone
    assert g.audit_list(action="collection.vector_key_rotate")[0].details == {"version": 2, "vectors": 100}
    assert g.audit_verify().ok
    # The subject's own templates come back unrotated (1:1 verify and duplicate checks use them).
    with g.store.read() as tx:
        sid = tx.subject(ca, "s3").id
    idx = g.index.get(ca, DIM, MODEL)
    np.testing.assert_allclose(idx.subject_vectors(sid), V[6:8], atol=2e-6)
    # A process started after the rotation loads the new coordinates back to the templates.
    fresh = open_pg(tmp_path, pg_url)
    assert_cold_load_equals_decryption(fresh, ca)
    again = fresh.identify_vector("a", V[10], purpose="p", model_id=MODEL).candidates[0]
    assert again.subject == before.subject and again.score == pytest.approx(before.score, abs=1e-5)
    fresh.close()
    other.close()
    g.close()


def test_database_in_the_older_layout_is_upgraded_in_place(tmp_path, pg_url):
    """A database written when facegate also searched inside PostgreSQL (search copies as
    pgvector ``vector(dim)`` with IVFFlat indexes, index bookkeeping in fg_vector_collections,
    pg_schema 2) is brought to the current layout on open: the IVFFlat indexes and the
    bookkeeping columns are gone, the search copies are float32 bytea with the same values,
    and the gallery searches as before."""
    import psycopg

    g = open_pg(tmp_path, pg_url)
    g.create_collection("c", purposes=["p"], threshold=0.3)
    _gen, _C, V = synth(61)  # the last one enrols after the upgrade
    g.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p",))) for i in range(60)], model_id=MODEL)
    cid = cid_of(g, "c")
    t = vec_table(cid)
    rotated = stored_vectors(g, cid)
    before = [g.identify_vector("c", V[2 * i + 1], purpose="p", top_k=3, model_id=MODEL).candidates for i in range(0, 60, 7)]
    g.close()
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # the older layout needed pgvector
        tids = [r[0] for r in conn.execute(f"SELECT template_id FROM {t} ORDER BY template_id")]
        conn.execute(f"ALTER TABLE {t} ADD COLUMN old vector({DIM})")
        with conn.cursor() as cur:
            cur.executemany(
                f"UPDATE {t} SET old = %s::vector WHERE template_id = %s",
                [("[" + ",".join(f"{x:.9g}" for x in v.tolist()) + "]", tid) for v, tid in zip(rotated, tids)],
            )
        conn.execute(f"ALTER TABLE {t} DROP COLUMN embedding")
        conn.execute(f"ALTER TABLE {t} RENAME COLUMN old TO embedding")
        conn.execute(f"ALTER TABLE {t} ALTER COLUMN embedding SET NOT NULL")
        conn.execute(f"CREATE INDEX {t}_ivf ON {t} USING ivfflat ((embedding::halfvec({DIM})) halfvec_cosine_ops) "
                     "WITH (lists = 4)")
        conn.execute(
            "ALTER TABLE fg_vector_collections ADD COLUMN index_name TEXT, ADD COLUMN index_lists INTEGER, "
            "ADD COLUMN index_rows BIGINT, ADD COLUMN probes INTEGER, ADD COLUMN recall DOUBLE PRECISION, "
            "ADD COLUMN built_at TIMESTAMPTZ, ADD COLUMN build_seconds DOUBLE PRECISION, "
            "ADD COLUMN tune_seconds DOUBLE PRECISION, ADD COLUMN index_type TEXT"
        )
        conn.execute(f"UPDATE fg_vector_collections SET index_name = '{t}_ivf', index_lists = 4, probes = 2, recall = 0.99")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'pg_schema'")

    g = open_pg(tmp_path, pg_url)
    with g.store.read() as tx:
        q = tx.execute
        assert q(text("SELECT value FROM meta WHERE key = 'pg_schema'")).scalar() == "3"
        assert q(text("SELECT udt_name FROM information_schema.columns WHERE table_name = :t AND column_name = 'embedding'"),
                 {"t": t}).scalar() == "bytea"
        assert q(text("SELECT count(*) FROM pg_indexes WHERE indexdef ILIKE '%ivfflat%'")).scalar() == 0
        assert [r[0] for r in q(text("SELECT column_name FROM information_schema.columns "
                                     "WHERE table_name = 'fg_vector_collections' ORDER BY ordinal_position"))] == [
            "collection_id", "dim", "rotation_version"]
        assert q(text("SELECT count(*) FROM pg_indexes WHERE indexname = 'fg_consents_purpose'")).scalar() == 1
    np.testing.assert_array_equal(stored_vectors(g, cid), rotated)  # the conversion is exact
    assert_cold_load_equals_decryption(g, cid)
    after = [g.identify_vector("c", V[2 * i + 1], purpose="p", top_k=3, model_id=MODEL).candidates for i in range(0, 60, 7)]
    assert [[(c.subject, round(c.score, 5)) for c in r] for r in after] == [
        [(c.subject, round(c.score, 5)) for c in r] for r in before]
    g.import_templates("c", [("new", V[120:122], ConsentSpec(("p",)))], model_id=MODEL)  # writes the new layout
    assert g.identify_vector("c", V[121], purpose="p", model_id=MODEL).candidates[0].subject == "new"
    assert_cold_load_equals_decryption(g, cid)
    g.close()


def test_a_database_without_any_extension_serves_a_gallery(tmp_path):
    """No pgvector (nor any other extension) in the database: enrol, search, erase, rotate the
    vector key, and a fresh process's cold load."""
    import psycopg

    from facegate.gallery.pg.admin import rotate_key

    srv = pg_support.server()
    name = f"bare_{os.getpid()}"
    with psycopg.connect(srv.url(driver="postgresql", database="postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = srv.url(database=name)
    try:
        g = open_pg(tmp_path, url)
        g.create_collection("c", purposes=["p"], threshold=0.5)
        _gen, _C, V = synth(30)
        g.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p",))) for i in range(30)], model_id=MODEL)
        with g.store.read() as tx:
            assert tx.execute(text("SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'")).scalar() == 0
        assert g.identify_vector("c", V[21], purpose="p", model_id=MODEL).candidates[0].subject == "s10"
        g.delete_subject("c", "s10")
        assert "s10" not in [c.subject for c in g.identify_vector("c", V[21], purpose="p", top_k=5, model_id=MODEL).candidates]
        assert rotate_key(g, "c", actor="test")["vectors"] == 58
        fresh = open_pg(tmp_path, url)
        assert_cold_load_equals_decryption(fresh, cid_of(fresh, "c"))
        assert fresh.identify_vector("c", V[23], purpose="p", model_id=MODEL).candidates[0].subject == "s11"
        fresh.close()
        g.close()
    finally:
        pg_support.drop_database(url)


def test_database_stopped_mid_enrolment_then_recovers(tmp_path, pg_url, engine, photos, monkeypatch):
    """Stop the server between writing the template and committing: a clear
    StoreUnavailableError, nothing half-written, and the next enrolment works once the server
    is back."""
    srv = pg_support.server()
    g = open_pg(tmp_path, pg_url, engine=engine)
    g.create_collection("c", purposes=["access"])
    g.enroll("c", "first", photos["biden_1"], consent=ConsentSpec(("access",)))
    real = PgStoreTx.insert_template

    def insert_then_stop(self, **values):
        tid = real(self, **values)
        srv.stop(mode="immediate")  # the database dies mid-transaction
        return tid

    monkeypatch.setattr(PgStoreTx, "insert_template", insert_then_stop)
    try:
        with pytest.raises(StoreUnavailableError) as err:
            g.enroll("c", "E1", [photos["obama_1"], photos["obama_2"]], consent=ConsentSpec(("access",)))
        assert err.value.http_status == 503 and err.value.code == "store_unavailable"
        with pytest.raises(StoreUnavailableError):  # still down: every call says so, quickly
            g.list_collections()
    finally:
        monkeypatch.setattr(PgStoreTx, "insert_template", real)
        srv.start()
    # Back: the same Gallery object recovers; nothing of E1 was committed.
    assert [s.external_id for s in g.list_subjects("c")] == ["first"]
    cid = cid_of(g, "c")
    with g.store.read() as tx:
        assert tx.count_vectors(cid) == 1
        assert tx.execute(text("SELECT count(*) FROM templates")).scalar() == 1
    assert g.audit_verify().ok
    r = g.enroll("c", "E1", [photos["obama_1"], photos["obama_2"]], consent=ConsentSpec(("access",)))
    assert r.accepted >= 1, [o.reason for o in r.images]
    assert g.identify("c", photos["obama_3"], purpose="access").candidates[0].subject == "E1"
    g.close()


def test_migrate_sqlite_gallery_to_postgresql_without_reenrolment(tmp_path, pg_url):
    from facegate.gallery.pg.admin import migrate_gallery

    d = tmp_path / "data"
    src = Gallery.open(d)  # the embedded SQLite default
    src.create_collection("staff", purposes=["access", "payments"], threshold=0.5)
    src.create_collection("visitors", purposes=["access"], threshold=0.5)
    _gen, C, V = synth(60)
    src.import_templates(
        "staff",
        [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("access",) if i % 2 else ["access", "payments"])) for i in range(50)],
        model_id=MODEL,
    )
    src.import_templates(
        "visitors", [(f"v{i}", V[2 * i : 2 * i + 1], ConsentSpec(("access",))) for i in range(50, 60)], model_id=MODEL
    )
    src.withdraw_consent("staff", "s4", ["access"])
    src.delete_subject("staff", "s7")
    _rec, secret = src.keys.create("kiosk", ["identify"], ["staff"])
    expected = {
        name: [src.identify_vector(name, V[2 * i + 1], purpose="access", top_k=3, model_id=MODEL).candidates for i in rng]
        for name, rng in (("staff", range(0, 50, 3)), ("visitors", range(50, 60)))
    }
    head = src.audit_verify().head_mac

    report = migrate_gallery(src, pg_url, data_dir=d, sample=50)
    assert report["ok"] and report["probes"] == 60 and report["max_score_diff"] < 1e-4
    assert report["counts"]["templates"] == 108 and report["counts"]["subjects"] == 59
    src.close()

    dst = open_pg(d, pg_url)  # same data dir: same master key file
    assert isinstance(dst.store, PgStore)
    assert {c.name: (c.subjects, c.templates) for c in dst.list_collections()} == {"staff": (49, 98), "visitors": (10, 10)}
    for name, rng in (("staff", range(0, 50, 3)), ("visitors", range(50, 60))):
        for i, want in zip(rng, expected[name]):
            got = dst.identify_vector(name, V[2 * i + 1], purpose="access", top_k=3, model_id=MODEL).candidates
            assert [c.subject for c in got] == [c.subject for c in want]
            assert [round(c.score, 4) for c in got] == [round(c.score, 4) for c in want]
    assert dst.get_subject("staff", "s4").active_purposes() == ("payments",)
    rep = dst.audit_verify()
    assert rep.ok
    assert dst.audit_list(limit=1)[0].action != "store.migrate"  # the chain continues as it was
    assert dst.keys.authenticate(secret).name == "kiosk"
    # New writes continue the chain and the id sequences.
    dst.import_templates("staff", [("new", V[118:120], ConsentSpec(("access",)))], model_id=MODEL)
    assert dst.identify_vector("staff", V[119], purpose="access", model_id=MODEL).candidates[0].subject == "new"
    assert dst.audit_verify().ok and head
    # A second migration into the same (now non-empty) database is refused.
    with pytest.raises(Exception, match="already holds a gallery"):
        migrate_gallery(Gallery.open(d), pg_url, data_dir=d)
    dst.close()


@pytest.mark.parametrize("damage", ["lost rows", "wrong vectors"])
def test_migration_verification_fails_on_a_damaged_search_copy(tmp_path, pg_url, monkeypatch, damage):
    """The check after the copy loads the destination as a serving process would: a search
    copy with rows missing, or with vectors that are not the templates', fails the migration."""
    from facegate.gallery.errors import StoreError
    from facegate.gallery.pg import admin

    d = tmp_path / "data"
    src = Gallery.open(d)
    src.create_collection("c", purposes=["p"], threshold=0.5)
    _gen, _C, V = synth(40)
    src.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p",))) for i in range(40)], model_id=MODEL)
    real_verify = admin._verify

    def damage_then_verify(source, dest, probes, now):
        (cid,) = probes
        with dest.write() as tx:
            if damage == "lost rows":
                tx.execute(text(f"DELETE FROM {vec_table(cid)} WHERE template_id % 10 = 0"))
            else:  # every other vector replaced by a constant one
                tx.execute(text(f"UPDATE {vec_table(cid)} SET embedding = :v WHERE template_id % 2 = 0"),
                           {"v": np.full(DIM, DIM**-0.5, ">f4").tobytes()})
        return real_verify(source, dest, probes, now)

    monkeypatch.setattr(admin, "_verify", damage_then_verify)
    expect = "loaded from the search copy" if damage == "lost rows" else "best score"
    with pytest.raises(StoreError, match=f"migration verification failed: .*{expect}"):
        admin.migrate_gallery(src, pg_url, data_dir=d, sample=40)
    src.close()


def test_threads_and_two_instances_enrol_identify_erase_concurrently(tmp_path, pg_url):
    """Writers on two Gallery instances (two processes' worth of pools) and searchers at once:
    no errors, no lost writes, search copy always equal to the templates, audit chain intact."""
    import threading

    a = open_pg(tmp_path / "a", pg_url)
    key = (tmp_path / "a" / "master.key").read_text().strip()
    b = open_pg(tmp_path / "b", pg_url, master_key=key)
    a.create_collection("c", purposes=["p"], threshold=0.5)
    _gen, C, V = synth(240)
    errors: list[BaseException] = []

    def writer(g: Gallery, lo: int, hi: int) -> None:
        try:
            for i in range(lo, hi, 4):
                g.import_templates(
                    "c", [(f"s{j}", V[2 * j : 2 * j + 2], ConsentSpec(("p",))) for j in range(i, min(hi, i + 4))], model_id=MODEL
                )
                if i % 20 == 0:
                    g.delete_subject("c", f"s{i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def searcher(g: Gallery) -> None:
        try:
            for i in range(60):
                g.identify_vector("c", V[2 * (i * 4 % 240) + 1], purpose="p", model_id=MODEL)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(a, 0, 120)),
        threading.Thread(target=writer, args=(b, 120, 240)),
        threading.Thread(target=searcher, args=(a,)),
        threading.Thread(target=searcher, args=(b,)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    erased = {f"s{i}" for i in range(0, 240, 20)}
    names = {s.external_id for s in a.list_subjects("c", limit=1000)}
    assert names == {f"s{i}" for i in range(240)} - erased
    cid = cid_of(a, "c")
    with a.store.read() as tx:
        assert tx.count_vectors(cid) == tx.execute(text("SELECT count(*) FROM templates")).scalar() == 2 * len(names)
    for i in sorted(erased):
        j = int(i[1:])
        assert i not in [c.subject for c in b.identify_vector("c", V[2 * j], purpose="p", top_k=10, model_id=MODEL).candidates]
    assert a.audit_verify().ok
    a.close()
    b.close()


def test_master_key_rotation_rewraps_vector_keys_and_other_instances_follow(tmp_path, pg_url):
    """The gallery's master-key rotation re-wraps the PostgreSQL backend's rotation seeds
    (keyring ``vecrot:*``) too: search, enrolment and vector-key rotation keep working, in
    this instance and in another one that reads the same data dir."""
    from facegate.gallery.pg.admin import rotate_key

    a = open_pg(tmp_path / "d", pg_url)
    a.create_collection("c", purposes=["p"], threshold=0.5)
    _gen, _C, V = synth(20)
    a.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p",))) for i in range(10)], model_id=MODEL)
    b = open_pg(tmp_path / "d", pg_url)
    assert b.identify_vector("c", V[1], purpose="p", model_id=MODEL).candidates[0].subject == "s0"
    rep = a.rotate_master_key(actor="test")
    assert rep.keyring_entries >= 2  # audit MAC + the collection's vector seed
    a.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p",))) for i in range(10, 20)], model_id=MODEL)
    for g in (a, b):
        assert g.identify_vector("c", V[31], purpose="p", model_id=MODEL).candidates[0].subject == "s15"
    b.import_templates("c", [("late", V[0:1], ConsentSpec(("p",)))], model_id=MODEL)
    assert rotate_key(b, "c", actor="test")["vectors"] == 41
    assert a.identify_vector("c", V[3], purpose="p", model_id=MODEL).candidates[0].subject == "s1"
    assert a.audit_verify().ok
    a.close()
    b.close()


def test_audit_is_append_only_and_edits_by_a_superuser_are_detected(tmp_path, pg_url):
    import psycopg

    g = open_pg(tmp_path, pg_url)
    g.create_collection("c", purposes=["p"], threshold=0.5)
    _gen, _C, V = synth(3)
    g.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p",))) for i in range(3)], model_id=MODEL)
    g.delete_subject("c", "s1")
    assert g.audit_verify().ok
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):  # the application role cannot
            conn.execute("UPDATE audit_events SET decision = 'kept' WHERE action = 'subject.erase'")
        # Someone with the power to disable the trigger rewrites history: the chain says where.
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        seq = conn.execute("SELECT seq FROM audit_events WHERE action = 'subject.erase'").fetchone()[0]
        conn.execute("UPDATE audit_events SET decision = 'kept' WHERE seq = %s", (seq,))
        conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    rep = g.audit_verify()
    assert not rep.ok and rep.first_bad_seq == seq
    g.close()
