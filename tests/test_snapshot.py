"""Index snapshots through the real Gallery, SQLite store and crypto: a snapshot load answers as a
full load does, every erasure path leaves the erased vectors in no file of the data directory
(raw bytes, and the snapshot decrypted with its own key), erasures racing a snapshot write,
crashes, unusable snapshots and other processes' writes."""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from facegate.gallery import ConsentSpec, Gallery, IndexConfig
from facegate.gallery import snapshot as snap_mod
from facegate.gallery.snapshot import NONCE, TAG, SnapshotFiles, SnapshotMeta, _aad, _Layout, _read_header
from facegate.gallery.synth import FaceLikeGenerator

MODEL = "sface-2021dec-int8bq"
DIM = 128
N_SUBJECTS = 2500  # 5000 templates: five snapshot blocks, an approximate index above exact_max_rows
CFG = IndexConfig(exact_max_rows=2000, small_subset_rows=100, background_build=False)
FULL = IndexConfig(exact_max_rows=2000, small_subset_rows=100, background_build=False, snapshot=False)


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)


def vectors(n: int = N_SUBJECTS, seed: int = 3) -> np.ndarray:
    gen = FaceLikeGenerator(DIM, seed=seed)
    return gen.samples(gen.centres(np.arange(n)), 2, seed=1)


def probes(n: int = 60) -> np.ndarray:
    gen = FaceLikeGenerator(DIM, seed=3)
    return gen.samples(gen.centres(np.arange(n)), 1, seed=9)


def filled(data: Path, V: np.ndarray, *, retention_days: int | None = None, config: IndexConfig = CFG) -> Gallery:
    """A gallery of N_SUBJECTS subjects (two templates each) whose approximate index is built
    and snapshotted."""
    g = Gallery.open(data, index_config=config)
    kw = {} if retention_days is None else {"retention_days": retention_days}
    g.create_collection("c", purposes=["p", "q"], **kw)
    n = len(V) // 2
    g.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p", "q"))) for i in range(n)], model_id=MODEL)
    g.warm("c", wait=True)
    assert g.index_stats("c")["snapshot_seq"] > 0
    return g


def answers(g: Gallery, Q: np.ndarray, purpose: str = "p") -> list[list[tuple[str, float]]]:
    out = []
    for q in Q:
        res = g.identify_vector("c", q, purpose=purpose, model_id=MODEL, top_k=3)
        out.append([(c.subject, round(c.score, 5)) for c in res.candidates])
    return out


def assert_same_index(a: Gallery, b: Gallery) -> None:
    """The two galleries' indexes hold the same templates and consents, and an exhaustive
    probe of their approximate indexes (every list) finds the same best match where the probe's
    subject is allowed (otherwise, as at lower ranks, the best are impostors at cosine ≈ 0.3,
    where two independently trained codebooks may pick different candidates to re-score)."""
    ia, ib = a.index.get(1, DIM, MODEL), b.index.get(1, DIM, MODEL)
    now = time.time()
    for purpose in ("p", "q", None):
        assert np.array_equal(ia.allowed_subject_ids(purpose, now), ib.allowed_subject_ids(purpose, now))
    for sid in ia.allowed_subject_ids(None, now).tolist():
        va, vb = ia.subject_vectors(sid), ib.subject_vectors(sid)
        assert np.array_equal(va[np.lexsort(va.T)], vb[np.lexsort(vb.T)])
    assert ia.stats()["templates"] == ib.stats()["templates"]
    matched = 0
    for q in probes():
        ha, _ = ia.search(q, 1, "p", now, nprobe=1 << 20)
        hb, _ = ib.search(q, 1, "p", now, nprobe=1 << 20)
        if max(ha[0].score, hb[0].score) < 0.5:
            continue
        matched += 1
        assert [(h.external_id, round(h.score, 5)) for h in ha] == [(h.external_id, round(h.score, 5)) for h in hb]
    assert matched >= 50


def assert_full_load_says(data: Path, caplog: pytest.LogCaptureFixture, why: str) -> None:
    """Opening ``data`` loads from the store with a log line containing ``why``, and answers as
    a gallery that keeps no snapshot."""
    with caplog.at_level(logging.WARNING, logger="facegate.gallery.index"):
        a = Gallery.open(data, index_config=CFG)
        assert a.index_stats("c")["loaded_from"] == "store"
    assert why in caplog.text
    b = Gallery.open(data, index_config=FULL)
    assert_same_index(a, b)
    a.close()
    b.close()


def assert_snapshot_load_without(data: Path, subject: str, vec: np.ndarray) -> None:
    """Opening ``data`` loads from the snapshot, answers as a gallery that keeps none, and
    does not find ``subject`` (erased) with ``vec``."""
    g = Gallery.open(data, index_config=CFG)
    full = Gallery.open(data, index_config=FULL)
    assert g.index_stats("c")["loaded_from"] == "snapshot"
    assert_same_index(g, full)
    assert all(c.subject != subject for c in g.identify_vector("c", vec, purpose="p", model_id=MODEL).candidates)
    g.close()
    full.close()


def snap_path(data: Path, cid: int = 1) -> Path:
    return data / "index-snapshots" / f"collection-{cid}.snap"


def decrypt_all(g: Gallery, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every slot of a snapshot file decrypted with its own key, blanked slots included:
    (template ids, subject ids as stored, vectors)."""
    with open(path, "rb") as f:
        header, digest = _read_header(f)
        meta = SnapshotMeta(**header["meta"])
        key = g.crypto.unwrap(base64.b64decode(header["key"]), b"index-snapshot|%d" % meta.collection_id)
        lay = _Layout(int(header["n"]), meta.dim, meta.code_size, int(header["blob_len"]), meta.lists_per_template)
        f.seek(lay.ids_at)
        ids = np.fromfile(f, "<i8", 2 * lay.n)
        tids, sids = ids[: lay.n], ids[lay.n :]
        X = np.empty((lay.n, meta.dim), np.float32)
        for k in range(lay.n_blocks):
            at, first, count = lay.block(k)
            f.seek(at)
            raw = f.read(NONCE + count * lay.slot_bytes + TAG)
            plain = AESGCM(key).decrypt(raw[:NONCE], raw[NONCE:], _aad(digest, k, tids[first : first + count],
                                                                      sids[first : first + count]))
            X[first : first + count] = lay.split(plain, count)[2]
    return tids, sids, X


def files_holding(data: Path, vec: np.ndarray) -> list[str]:
    needle = np.asarray(vec, "<f4").tobytes()
    return [str(p) for p in data.rglob("*") if p.is_file() and needle in p.read_bytes()]


def template_ids(g: Gallery, subject: str) -> list[int]:
    return [t.id for t in g.get_subject("c", subject).templates]


def test_snapshot_load_answers_as_a_full_load(tmp_path):
    V = vectors()
    g = filled(tmp_path / "d", V)
    g.close()
    a = Gallery.open(tmp_path / "d", index_config=CFG)
    b = Gallery.open(tmp_path / "d", index_config=FULL)
    Q = probes()
    assert answers(a, Q) == answers(b, Q)
    sa, sb = a.index_stats("c"), b.index_stats("c")
    assert (sa["loaded_from"], sb["loaded_from"]) == ("snapshot", "store")
    assert sa["mode"] == "ivf-pq4fs" and (sa["nlist"], sa["nprobe"]) == (sb["nlist"], sb["nprobe"])
    assert sa["templates"] == sb["templates"] == 2 * N_SUBJECTS
    a.close()
    b.close()


def test_a_snapshot_keeps_the_tuned_number_of_candidates_re_scored(tmp_path):
    tuned = dataclasses.replace(CFG, rescore=64, rescore_max=64)  # not the default: must come from the file
    filled(tmp_path / "d", vectors(), config=tuned).close()
    g = Gallery.open(tmp_path / "d", index_config=CFG)
    s = g.index_stats("c")
    assert (s["loaded_from"], s["rescore"]) == ("snapshot", 64)
    g.close()


def erase_subject(g: Gallery, data: Path) -> None:
    g.delete_subject("c", "s7")


def purge_subject(g: Gallery, data: Path) -> None:
    g.withdraw_consent("c", "s7")  # no active consent left: the purge erases it
    assert [i.subject for i in g.purge().erased] == ["s7"]


def delete_collection(g: Gallery, data: Path) -> None:
    g.delete_collection("c")


@pytest.mark.parametrize("erasure", [erase_subject, purge_subject, delete_collection])
def test_erasure_leaves_the_vectors_in_no_file(tmp_path, erasure):
    data = tmp_path / "d"
    V = vectors()
    g = filled(data, V)
    erased = V[14:16]  # s7's two templates
    tids = template_ids(g, "s7")
    t_before, _s, X_before = decrypt_all(g, snap_path(data))
    assert np.isin(tids, t_before).all() and any(np.array_equal(x, erased[0]) for x in X_before)  # the control

    erasure(g, data)

    for vec in erased:
        assert files_holding(data, vec) == []
    if snap_path(data).exists():
        t_after, s_after, X_after = decrypt_all(g, snap_path(data))
        assert not any(np.array_equal(x, v) for x in X_after for v in erased)
        blanked = np.isin(t_after, tids)
        assert (s_after[blanked] < 0).all() and not X_after[blanked].any()
    else:
        assert erasure is delete_collection
    assert not list((data / "index-snapshots").glob("*.partial"))
    g.close()
    if erasure is not delete_collection:
        h = Gallery.open(data, index_config=CFG)
        assert h.index_stats("c")["loaded_from"] == "snapshot"
        assert all(c.subject != "s7" for c in h.identify_vector("c", erased[0], purpose="q", model_id=MODEL).candidates)
        h.close()


def test_erasure_while_a_snapshot_is_written(tmp_path, monkeypatch):
    data = tmp_path / "d"
    V = vectors()
    g = filled(data, V)
    idx = g.index.get(1, DIM, MODEL)
    first_block_written, erased = threading.Event(), threading.Event()
    real = snap_mod.SnapshotWriter.write_block

    def paused(self, k, *a):
        real(self, k, *a)
        if k == 0:
            first_block_written.set()
            assert erased.wait(30)

    monkeypatch.setattr(snap_mod.SnapshotWriter, "write_block", paused)
    result: list[bool] = []
    writer = threading.Thread(target=lambda: result.append(idx.write_snapshot(g.index.snapshots, g.store)))
    writer.start()
    assert first_block_written.wait(30)
    victim = V[2 * 2000 : 2 * 2000 + 2]  # s2000: in a block not written yet
    other = Gallery.open(data, index_config=FULL)  # another instance erases
    other.delete_subject("c", "s2000")
    erased.set()
    writer.join(30)
    assert result == [False]  # the erasure destroyed the partial file: the write gave up
    for vec in victim:
        assert files_holding(data, vec) == []
    assert not list((data / "index-snapshots").glob("*.partial"))
    tids, _s, X = decrypt_all(g, snap_path(data))  # the previous snapshot, scrubbed
    assert not any(np.array_equal(x, victim[0]) for x in X)
    monkeypatch.setattr(snap_mod.SnapshotWriter, "write_block", real)
    assert idx.write_snapshot(g.index.snapshots, g.store)  # the next write completes
    g.close()
    other.close()
    assert_snapshot_load_without(data, "s2000", victim[0])


def test_changes_during_the_write_are_blanked_and_reread(tmp_path, monkeypatch):
    """A consent change and an enrolment land while the snapshot is written: the finished file
    blanks the changed subject (re-read on load) and the new one comes from the feed."""
    data = tmp_path / "d"
    V = vectors()
    g = filled(data, V)
    idx = g.index.get(1, DIM, MODEL)
    real = snap_mod.SnapshotWriter.write_block

    def with_writes(self, k, *a):
        if k == 1:
            writer2 = Gallery.open(data, index_config=FULL)
            writer2.withdraw_consent("c", "s2400", ["p"])
            writer2.import_templates("c", [("new", V[8:9] * 0.3 + V[100:101] * 0.7, ConsentSpec(("p",)))], model_id=MODEL)
            writer2.close()
            g.index.sync()
        real(self, k, *a)

    monkeypatch.setattr(snap_mod.SnapshotWriter, "write_block", with_writes)
    assert idx.write_snapshot(g.index.snapshots, g.store)
    _t, sids, _x = decrypt_all(g, snap_path(data))
    assert (sids < 0).sum() == 2  # s2400's two slots
    g.close()
    a = Gallery.open(data, index_config=CFG)
    b = Gallery.open(data, index_config=FULL)
    assert a.index_stats("c")["loaded_from"] == "snapshot"
    assert_same_index(a, b)
    assert all(c.subject != "s2400" for c in a.identify_vector("c", V[4800], purpose="p", model_id=MODEL).candidates)
    assert a.identify_vector("c", V[4800], purpose="q", model_id=MODEL).candidates[0].subject == "s2400"
    a.close()
    b.close()


CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from facegate.gallery import Gallery, IndexConfig
    from facegate.gallery import snapshot, store
    data, mode = sys.argv[1], sys.argv[2]
    cfg = IndexConfig(exact_max_rows=2000, small_subset_rows=100, background_build=False)
    g = Gallery.open(data, index_config=cfg)
    if mode == "erase":
        # killed after the erasure's commit, before the call returns (its checkpoint comes next)
        store.Store.checkpoint = lambda self: os.kill(os.getpid(), signal.SIGKILL)
        g.delete_subject("c", "s7")
    else:
        real = snapshot.SnapshotWriter.write_block
        def dying(self, k, *a):
            real(self, k, *a)
            if k == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        snapshot.SnapshotWriter.write_block = dying
        idx = g.index.get(1, 128, "sface-2021dec-int8bq")
        idx.write_snapshot(g.index.snapshots, g.store)
""")


def run_child(data: Path, mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("FACEGATE_MASTER_KEY", None)
    p = subprocess.run([sys.executable, "-c", CHILD, str(data), mode], env=env, capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]


def test_sigkill_between_erasure_commit_and_return(tmp_path):
    data = tmp_path / "d"
    V = vectors()
    filled(data, V).close()
    run_child(data, "erase")
    for vec in V[14:16]:
        assert files_holding(data, vec) == []
    g = Gallery.open(data, index_config=FULL)
    _t, _s, X = decrypt_all(g, snap_path(data))
    g.close()
    assert not any(np.array_equal(x, V[14]) for x in X)
    assert_snapshot_load_without(data, "s7", V[14])


def test_sigkill_while_writing_a_snapshot(tmp_path):
    data = tmp_path / "d"
    V = vectors()
    filled(data, V).close()
    run_child(data, "write")
    partial = list((data / "index-snapshots").glob("*.partial"))
    assert len(partial) == 1  # what the killed writer left
    leftover = partial[0].read_bytes()
    g = Gallery.open(data, index_config=CFG)
    full = Gallery.open(data, index_config=FULL)
    assert g.index_stats("c")["loaded_from"] == "snapshot"  # the previous, complete one
    assert not partial[0].exists()  # its writer is gone: the load destroyed it
    assert_same_index(g, full)
    partial[0].write_bytes(leftover)  # as if left again while this process runs
    g.delete_subject("c", "s1")  # an erasure destroys it too, whose slots it cannot scrub
    assert not partial[0].exists()
    for vec in V[2:4]:
        assert files_holding(data, vec) == []
    g.close()
    full.close()


def test_a_snapshot_being_written_is_not_taken_for_abandoned(tmp_path):
    data = tmp_path / "d"
    g = filled(data, vectors())
    idx = g.index.get(1, DIM, MODEL)
    files = g.index.snapshots
    writer = files.writer(snap_mod.SnapshotMeta(1, MODEL, DIM, 1, 1, 1.0, 1, 16), idx._tid[:10].copy(),
                          np.arange(10), b"x")
    other = Gallery.open(data, index_config=CFG)
    other.warm("c")  # its load sweeps abandoned snapshots only
    assert writer.path.exists()
    files.writer(snap_mod.SnapshotMeta(1, MODEL, DIM, 1, 1, 1.0, 1, 16), idx._tid[:10].copy(), np.arange(10), b"x").close()
    assert writer.path.exists()  # a second writer leaves it too
    writer.close()
    assert not writer.path.exists()
    other.close()
    g.close()


def test_a_master_key_rotation_rewrites_the_snapshot_under_the_new_key(tmp_path):
    """The rotating process writes the snapshot afresh (the old key is destroyed), and another
    serving process that sees the rotation in the feed does too: the next start still loads
    from the snapshot, with the same answers."""
    data = tmp_path / "d"
    V = vectors()
    g = filled(data, V)
    other = Gallery.open(data, index_config=CFG)
    other.warm("c")
    assert other.index_stats("c")["loaded_from"] == "snapshot"
    before = answers(g, probes())
    old_id = g.crypto.master_key_id
    g.rotate_master_key()
    new_id = g.crypto.master_key_id
    assert new_id != old_id
    with open(snap_path(data), "rb") as f:
        assert _read_header(f)[0]["master_key_id"] == new_id
    snap_path(data).unlink()  # the other process must write its own
    other.warm("c")
    with open(snap_path(data), "rb") as f:
        assert _read_header(f)[0]["master_key_id"] == new_id
    other.close()
    g.close()
    again = Gallery.open(data, index_config=CFG)
    assert again.index_stats("c")["loaded_from"] == "snapshot"
    assert answers(again, probes()) == before
    again.close()


def test_a_snapshot_under_another_master_key_is_not_used(tmp_path, caplog):
    data = tmp_path / "d"
    V = vectors()
    g = filled(data, V)
    old = snap_path(data).read_bytes()
    g.rotate_master_key()
    g.close()
    snap_path(data).write_bytes(old)  # e.g. restored from a copy taken before the rotation
    assert_full_load_says(data, caplog, "index snapshot not used (written under master key")


@pytest.mark.parametrize("where", ["block", "ids", "header"])
def test_a_tampered_snapshot_is_not_used(tmp_path, caplog, where):
    data = tmp_path / "d"
    V = vectors()
    filled(data, V).close()
    path = snap_path(data)
    raw = bytearray(path.read_bytes())
    if where == "block":
        raw[-500] ^= 0x01
    elif where == "ids":
        with open(path, "rb") as f:
            header, _d = _read_header(f)
        lay = _Layout(int(header["n"]), DIM, header["meta"]["code_size"], int(header["blob_len"]),
                      header["meta"]["lists_per_template"])
        at = lay.ids_at + 8 * (lay.n + 10)  # subject id of slot 10: another subject's template
        raw[at : at + 8] = (int.from_bytes(raw[at : at + 8], "little") + 1).to_bytes(8, "little")
    else:
        at = raw.index(b'"nprobe": ') + 10
        raw[at] = ord("2") if raw[at] == ord("1") else ord("1")
    path.write_bytes(bytes(raw))
    assert_full_load_says(data, caplog, "failed authentication")


def test_writes_by_another_process_after_the_snapshot_are_applied_on_open(tmp_path):
    data = tmp_path / "d"
    V = vectors()
    filled(data, V).close()
    other = Gallery.open(data, index_config=FULL)
    newcomer = FaceLikeGenerator(DIM, seed=77).samples(FaceLikeGenerator(DIM, seed=77).centres(np.arange(1)), 2, seed=2)
    other.import_templates("c", [("newcomer", newcomer[:1], ConsentSpec(("p",)))], model_id=MODEL)
    other.withdraw_consent("c", "s5", ["p"])
    other.delete_subject("c", "s6")
    other.close()
    g = Gallery.open(data, index_config=CFG)
    assert g.index_stats("c")["loaded_from"] == "snapshot"
    assert g.identify_vector("c", newcomer[1], purpose="p", model_id=MODEL).candidates[0].subject == "newcomer"
    assert all(c.subject != "s5" for c in g.identify_vector("c", V[10], purpose="p", model_id=MODEL).candidates)
    assert g.identify_vector("c", V[10], purpose="q", model_id=MODEL).candidates[0].subject == "s5"
    assert all(c.subject != "s6" for c in g.identify_vector("c", V[12], purpose="q", model_id=MODEL).candidates)
    full = Gallery.open(data, index_config=FULL)
    assert_same_index(g, full)
    g.close()
    full.close()


def test_a_snapshot_older_than_the_pruned_feed_is_not_used(tmp_path, caplog):
    import datetime as dt

    data = tmp_path / "d"
    V = vectors()
    filled(data, V).close()
    other = Gallery.open(data, index_config=FULL)
    other.withdraw_consent("c", "s5", ["p"])
    with other.store.write() as tx:
        tx.prune_changes(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    other.close()
    assert_full_load_says(data, caplog, "the change feed since position")


def test_snapshot_files_are_owner_only_and_sqlite_only(tmp_path):
    data = tmp_path / "d"
    g = filled(data, vectors())
    assert snap_path(data).stat().st_mode & 0o077 == 0
    assert isinstance(g.index.snapshots, SnapshotFiles)
    g.close()


def test_the_sqlite_subject_table_reads_what_the_rows_say(tmp_path):
    """The driver-level reader used on load: subjects, labels, active grants with their expiry
    (none, a date, a withdrawn grant left out), as the store's row objects give them."""
    import datetime as dt

    from facegate.gallery.index import GalleryIndex
    from facegate.gallery.store import subject_table

    V = vectors(6)
    g = Gallery.open(tmp_path / "d", index_config=CFG)
    g.create_collection("c", purposes=["p", "q"])
    g.create_collection("other", purposes=["p"])
    until = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    g.import_templates("c", [("a", V[:1], ConsentSpec(("p", "q"))), ("b", V[1:2], ConsentSpec(("p",), expires_at=until)),
                             ("c", V[2:3], ConsentSpec(("q",)))], model_id=MODEL)
    g.import_templates("other", [("x", V[3:4], ConsentSpec(("p",)))], model_id=MODEL)
    g.withdraw_consent("c", "a", ["q"])
    generic = GalleryIndex(g.store, g.crypto, CFG)
    with g.store.read() as tx:
        fast, rows = subject_table(tx, 1), generic._table(tx, 1)
    assert fast.ids.tolist() == rows.ids.tolist() and len(fast.ids) == 3
    assert fast.external == rows.external and fast.labels == rows.labels
    assert sorted(fast.grants) == sorted(rows.grants) == ["p", "q"]
    for p in fast.grants:
        assert fast.grants[p][0].tolist() == rows.grants[p][0].tolist()
        assert fast.grants[p][1].tolist() == rows.grants[p][1].tolist()
    assert until.timestamp() in fast.grants["p"][1].tolist() and np.isinf(fast.grants["p"][1]).sum() == 1
    g.close()


@pytest.mark.parametrize("every", [{"snapshot_after_changes": 3}, {"snapshot_max_age_s": 0.0}])
def test_a_new_snapshot_follows_the_feed(tmp_path, every):
    """Rewritten once the feed has moved far enough, or once it is old enough and anything
    changed; not before."""
    import dataclasses

    data = tmp_path / "d"
    filled(data, vectors()).close()
    cfg = dataclasses.replace(CFG, snapshot_after_changes=every.get("snapshot_after_changes", 10**9),
                              snapshot_max_age_s=every.get("snapshot_max_age_s", 1e9))
    g = Gallery.open(data, index_config=cfg)
    g.warm("c")
    first = g.index_stats("c")["snapshot_seq"]
    for i, name in enumerate(("s1", "s2", "s3")):
        g.withdraw_consent("c", name, ["q"])
        g.warm("c")
        expect_new = "snapshot_max_age_s" in every or i == 2
        assert (g.index_stats("c")["snapshot_seq"] > first) == expect_new
    seq = g.index_stats("c")["snapshot_seq"]
    with open(snap_path(data), "rb") as f:
        assert _read_header(f)[0]["meta"]["seq"] == seq
    g.close()
