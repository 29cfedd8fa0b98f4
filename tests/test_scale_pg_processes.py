"""Four processes, each with its own in-memory index over one PostgreSQL gallery (as four
``facegate serve`` replicas), search without pause while a fifth withdraws consents, erases
subjects and enrols new ones: no search that started after a withdrawal or an erasure returned
may return that subject. Synthetic templates: the index and the change feed are under test,
not the face model."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import numpy as np
import pytest

import pg_support
from facegate.clock import SYSTEM
from facegate.gallery import ConsentSpec, Gallery
from facegate.gallery.synth import FaceLikeGenerator

MODEL = "sface-2021dec-int8bq"
DIM = 128
SEARCHERS = 4
SUBJECTS = 2_000
TARGETS = 12  # the searchers look for these; each is withdrawn (even) or erased (odd) mid-load
AFTER = 40  # searches each process runs after it has seen the writer finish


def _searcher(data_dir: str, url: str, key: str, cid: int, P: np.ndarray, conn: Any, done: Any) -> None:
    """Search the target probes in a loop: (monotonic start, probe, subjects returned) per search."""
    g = Gallery.open(data_dir, store=url, master_key=key)
    log: list[tuple[float, int, list[str]]] = []
    try:
        i = after = 0
        while after < AFTER:
            if done.is_set():
                after += 1
            j = i % len(P)
            t0 = SYSTEM.monotonic()
            hits, _ = g.index.get(cid, DIM, MODEL).search(P[j], 3, "p", SYSTEM.now().timestamp())
            log.append((t0, j, [h.external_id for h in hits]))
            i += 1
            if i == 2 * len(P):
                conn.send("searching")
    finally:
        g.close()
    conn.send(log)


@pytest.fixture
def pg_url(monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    url = pg_support.fresh_database()
    yield url
    pg_support.drop_database(url)


def test_withdrawal_and_erasure_mid_load_are_honoured_by_four_processes(tmp_path, pg_url):
    gen = FaceLikeGenerator(DIM, seed=5)
    C = gen.centres(np.arange(SUBJECTS + 200))
    V = gen.samples(C, 2, seed=1)
    P = gen.samples(C[:TARGETS], 1, seed=2)  # fresh "photos" of the targets
    w = Gallery.open(tmp_path / "writer", store=pg_url)
    key = (tmp_path / "writer" / "master.key").read_text().strip()
    w.create_collection("c", purposes=["p", "q"], threshold=0.3)
    w.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p", "q"))) for i in range(SUBJECTS)],
                       model_id=MODEL)
    with w.store.read() as tx:
        cid = tx.collection_by_name("c").id
    ctx = mp.get_context("spawn")
    done = ctx.Event()
    pipes, procs = [], []
    for n in range(SEARCHERS):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_searcher, args=(str(tmp_path / f"replica{n}"), pg_url, key, cid, P, child, done))
        p.start()
        pipes.append(parent)
        procs.append(p)
    try:
        for parent in pipes:  # every replica has loaded its index and is searching
            assert parent.poll(300) and parent.recv() == "searching"
        returned_at: dict[str, float] = {}
        first_write = SYSTEM.monotonic()
        for t in range(TARGETS):
            if t % 2:
                w.delete_subject("c", f"s{t}")
            else:
                w.withdraw_consent("c", f"s{t}", ["p"])
            returned_at[f"s{t}"] = SYSTEM.monotonic()
            extra = SUBJECTS + 10 * t  # write load between the withdrawals: new enrolments
            w.import_templates("c", [(f"n{i}", V[2 * i : 2 * i + 2], ConsentSpec(("p",))) for i in range(extra, extra + 10)],
                               model_id=MODEL)
        done.set()
        logs = []
        for parent in pipes:
            assert parent.poll(300)
            logs.append(parent.recv())
    finally:
        done.set()
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    leaks = []
    for n, log in enumerate(logs):
        before = [(j, found) for t0, j, found in log if t0 < first_write]
        assert before and all(found[0] == f"s{j}" for j, found in before)  # the searches find their target
        after = [(t0, j, found) for t0, j, found in log if t0 > returned_at[f"s{j}"]]
        assert len(after) >= AFTER // 2
        leaks += [(n, j, found) for t0, j, found in after if f"s{j}" in found]
    assert leaks == []
    # The other purpose of a withdrawn subject still finds it; erased ones are gone for good.
    hits, _ = w.index.get(cid, DIM, MODEL).search(P[0], 1, "q", SYSTEM.now().timestamp())
    assert hits[0].external_id == "s0"
    hits, _ = w.index.get(cid, DIM, MODEL).search(P[1], 3, "q", SYSTEM.now().timestamp())
    assert "s1" not in [h.external_id for h in hits]
    w.close()
