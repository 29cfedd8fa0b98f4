"""Gallery behaviour on real photos and real SQLite files: consent, withdrawal, expiry, purge,
erasure, audit chain, model pinning, quality gate, template protection."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3

import cv2
import numpy as np
import pytest
from PIL import Image

from facegate.clock import ManualClock
from facegate.gallery import (
    CollectionExistsError,
    CollectionNotFoundError,
    ConsentRequiredError,
    ConsentSpec,
    Gallery,
    InvalidArgumentError,
    LockedError,
    MasterKeyMismatchError,
    MasterKeyMissingError,
    ModelMismatchError,
    PurposeNotAllowedError,
    PurposeRequiredError,
    SchemaError,
    SubjectNotFoundError,
)
from facegate.gallery.crypto import Crypto, SubjectCipher
from facegate.gallery.errors import TemplateIntegrityError
from facegate.gallery.synth import FaceLikeGenerator

UTC = dt.UTC


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)


@pytest.fixture
def gallery(tmp_path, engine):
    g = Gallery.open(tmp_path / "data", engine=engine)
    g.create_collection("staff", purposes=["access", "payments"])
    yield g
    g.close()


def raw(g: Gallery) -> sqlite3.Connection:
    return sqlite3.connect(g.store.path)


def rgb(path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


ACCESS = ConsentSpec(("access",), evidence_ref="form-1")


# --- enrolment, identification, verification ----------------------------------------------------


def test_enroll_identify_verify_real_photos(gallery, photos):
    r = gallery.enroll("staff", "E1", [photos["obama_1"], photos["obama_2"]], consent=ACCESS, label="Obama")
    assert r.created and r.accepted == 2 and r.rejected == 0
    assert all(o.template_id for o in r.images)
    gallery.enroll("staff", "E2", photos["biden_1"], consent=ConsentSpec(("access", "payments")))

    res = gallery.identify("staff", photos["obama_3"], purpose="access")
    assert [c.subject for c in res.candidates] == ["E1"]
    assert res.candidates[0].label == "Obama" and res.candidates[0].score >= res.threshold
    assert res.searched_subjects == 2 and res.match

    none = gallery.identify("staff", photos["collins_1"], purpose="access")
    assert none.candidates == () and not none.match

    v = gallery.verify("staff", "E1", photos["obama_3"], purpose="access")
    assert v.match and v.score >= v.threshold
    v2 = gallery.verify("staff", "E2", photos["obama_3"], purpose="access")
    assert not v2.match

    s = gallery.get_subject("staff", "E1")
    assert len(s.templates) == 2 and s.active_purposes() == ("access",)
    assert s.last_seen_at > s.created_at  # the match counted as an interaction


def test_probe_images_are_not_stored(gallery, photos):
    gallery.enroll("staff", "E1", photos["obama_1"], consent=ACCESS)
    before = raw(gallery).execute("SELECT count(*) FROM templates").fetchone()[0]
    gallery.identify("staff", photos["obama_3"], purpose="access")
    gallery.verify("staff", "E1", photos["obama_2"], purpose="access")
    db = raw(gallery)
    assert db.execute("SELECT count(*) FROM templates").fetchone()[0] == before
    details = [r[0] for r in db.execute("SELECT details FROM audit_events")]
    assert all(len(d) < 500 and "embedding" not in d for d in details)


def test_enrolment_needs_consent_and_allowed_purposes(gallery, photos):
    with pytest.raises(ConsentRequiredError):
        gallery.enroll("staff", "E1", photos["obama_1"])
    with pytest.raises(PurposeNotAllowedError):
        gallery.enroll("staff", "E1", photos["obama_1"], consent=ConsentSpec(("marketing",)))
    assert gallery.count_subjects("staff") == 0
    assert raw(gallery).execute("SELECT count(*) FROM templates").fetchone()[0] == 0
    with pytest.raises(InvalidArgumentError):
        gallery.enroll("staff", " bad id", photos["obama_1"], consent=ACCESS)
    with pytest.raises(InvalidArgumentError):
        gallery.enroll("staff", "E1", photos["obama_1"], consent=ConsentSpec(("access",), expires_at=dt.datetime(2020, 1, 1)))


def test_search_needs_a_declared_allowed_purpose(gallery, photos):
    gallery.enroll("staff", "E1", photos["obama_1"], consent=ACCESS)
    with pytest.raises(PurposeRequiredError):
        gallery.identify("staff", photos["obama_3"], purpose="")
    with pytest.raises(PurposeNotAllowedError):
        gallery.identify("staff", photos["obama_3"], purpose="marketing")
    with pytest.raises(CollectionNotFoundError):
        gallery.identify("nope", photos["obama_3"], purpose="access")
    with pytest.raises(SubjectNotFoundError):
        gallery.verify("staff", "E404", photos["obama_3"], purpose="access")


def test_quality_gate_reason_codes(gallery, photos):
    img = rgb(photos["obama_1"])
    tiny = cv2.resize(img, (img.shape[1] // 8, img.shape[0] // 8))
    blurred = cv2.GaussianBlur(img, (0, 0), 6)
    other = cv2.resize(rgb(photos["biden_1"]), (img.shape[1], img.shape[0]))
    two = np.concatenate([img, other], axis=1)
    blank = np.full((300, 300, 3), 128, np.uint8)
    truncated = photos["obama_2"].read_bytes()[:2000]
    r = gallery.enroll("staff", "E1", [photos["obama_1"], tiny, blurred, two, blank, truncated, b"not an image",
                                        photos["obama_1"]], consent=ACCESS)
    reasons = [o.reason for o in r.images]
    assert reasons == [None, "face_too_small", "too_blurry", "ambiguous_face", "no_face", "truncated", "not_an_image",
                       "duplicate_image"]
    assert r.accepted == 1 and r.images[1].quality is not None
    # All rejected for a new subject: nothing is created.
    r2 = gallery.enroll("staff", "E2", [blurred], consent=ACCESS)
    assert not r2.created and r2.accepted == 0
    with pytest.raises(SubjectNotFoundError):
        gallery.get_subject("staff", "E2")


def test_duplicate_identity_warning(gallery, photos):
    gallery.enroll("staff", "cust-1", photos["obama_1"], consent=ACCESS)
    r = gallery.enroll("staff", "cust-2", photos["obama_2"], consent=ACCESS, dedup_purpose="access")
    assert r.accepted == 1 and r.flagged_for_review
    assert [d.subject for d in r.duplicates] == ["cust-1"] and r.duplicates[0].score > 0.4
    ev = gallery.audit_list(action="enroll", limit=1)[0]
    assert ev.details["duplicates"] == ["cust-1"] and "cust-1" in ev.subjects and ev.details["flagged_for_review"]
    # Adding another photo of the same subject is not a duplicate of itself.
    r3 = gallery.enroll("staff", "cust-1", photos["obama_3"], dedup_purpose="access")
    assert r3.accepted == 1 and [d.subject for d in r3.duplicates] == ["cust-2"]
    # No declared de-duplication purpose: no search; a purpose nobody consented to: nothing compared.
    assert not gallery.enroll("staff", "cust-3", photos["obama_3"], consent=ACCESS).flagged_for_review
    r4 = gallery.enroll("staff", "cust-4", photos["obama_3"], consent=ACCESS, dedup_purpose="payments")
    assert r4.accepted == 1 and not r4.flagged_for_review and r4.duplicates == ()


# --- consent --------------------------------------------------------------------------------------


def test_subject_without_consent_for_purpose_is_never_returned(gallery, photos):
    gallery.enroll("staff", "E1", [photos["obama_1"], photos["obama_2"]], consent=ACCESS)
    gallery.enroll("staff", "E2", photos["biden_1"], consent=ConsentSpec(("payments",)))
    for probe in (photos["obama_3"], photos["obama_1"]):  # even the enrolment photo itself
        res = gallery.identify("staff", probe, purpose="payments", top_k=100)
        assert "E1" not in [c.subject for c in res.candidates]
        assert res.searched_subjects == 1
    with pytest.raises(ConsentRequiredError):
        gallery.verify("staff", "E1", photos["obama_3"], purpose="payments")
    refused = gallery.audit_list(action="verify", limit=1)[0]
    assert refused.decision == "refused_no_consent" and refused.purpose == "payments"


def test_withdrawal_takes_effect_immediately(gallery, photos):
    gallery.enroll("staff", "E1", photos["obama_1"], consent=ConsentSpec(("access", "payments")))
    assert gallery.identify("staff", photos["obama_3"], purpose="access").match
    s = gallery.withdraw_consent("staff", "E1", ["access"])
    assert s.active_purposes() == ("payments",)
    assert not gallery.identify("staff", photos["obama_3"], purpose="access").match
    assert gallery.identify("staff", photos["obama_3"], purpose="payments").match
    gallery.grant_consent("staff", "E1", ConsentSpec(("access",), evidence_ref="form-2"))
    assert gallery.identify("staff", photos["obama_3"], purpose="access").match
    gallery.withdraw_consent("staff", "E1")  # all purposes
    assert not gallery.identify("staff", photos["obama_3"], purpose="payments").match
    with pytest.raises(ConsentRequiredError):  # no active consent left: more templates need a new one
        gallery.enroll("staff", "E1", photos["obama_2"])


def test_consent_expiry(tmp_path, engine, photos):
    clock = ManualClock(now())
    gallery = Gallery.open(tmp_path / "data", engine=engine, clock=clock)
    gallery.create_collection("staff", purposes=["access", "payments"])
    soon = clock.now() + dt.timedelta(seconds=2)
    gallery.enroll("staff", "E1", photos["obama_1"], consent=ConsentSpec(("access",), expires_at=soon))
    assert gallery.identify("staff", photos["obama_3"], purpose="access").match  # mask cached until expiry
    clock.advance(2.1)
    res = gallery.identify("staff", photos["obama_3"], purpose="access")
    assert not res.match and res.searched_subjects == 0
    # Backdated consent that has already expired: enrolled, but never searchable.
    gallery.enroll("staff", "E2", photos["biden_1"], consent=ConsentSpec(
        ["access"], granted_at=clock.now() - dt.timedelta(days=30), expires_at=clock.now() - dt.timedelta(days=1)))
    assert not gallery.identify("staff", photos["biden_1"], purpose="access").match
    gallery.close()


# --- retention ------------------------------------------------------------------------------------


def test_purge_retention_and_no_consent_idempotent_and_locked(gallery, photos):
    gen = FaceLikeGenerator(128, seed=3)
    vecs = gen.samples(gen.centres(np.arange(3)), 1)
    mid = gallery.get_collection("staff").model_id
    batch = [("keep", vecs[0:1], ACCESS), ("gone", vecs[1:2], ACCESS), ("old", vecs[2:3], ACCESS)]
    gallery.import_templates("staff", batch, model_id=mid)
    gallery.withdraw_consent("staff", "gone")
    db = raw(gallery)
    with db:
        db.execute(
            "UPDATE subjects SET last_seen_at = ? WHERE external_id = 'old'",
            ((now() - dt.timedelta(days=4 * 365)).replace(tzinfo=None).isoformat(" "),),
        )
    dry = gallery.purge(dry_run=True)
    assert sorted((e.subject, e.reason) for e in dry.erased) == [("gone", "no_active_consent"), ("old", "retention")]
    assert gallery.count_subjects("staff") == 3
    rep = gallery.purge()
    assert sorted(e.subject for e in rep.erased) == ["gone", "old"]
    assert [s.external_id for s in gallery.list_subjects("staff")] == ["keep"]
    assert gallery.purge().erased == ()  # idempotent
    tomb = gallery.audit_list(action="subject.erase")
    assert {(e.subjects[0], e.details["reason"], e.actor) for e in tomb} == {
        ("gone", "no_active_consent", "purge"),
        ("old", "retention", "purge"),
    }
    # A purge already running elsewhere holds the lock.
    with gallery.store.write() as tx:
        assert tx.acquire_lock("purge", "other-host:1", now(), dt.timedelta(minutes=5))
    with pytest.raises(LockedError):
        gallery.purge()
    with gallery.store.write() as tx:
        tx.release_lock("purge", "other-host:1")
    assert gallery.purge().erased == ()


# --- erasure and template protection -------------------------------------------------------------


def test_erasure_leaves_only_the_tombstone_and_old_ciphertext_is_undecryptable(gallery, photos):
    gallery.enroll("staff", "E1", [photos["obama_1"], photos["obama_2"]], consent=ACCESS)
    gallery.enroll("staff", "E2", photos["biden_1"], consent=ACCESS)
    db = raw(gallery)
    sid, wrapped = db.execute("SELECT id, wrapped_key FROM subjects WHERE external_id='E1'").fetchone()
    stolen = db.execute("SELECT nonce, ciphertext, model_id FROM templates WHERE subject_id=?", (sid,)).fetchall()
    assert len(stolen) == 2
    assert gallery.identify("staff", photos["obama_3"], purpose="access").match

    gallery.delete_subject("staff", "E1", reason="gdpr-art17")
    assert not gallery.identify("staff", photos["obama_3"], purpose="access").match
    db = raw(gallery)
    for table, col in (("subjects", "id"), ("templates", "subject_id"), ("consents", "subject_id")):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE {col}=?", (sid,)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM subjects WHERE external_id='E1'").fetchone()[0] == 0
    tomb = gallery.audit_list(subject="E1", action="subject.erase")
    assert len(tomb) == 1 and tomb[0].details == {"reason": "gdpr-art17", "templates": 2, "consents": 1}
    with pytest.raises(SubjectNotFoundError):
        gallery.get_subject("staff", "E1")
    # Not a byte of the key or the ciphertexts is left in the database files (secure_delete + checkpoint).
    files = b"".join(p.read_bytes() for p in gallery.store.path.parent.glob("gallery.db*"))
    assert wrapped not in files
    for _nonce, ct, _m in stolen:
        assert ct not in files
    # Someone who copied the ciphertexts cannot decrypt them: the data key is gone, and no other key fits.
    cid = db.execute("SELECT id FROM collections WHERE name='staff'").fetchone()[0]
    for _sid, ext, w in db.execute("SELECT id, external_id, wrapped_key FROM subjects"):
        cipher = gallery.crypto.subject_key(w, cid, ext)
        for nonce, ct, mid in stolen:
            with pytest.raises(TemplateIntegrityError):
                cipher.decrypt(nonce, ct, mid)
    with pytest.raises(TemplateIntegrityError):
        SubjectCipher(os.urandom(32), cid, "E1").decrypt(stolen[0][0], stolen[0][1], stolen[0][2])


def test_templates_encrypted_at_rest_and_unlinkable_across_deployments(tmp_path, engine, photos):
    a = Gallery.open(tmp_path / "a", engine=engine)
    b = Gallery.open(tmp_path / "b", engine=engine)
    for g in (a, b):
        g.create_collection("c", purposes=["access"])
        g.enroll("c", "same-person", photos["obama_1"], consent=ACCESS)
    vec = engine.embed(photos["obama_1"]).vector.astype("<f4").tobytes()
    ca = raw(a).execute("SELECT ciphertext FROM templates").fetchone()[0]
    cb = raw(b).execute("SELECT ciphertext FROM templates").fetchone()[0]
    assert vec not in (tmp_path / "a" / "gallery.db").read_bytes()
    assert ca != cb and len(ca) == len(cb) == 128 * 4 + 16
    # Byte-level similarity of the two ciphertexts is chance level (no structure to link on).
    same_bytes = sum(x == y for x, y in zip(ca, cb)) / len(ca)
    assert same_bytes < 0.05
    assert a.crypto.master_key_id != b.crypto.master_key_id
    for g in (a, b):
        g.close()


def test_master_key_file_env_and_mismatch(tmp_path, engine, monkeypatch):
    d = tmp_path / "data"
    Gallery.open(d, engine=engine).close()
    key = d / "master.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (d / "gallery.db").stat().st_mode & 0o077 == 0
    Gallery.open(d, engine=engine).close()  # same key: fine
    monkeypatch.setenv("FACEGATE_MASTER_KEY", "A" * 43)
    with pytest.raises(MasterKeyMismatchError):
        Gallery.open(d, engine=engine)
    monkeypatch.delenv("FACEGATE_MASTER_KEY")
    saved = key.read_text()
    key.unlink()
    with pytest.raises(MasterKeyMissingError):
        Gallery.open(d, engine=engine)
    monkeypatch.setenv("FACEGATE_MASTER_KEY", saved.strip())  # the env var is the alternative to the file
    Gallery.open(d, engine=engine).close()
    assert not key.exists()


# --- audit ----------------------------------------------------------------------------------------


def test_audit_chain_detects_edited_deleted_and_truncated_rows(gallery, photos):
    gallery.enroll("staff", "E1", photos["obama_1"], consent=ACCESS)
    gallery.identify("staff", photos["biden_1"], purpose="access")
    gallery.identify("staff", photos["obama_3"], purpose="access")
    gallery.withdraw_consent("staff", "E1")
    rep = gallery.audit_verify()
    assert rep.ok and rep.events == rep.head_seq == 5

    db = raw(gallery)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"), db:  # the application cannot edit it
        db.execute("UPDATE audit_events SET decision='match' WHERE seq=3")

    def tamper(*sql: str) -> None:
        # An attacker with file access drops the guard first.
        with db:
            db.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
            db.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
            for s in sql:
                db.execute(s)

    tamper("UPDATE audit_events SET decision='no_match', subjects='[]' WHERE seq=4")  # hide a match
    rep = gallery.audit_verify()
    assert not rep.ok and rep.first_bad_seq == 4 and "modified" in rep.problem


def test_audit_detects_deleted_middle_row_and_truncated_tail(tmp_path, engine, photos):
    g = Gallery.open(tmp_path / "d", engine=engine)
    g.create_collection("c", purposes=["access"])
    g.enroll("c", "E1", photos["obama_1"], consent=ACCESS)
    for _ in range(3):
        g.identify("c", photos["obama_3"], purpose="access")
    anchor = g.audit_verify().head_mac
    db = sqlite3.connect(g.store.path)
    with db:
        db.execute("DROP TRIGGER audit_events_no_delete")
        db.execute("DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)")
    rep = g.audit_verify()
    assert not rep.ok and "removed" in rep.problem
    with db:  # cover the tracks: also rewind the head
        seq, mac = db.execute("SELECT seq, mac FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
        db.execute("UPDATE audit_head SET seq=?, mac=?", (seq, mac))
    rep = g.audit_verify()  # the data directory's witness remembers how far the chain reached …
    assert not rep.ok and "head rewritten" in rep.problem and rep.witnessed_seq == seq + 1
    rep = g.audit_verify(expect_head=anchor)  # … as does an anchor recorded earlier
    assert not rep.ok
    with db:
        db.execute("DELETE FROM audit_events WHERE seq = 2")
    rep = g.audit_verify()
    assert not rep.ok and rep.first_bad_seq == 2
    g.close()


# --- model pinning --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arcface():
    from facegate import FaceEngine

    with pytest.warns(Warning):
        return FaceEngine("arcface-mbf", allow_noncommercial=True)


def test_model_pinning_refuses_another_model(tmp_path, engine, arcface, photos):
    g = Gallery.open(tmp_path / "d", engine=engine)
    col = g.create_collection("sface-only", purposes=["access"])
    assert col.model_id == engine.model_id and col.model_sha256 == engine.spec.sha256
    g.enroll("sface-only", "E1", photos["obama_1"], consent=ACCESS)
    g.close()

    other = Gallery.open(tmp_path / "d", engine=arcface)
    with pytest.raises(ModelMismatchError):
        other.enroll("sface-only", "E2", photos["biden_1"], consent=ACCESS)
    with pytest.raises(ModelMismatchError):
        other.identify("sface-only", photos["obama_3"], purpose="access")
    with pytest.raises(ModelMismatchError):
        other.import_templates("sface-only", [("E3", np.ones((1, 512), np.float32), ACCESS)], model_id=arcface.model_id)
    with pytest.raises(ModelMismatchError):
        other.identify_vector("sface-only", np.ones(512, np.float32), purpose="access", model_id=arcface.model_id)
    # A collection pinned to ArcFace works with ArcFace and refuses SFace.
    other.create_collection("arc", purposes=["access"], model="arcface-mbf")
    other.enroll("arc", "E1", photos["obama_1"], consent=ACCESS)
    assert other.identify("arc", photos["obama_3"], purpose="access").candidates[0].subject == "E1"
    other.close()
    g = Gallery.open(tmp_path / "d", engine=engine)
    with pytest.raises(ModelMismatchError):
        g.identify("arc", photos["obama_3"], purpose="access")
    assert g.count_subjects("sface-only") == 1
    g.close()


# --- collections, listing, store ------------------------------------------------------------------


def test_collections_subject_listing_and_collection_delete(gallery, photos):
    with pytest.raises(CollectionExistsError):
        gallery.create_collection("staff", purposes=["access"])
    with pytest.raises(InvalidArgumentError):
        gallery.create_collection("bad name!", purposes=["access"])
    with pytest.raises(InvalidArgumentError):
        gallery.create_collection("x", purposes=[])
    gen = FaceLikeGenerator(128, seed=5)
    vecs = gen.samples(gen.centres(np.arange(30)), 2)
    mid = gallery.get_collection("staff").model_id
    n = gallery.import_templates(
        "staff",
        [(f"S{i:03d}", vecs[2 * i : 2 * i + 2], ConsentSpec(("access",) if i % 3 else ["payments"])) for i in range(30)],
        model_id=mid,
    )
    assert n == 60
    col = gallery.get_collection("staff")
    assert (col.subjects, col.templates) == (30, 60) and col.expected_fpir == pytest.approx(30 * col.fmr)
    page1 = gallery.list_subjects("staff", limit=10)
    page2 = gallery.list_subjects("staff", limit=10, after=page1[-1].external_id)
    assert [s.external_id for s in page1 + page2] == [f"S{i:03d}" for i in range(20)]
    assert gallery.count_subjects("staff", purpose="payments") == 10
    assert all("payments" in s.active_purposes() for s in gallery.list_subjects("staff", purpose="payments"))
    hit = gallery.identify_vector("staff", vecs[4], purpose="access", model_id=mid)
    assert hit.candidates[0].subject == "S002"
    assert gallery.delete_collection("staff") == 30
    assert gallery.list_collections() == []
    db = raw(gallery)
    assert all(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 0 for t in ("subjects", "templates", "consents"))
    assert len(gallery.audit_list(action="subject.erase", limit=100)) == 30
    assert gallery.audit_verify().ok


def test_store_pragmas_and_migrations_match_models(gallery):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from facegate.gallery.schema import Base

    with gallery.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_store_written_by_a_newer_facegate_is_refused(tmp_path, engine):
    d = tmp_path / "d"
    Gallery.open(d, engine=engine).close()
    db = sqlite3.connect(d / "gallery.db")
    with db:
        db.execute("UPDATE alembic_version SET version_num='9999'")
    with pytest.raises(SchemaError):
        Gallery.open(d, engine=engine)


def test_crypto_binds_ciphertext_to_its_subject():
    c = Crypto(os.urandom(32))
    key, wrapped = c.new_subject_key(1, "A")
    a = SubjectCipher(key, 1, "A")
    nonce, ct = a.encrypt(np.ones(4, np.float32), "m")
    assert np.array_equal(a.decrypt(nonce, ct, "m"), np.ones(4, np.float32))
    with pytest.raises(TemplateIntegrityError):  # moved to another subject's row
        SubjectCipher(key, 1, "B").decrypt(nonce, ct, "m")
    with pytest.raises(TemplateIntegrityError):  # relabelled as another model
        a.decrypt(nonce, ct, "other-model")
    with pytest.raises(TemplateIntegrityError):  # the wrapped key of another subject
        c.subject_key(wrapped, 1, "B")
