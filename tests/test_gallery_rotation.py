"""Master-key rotation: erasure completes in old backups, live subjects are untouched, a
process killed at any point leaves a store that opens, other processes follow the new key."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cli_support import Ran, invoke
from facegate.gallery import (
    ConsentSpec,
    Gallery,
    LockedError,
    MasterKeyError,
    MasterKeyMismatchError,
    TemplateIntegrityError,
)
from facegate.gallery import master_key as mk
from facegate.gallery.crypto import Crypto, _b64decode, encode_key, generate_key, key_id, subject_context
from facegate.gallery.synth import FaceLikeGenerator

MODEL = "sface-2021dec-int8bq"
ACCESS = ConsentSpec(("access",), evidence_ref="form-1")


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)


def _vectors(n: int, per: int = 1, seed: int = 0) -> np.ndarray:
    gen = FaceLikeGenerator(128, seed=seed)
    return gen.samples(gen.centres(np.arange(n)), per)


def _import(g: Gallery, n: int, prefix: str = "s", per: int = 1, seed: int = 0) -> np.ndarray:
    V = _vectors(n, per, seed)
    g.import_templates("c", [(f"{prefix}{i}", V[per * i: per * i + per], ACCESS) for i in range(n)], model_id=MODEL)
    return V


def _backup(src: Path, dst: Path) -> None:
    """A consistent copy of gallery.db (SQLite online backup) and the key file, as a careless
    backup job would take them."""
    dst.mkdir(parents=True)
    s, d = sqlite3.connect(src / "gallery.db"), sqlite3.connect(dst / "gallery.db")
    s.backup(d)
    s.close()
    d.close()
    shutil.copy2(src / "master.key", dst / "master.key")


def _key(path: Path) -> bytes:
    return _b64decode(path.read_text())


def test_rotation_makes_a_pre_erasure_backup_unreadable_and_keeps_live_subjects(tmp_path, engine, photos):
    d = tmp_path / "d"
    g = Gallery.open(d, engine=engine)
    g.create_collection("c", purposes=["access"])
    g.enroll("c", "E1", [photos["obama_1"], photos["obama_2"]], consent=ACCESS)
    g.enroll("c", "E2", photos["biden_1"], consent=ACCESS)
    V = _import(g, 200)
    before_id = g.crypto.master_key_id
    v1 = g.verify("c", "E1", photos["obama_3"], purpose="access")
    i1 = g.identify("c", photos["obama_3"], purpose="access")
    iv = g.identify_vector("c", V[17], purpose="access", model_id=MODEL)

    _backup(d, tmp_path / "backup")
    old_key = _key(d / "master.key")
    g.delete_subject("c", "E2", reason="gdpr-art17")
    rot = g.rotate_master_key(actor="cli:ops")
    assert rot.old_key_id == before_id != rot.new_key_id == g.crypto.master_key_id
    assert rot.subjects == 201 and rot.keyring_entries == 1 and rot.old_key_destroyed and rot.key_file == str(d / "master.key")

    # The old key is gone from the data directory: only the new key file (and the lock file).
    new_key = _key(d / "master.key")
    assert key_id(new_key) == rot.new_key_id and new_key != old_key
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(("master", ".master"))) == [".master.key.lock", "master.key"]
    assert (d / "master.key").stat().st_mode & 0o777 == 0o600
    for p in d.iterdir():
        assert encode_key(old_key).encode() not in p.read_bytes() and old_key not in p.read_bytes()

    # The backup's wrapped key of the erased subject: unwrappable with the old key (what the
    # backup alone would have allowed), not with the current one.
    b = sqlite3.connect(tmp_path / "backup" / "gallery.db")
    cid, wrapped = b.execute("SELECT collection_id, wrapped_key FROM subjects WHERE external_id = 'E2'").fetchone()
    nonce, ct = b.execute("SELECT t.nonce, t.ciphertext FROM templates t JOIN subjects s ON s.id = t.subject_id "
                          "WHERE s.external_id = 'E2'").fetchone()
    b.close()
    ctx = subject_context(cid, "E2")
    assert len(Crypto(old_key).subject_key(wrapped, cid, "E2").decrypt(nonce, ct, MODEL)) == 128  # the test is meaningful
    with pytest.raises(TemplateIntegrityError):
        Crypto(new_key).unwrap(wrapped, ctx)
    # Restoring that backup next to the current key file is refused with a clear error.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy2(tmp_path / "backup" / "gallery.db", restored / "gallery.db")
    shutil.copy2(d / "master.key", restored / "master.key")
    with pytest.raises(MasterKeyMismatchError, match="is not this store's"):
        Gallery.open(restored, engine=engine)

    # Live subjects: same scores, in this process and in a freshly opened one.
    g2 = Gallery.open(d, engine=engine)
    for h in (g, g2):
        assert h.verify("c", "E1", photos["obama_3"], purpose="access").score == v1.score
        assert h.identify("c", photos["obama_3"], purpose="access").candidates == i1.candidates
        assert h.identify_vector("c", V[17], purpose="access", model_id=MODEL).candidates == iv.candidates
        assert h.index_stats("c")["templates"] == 2 + 200
    db = sqlite3.connect(d / "gallery.db")
    assert db.execute("SELECT DISTINCT master_key_id FROM subjects").fetchall() == [(rot.new_key_id,)]
    assert db.execute("SELECT DISTINCT master_key_id FROM keyring").fetchall() == [(rot.new_key_id,)]
    db.close()

    # The audit event: fingerprints and counts, no key material; the chain still verifies.
    ev = g.audit_list(action="master_key.rotate")[0]
    assert ev.actor == "cli:ops" and ev.decision == "rotated"
    assert ev.details == {"old_key_id": before_id, "new_key_id": rot.new_key_id, "subjects": 201, "keyring_entries": 1,
                          "key_source": "data_dir"}
    dump = json.dumps([e.to_dict() for e in g.audit_list(limit=1000)])
    for k in (old_key, new_key):
        assert encode_key(k) not in dump and k.hex() not in dump
    assert g.audit_verify().ok
    # Opening with the retired key says so.
    with pytest.raises(MasterKeyMismatchError, match="previous key"):
        Gallery.open(d, engine=engine, master_key=old_key)
    g.close()
    g2.close()


def test_second_instance_follows_the_rotation(tmp_path):
    d = tmp_path / "d"
    a = Gallery.open(d)
    a.create_collection("c", purposes=["access"])
    V = _import(a, 300)
    b = Gallery.open(d)  # e.g. `facegate serve`: index loaded, old key in memory
    cold = Gallery.open(d)  # opened before the rotation, index loaded after it
    assert b.identify_vector("c", V[5], purpose="access", model_id=MODEL).candidates[0].subject == "s5"
    old = b.crypto.master_key_id

    rot = a.rotate_master_key()
    W = _vectors(2, seed=9)
    a.import_templates("c", [("after-a", W[:1], ACCESS)], model_id=MODEL)  # wrapped under the new key
    hit = b.identify_vector("c", W[0], purpose="access", model_id=MODEL).candidates[0]  # b must decrypt it
    assert hit.subject == "after-a" and hit.score > 0.999
    assert b.crypto.master_key_id == rot.new_key_id != old
    b.import_templates("c", [("after-b", W[1:], ACCESS)], model_id=MODEL)  # b writes under the new key too
    assert a.identify_vector("c", W[1], purpose="access", model_id=MODEL).candidates[0].subject == "after-b"
    assert cold.index_stats("c")["templates"] == 302 and cold.crypto.master_key_id == rot.new_key_id
    # A path that unwraps without looking at the feed first (a keyring secret) follows it too.
    c2 = Gallery.open(d)
    a.rotate_master_key()
    with c2.store.read() as tx:
        entry = tx.get_keyring("audit-mac")
    c2.crypto.unwrap(entry.wrapped, b"keyring|audit-mac")
    assert c2.crypto.master_key_id == a.crypto.master_key_id
    for g in (a, b, cold, c2):
        assert g.audit_verify().ok
        g.close()


def test_enrolment_from_another_instance_during_rotations_loses_nothing(tmp_path):
    d = tmp_path / "d"
    a = Gallery.open(d)
    a.create_collection("c", purposes=["access"])
    _import(a, 2000)
    b = Gallery.open(d)
    V = _vectors(120, seed=5)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(120):
                b.import_templates("c", [(f"w{i}", V[i: i + 1], ACCESS)], model_id=MODEL)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    rotations = 0
    while t.is_alive() or rotations < 3:
        a.rotate_master_key()
        rotations += 1
    t.join()
    assert not errors, errors
    assert rotations >= 3
    db = sqlite3.connect(d / "gallery.db")
    assert db.execute("SELECT DISTINCT master_key_id FROM subjects").fetchall() == [(a.crypto.master_key_id,)]
    db.close()
    fresh = Gallery.open(d)
    assert fresh.index_stats("c")["templates"] == 2120
    assert fresh.identify_vector("c", V[77], purpose="access", model_id=MODEL).candidates[0].subject == "w77"
    for g in (a, b, fresh):
        g.close()


def test_rotation_refuses_an_unreadable_subject_key_and_changes_nothing(tmp_path):
    d = tmp_path / "d"
    g = Gallery.open(d)
    g.create_collection("c", purposes=["access"])
    _import(g, 20)
    before = (d / "master.key").read_bytes()
    db = sqlite3.connect(d / "gallery.db")
    db.execute("UPDATE subjects SET wrapped_key = randomblob(60) WHERE external_id = 's7'")
    db.commit()
    with pytest.raises(TemplateIntegrityError, match="'s7'"):
        g.rotate_master_key()
    assert (d / "master.key").read_bytes() == before and not (d / "master.key.new").exists()
    stored_id = db.execute("SELECT value FROM meta WHERE key = 'master_key_id'").fetchone()[0]
    assert stored_id == g.crypto.master_key_id == key_id(_key(d / "master.key"))
    assert db.execute("SELECT count(*) FROM audit_events WHERE action = 'master_key.rotate'").fetchone()[0] == 0
    db.close()
    g.delete_subject("c", "s7")
    g.rotate_master_key()
    with mk.key_files_lock(d, blocking=True), pytest.raises(LockedError):
        g.rotate_master_key()  # the lock is held (here by this test): a second rotation refuses
    g.close()


def test_a_key_file_symlinked_to_another_volume_stays_there(tmp_path):
    d, vault = tmp_path / "d", tmp_path / "vault"
    g = Gallery.open(d)
    g.create_collection("c", purposes=["access"])
    V = _import(g, 10)
    g.close()
    vault.mkdir(mode=0o700)
    shutil.move(str(d / "master.key"), vault / "facegate.key")
    (d / "master.key").symlink_to(vault / "facegate.key")
    g = Gallery.open(d)
    old = _key(vault / "facegate.key")
    rot = g.rotate_master_key()
    assert (d / "master.key").is_symlink() and key_id(_key(vault / "facegate.key")) == rot.new_key_id
    assert sorted(p.name for p in vault.iterdir()) == ["facegate.key"] and _key(vault / "facegate.key") != old
    assert Gallery.open(d).identify_vector("c", V[2], purpose="access", model_id=MODEL).candidates[0].subject == "s2"
    g.close()


def test_key_from_the_environment_needs_an_explicit_new_key(tmp_path, monkeypatch):
    d = tmp_path / "d"
    k1 = encode_key(generate_key())
    monkeypatch.setenv("FACEGATE_MASTER_KEY", k1)
    g = Gallery.open(d)
    g.create_collection("c", purposes=["access"])
    V = _import(g, 30)
    other = Gallery.open(d)  # a service started with the old key in its environment
    other.warm("c")
    with pytest.raises(MasterKeyError, match="--new-key-env"):
        g.rotate_master_key()
    with pytest.raises(MasterKeyError, match="--new-key-env"):
        g.purge(rotate_master_key=True)
    k2 = encode_key(generate_key())
    rot = g.rotate_master_key(new_key=k2)
    assert rot.key_file is None and not rot.old_key_destroyed and not (d / "master.key").exists()
    assert g.identify_vector("c", V[3], purpose="access", model_id=MODEL).candidates[0].subject == "s3"
    g.import_templates("c", [("late", _vectors(1, seed=3), ACCESS)], model_id=MODEL)
    with pytest.raises(MasterKeyMismatchError, match="restart it with the new key"):
        other.identify_vector("c", V[3], purpose="access", model_id=MODEL)
    with pytest.raises(MasterKeyMismatchError, match="previous key"):
        Gallery.open(d)
    monkeypatch.setenv("FACEGATE_MASTER_KEY", k2)
    h = Gallery.open(d)
    assert h.index_stats("c")["templates"] == 31
    for x in (g, other, h):
        x.close()


# --- SIGKILL at every step and at random moments -----------------------------------------------

KILL_ROTATE = r"""
import random, sys, time
from facegate.gallery import Gallery
from facegate.gallery import master_key as mk
data, target = sys.argv[1], sys.argv[2]
g = Gallery.open(data)
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 0)

def step(name):
    if name == target:
        print("at", name, flush=True)
        time.sleep(3600)

def jitter(name):  # random mode: stretch the steps after the re-wrap so kills land in all of them
    if name != "rewrapped_batch":
        time.sleep(rng.uniform(0.0, 0.12))

print("ready", flush=True)
if target == "random":
    while True:
        mk.rotate(g, actor="kill-test", step=jitter)
        print("rotated", flush=True)
else:
    mk.rotate(g, actor="kill-test", step=step)
    print("done", flush=True)
"""


def _spawn(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", KILL_ROTATE, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _check_after_kill(d: Path, n_subjects: int, V: np.ndarray) -> None:
    db = sqlite3.connect(d / "gallery.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    current = db.execute("SELECT value FROM meta WHERE key = 'master_key_id'").fetchone()[0]
    assert db.execute("SELECT DISTINCT master_key_id FROM subjects").fetchall() == [(current,)]
    db.close()
    # Exactly one of the two key files holds the store's key.
    files = [p for p in (d / "master.key", d / "master.key.new") if p.exists()]
    matching = [p for p in files if mk._read(p) is not None and key_id(mk._read(p) or b"") == current]
    assert len(matching) == 1, (files, current)
    g = Gallery.open(d)  # picks it; finishes an interrupted rotation's file moves
    assert g.crypto.master_key_id == current
    assert g.index_stats("c")["templates"] == n_subjects  # every subject key unwrapped, every template decrypted
    for i in (0, n_subjects // 2, n_subjects - 1):
        top = g.identify_vector("c", V[i], purpose="access", model_id=MODEL).candidates[0]
        assert top.subject == f"s{i}" and top.score > 0.999
    assert g.audit_verify().ok
    assert not (d / "master.key.new").exists() or key_id(mk._read(d / "master.key.new") or b"") != current
    rot = g.rotate_master_key()  # and the next rotation starts from a clean state
    assert not (d / "master.key.new").exists() and not list(d.glob(".master.key.new.*"))
    assert key_id(_key(d / "master.key")) == rot.new_key_id
    g.close()


STEPS = ["new_key_written", "rewrapped_batch", "before_commit", "committed", "old_key_overwritten", "renamed"]


def test_sigkill_at_every_step_of_a_rotation_leaves_a_store_that_opens(tmp_path):
    d = tmp_path / "d"
    g = Gallery.open(d)
    g.create_collection("c", purposes=["access"])
    n = 6000  # two re-wrap batches
    V = _import(g, n)
    g.close()
    for target in STEPS:
        before = key_id(_key(d / "master.key"))
        p = _spawn(d, target)
        assert p.stdout is not None
        assert p.stdout.readline().startswith("ready"), p.stderr.read() if p.stderr else ""
        line = p.stdout.readline()
        assert line.strip() == f"at {target}", (line, p.stderr.read() if p.stderr else "")
        p.kill()
        p.wait()
        db = sqlite3.connect(d / "gallery.db")
        current = db.execute("SELECT value FROM meta WHERE key = 'master_key_id'").fetchone()[0]
        db.close()
        committed = STEPS.index(target) >= STEPS.index("committed")
        assert (current != before) == committed, target
        if target in ("committed", "old_key_overwritten"):  # the new key is only in master.key.new
            assert key_id(_key(d / "master.key.new")) == current
        _check_after_kill(d, n, V)


def test_sigkill_at_random_moments_of_repeated_rotations(tmp_path):
    d = tmp_path / "d"
    g = Gallery.open(d)
    g.create_collection("c", purposes=["access"])
    n = 10_000
    V = _import(g, n)
    g.close()
    rng = random.Random(11)
    for round_ in range(5):
        p = _spawn(d, "random", round_)
        assert p.stdout is not None and p.stdout.readline().startswith("ready")
        time.sleep(rng.uniform(0.0, 2.0))
        p.kill()
        p.wait()
        _check_after_kill(d, n, V)


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_purge_with_rotation_and_master_key_commands(tmp_path):
    d = tmp_path / "d"
    g = Gallery.open(d)
    g.create_collection("c", purposes=["access"])
    _import(g, 10)
    g.withdraw_consent("c", "s4")
    first = g.crypto.master_key_id
    g.close()

    def fg(*args: object, **env: str) -> Ran:
        return invoke(*args, env={"FACEGATE_DATA_DIR": str(d), "COLUMNS": "200", **env})

    r = fg("purge", "--rotate-master-key", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [e["subject"] for e in out["erased"]] == ["s4"]
    rot = out["master_key_rotation"]
    assert rot["old_key_id"] == first and rot["subjects"] == 9 and rot["old_key_destroyed"] is True
    r = fg("master-key", "status", "--json")
    st = json.loads(r.stdout)
    assert r.returncode == 0 and st["key_id"] == rot["new_key_id"] and st["previous_key_id"] == first
    assert st["subject_keys_by_master_key"] == {rot["new_key_id"]: 9} and st["interrupted_rotation_files"] == []
    key_text = (d / "master.key").read_text().strip()
    assert key_text not in r.stdout

    # Key in the environment: refused without --new-key-env, with a clear message.
    r = fg("master-key", "rotate", FACEGATE_MASTER_KEY=key_text)
    assert r.returncode == 5 and "--new-key-env" in r.stderr
    new = fg("master-key", "generate").stdout.strip()
    assert len(_b64decode(new)) == 32
    r = fg("master-key", "rotate", "--new-key-env", "NEW_FG_KEY", "--json", FACEGATE_MASTER_KEY=key_text, NEW_FG_KEY=new)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["new_key_id"] == key_id(_b64decode(new)) and json.loads(r.stdout)["key_file"] is None
    r = fg("subject", "list", "c", "--json", FACEGATE_MASTER_KEY=new)
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 9
    r = fg("subject", "list", "c")  # master.key still holds the previous key
    assert r.returncode == 5 and "previous key" in r.stderr


# --- PostgreSQL backend: inherits the rotation through Store/StoreTx ---------------------------


def test_rotation_on_postgresql_rewraps_subject_keys_and_vector_seeds(tmp_path):
    import pg_support
    url = pg_support.fresh_database()
    try:
        a = Gallery.open(tmp_path / "a", store=url)
        b = Gallery.open(tmp_path / "a", store=url)  # same host, same key file
        a.create_collection("c", purposes=["access"])
        V = _import(a, 40)
        before = a.identify_vector("c", V[7], purpose="access", model_id=MODEL).candidates
        rot = a.rotate_master_key()
        assert rot.subjects == 40 and rot.keyring_entries == 2  # audit-mac + the collection's vecrot seed
        with a.store.read() as tx:
            assert {e.master_key_id for e in tx.keyring_entries()} == {rot.new_key_id}
        assert a.identify_vector("c", V[7], purpose="access", model_id=MODEL).candidates == before
        b.import_templates("c", [("late", _vectors(1, seed=4), ACCESS)], model_id=MODEL)  # b follows the key file
        assert b.crypto.master_key_id == rot.new_key_id
        b.store.rotations._cache.clear()  # a cold rotation cache: the seed is unwrapped under the new key
        assert b.identify_vector("c", V[7], purpose="access", model_id=MODEL).candidates == before
        assert a.audit_verify().ok
        a.close()
        b.close()
    finally:
        pg_support.drop_database(url)
