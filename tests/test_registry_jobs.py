"""The registry job store and runner (registry/jobs.py) on SQLite and on the embedded PostgreSQL:
one active job per collection, progress and results, failures, cancellation, and resumption of a
job whose runner died (lease expiry on a ManualClock, or a dead owner process)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading

import pytest
from sqlalchemy import func, select

from facegate.clock import ManualClock
from facegate.gallery.errors import InvalidArgumentError
from facegate.gallery.opening import open_database
from facegate.registry.jobs import (
    J,
    JobActiveError,
    JobContext,
    JobKind,
    JobLeaseLostError,
    JobNotFoundError,
    JobRunner,
    JobStore,
)

LEASE = dt.timedelta(seconds=60)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        st, _ = open_database(tmp_path / "d")
        yield st
        st.close()
        return
    import pg_support

    url = pg_support.fresh_database()
    st, _ = open_database(tmp_path / "d", store=url)
    yield st
    st.close()
    pg_support.drop_database(url)


def counting(n: int, log: list[int]):
    def run(ctx: JobContext) -> dict:
        for i in range(n):
            if ctx.cancelled():
                break
            log.append(i)
            ctx.progress(i + 1, n)
        return {"counted": len(log)}

    return run


def test_one_active_job_per_collection_of_any_kind(store):
    jobs = JobStore(store)
    a = jobs.create("batch_enrol", "staff", params={"x": 1}, actor="alice")
    assert a.status == "queued" and a.active and a.params == {"x": 1}
    with pytest.raises(JobActiveError) as exc:
        jobs.create("dedup", "staff", params={}, actor="bob")
    assert exc.value.http_status == 409 and a.id in exc.value.message
    jobs.create("dedup", "other", params={}, actor="bob")  # another collection is independent
    assert jobs.cancel(a.id).status == "cancelled"
    b = jobs.create("dedup", "staff", params={}, actor="bob")  # a finished job no longer counts
    assert jobs.active("staff") == jobs.get(b.id)
    with pytest.raises(JobNotFoundError):
        jobs.get("nope")
    assert jobs.get(b.id, kind="dedup", collection="staff") == b
    for kind, collection in (("batch_enrol", "staff"), ("dedup", "other")):  # scoped: another's job reads as missing
        with pytest.raises(JobNotFoundError):
            jobs.get(b.id, kind=kind, collection=collection)


def test_a_refused_job_leaves_nothing_behind(store):
    jobs = JobStore(store)
    jobs.create("k", "staff", params={}, actor="a")
    seen = []
    with pytest.raises(JobActiveError):
        jobs.create("k", "staff", params={}, actor="a", prepare=lambda tx, job: seen.append(job))
    assert seen == []
    with store.read() as tx:
        assert tx.execute(select(func.count()).select_from(J)).scalar() == 1


def test_run_records_progress_result_and_cleans_up(store):
    log: list[int] = []
    cleaned: list[str] = []
    runner = JobRunner(store, {"count": JobKind(counting(5, log), cleanup=lambda tx, job: cleaned.append(job.status))})
    job = runner.create("count", "staff", params={}, actor="alice", total=5)
    done = runner.run(job.id)
    assert (done.status, done.done, done.total, done.result) == ("succeeded", 5, 5, {"counted": 5})
    assert cleaned == ["succeeded"] and log == [0, 1, 2, 3, 4] and done.attempts == 1
    assert runner.jobs.active("staff") is None
    assert runner.run(job.id).status == "succeeded" and log == [0, 1, 2, 3, 4]  # a finished job is not run again


def test_a_failing_job_ends_failed_with_its_code_and_is_cleaned_up(store):
    def boom(ctx: JobContext) -> dict:
        ctx.progress(1, 3)
        raise InvalidArgumentError("row 7 is broken")

    def bug(ctx: JobContext) -> dict:
        raise KeyError("oops")

    cleaned: list[str] = []
    kinds = {"boom": JobKind(boom, cleanup=lambda tx, job: cleaned.append(job.id)),
             "bug": JobKind(bug, cleanup=lambda tx, job: cleaned.append(job.id))}
    runner = JobRunner(store, kinds)
    a = runner.run(runner.create("boom", "staff", params={}, actor="a").id)
    assert a.status == "failed" and a.error == {"code": "invalid_argument", "message": "row 7 is broken"} and a.done == 1
    b = runner.run(runner.create("bug", "staff", params={}, actor="a").id)
    assert b.status == "failed" and b.error is not None and b.error["code"] == "internal_error"
    assert cleaned == [a.id, b.id]


def test_cancel_a_queued_job_ends_it_and_runs_cleanup(store):
    cleaned: list[str] = []
    runner = JobRunner(store, {"count": JobKind(counting(3, []), cleanup=lambda tx, job: cleaned.append(job.status))})
    job = runner.create("count", "staff", params={}, actor="a")
    assert runner.cancel(job.id).status == "cancelled"
    assert cleaned == ["cancelled"] and runner.run_once() is None


def test_cancel_a_running_job_stops_it_at_its_next_check(store):
    log: list[int] = []
    runner = JobRunner(store, {})

    def run(ctx: JobContext) -> dict:
        for i in range(100):
            if ctx.cancelled():
                break
            log.append(i)
            if i == 2:
                runner.cancel(ctx.job.id)  # as another request would, mid-run
            ctx.progress(i + 1, 100, force=True)
        return {"counted": len(log)}

    runner.kinds["count"] = JobKind(run)
    job = runner.run(runner.create("count", "staff", params={}, actor="a").id)
    assert job.status == "cancelled" and log == [0, 1, 2] and job.result == {"counted": 3}


def test_an_expired_lease_lets_another_runner_resume_the_job(store):
    clock = ManualClock()
    log: list[int] = []
    jobs = JobStore(store, clock=clock)
    job = jobs.create("count", "staff", params={}, actor="a")
    assert jobs.claim("host-a:1:x", ["count"], LEASE) is not None  # runner A claimed it, then went silent
    b = JobRunner(store, {"count": JobKind(counting(4, log))}, clock=clock, owner="host-b:2:y")
    assert b.run_once() is None  # A's lease still runs
    clock.advance(61)
    done = b.run_once()
    assert done is not None and done.id == job.id and done.status == "succeeded" and done.attempts == 2
    with pytest.raises(JobLeaseLostError):
        jobs.heartbeat(job.id, "host-a:1:x", LEASE, 1, 4)  # A, waking up, learns it lost the job


def test_a_job_whose_owner_process_died_is_taken_over_at_once(store):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    import socket

    jobs = JobStore(store)
    job = jobs.create("count", "staff", params={}, actor="a")
    assert jobs.claim(f"{socket.gethostname()}:{dead.stdout.strip()}:z", ["count"], LEASE) is not None
    log: list[int] = []
    runner = JobRunner(store, {"count": JobKind(counting(2, log))})
    resumed = runner.run(job.id)
    assert resumed.status == "succeeded" and resumed.attempts == 2 and log == [0, 1]


def test_a_live_owner_keeps_its_job(store):
    jobs = JobStore(store)
    job = jobs.create("count", "staff", params={}, actor="a")
    import os
    import socket

    assert jobs.claim(f"{socket.gethostname()}:{os.getpid()}:other", ["count"], LEASE) is not None
    with pytest.raises(JobActiveError):
        JobRunner(store, {"count": JobKind(counting(2, []))}).run(job.id)


def stop_while_running(runner: JobRunner, started: threading.Event, go: threading.Event) -> None:
    """Start the runner, stop it while its job is inside ``run`` (the job waits for ``go``), and
    let the job go on only once the runner is stopping."""
    runner.start()
    assert started.wait(30)
    stopper = threading.Thread(target=runner.stop)
    stopper.start()
    assert runner.stopping.wait(30)
    go.set()
    stopper.join(30)


def test_stopping_the_runner_gives_the_running_job_back(store):
    started, go = threading.Event(), threading.Event()
    log: list[int] = []

    def run(ctx: JobContext) -> dict:
        for i in range(3):
            log.append(i)
            ctx.progress(i + 1, 3, force=True)
            if i == 0:
                started.set()
                assert go.wait(30)
        return {"n": len(log)}

    runner = JobRunner(store, {"count": JobKind(run)})
    job = runner.create("count", "staff", params={}, actor="a")
    stop_while_running(runner, started, go)
    back = runner.jobs.get(job.id)
    assert back.status == "queued" and back.done == 1 and log == [0, 1]
    again = JobRunner(store, {"count": JobKind(run)})
    assert again.run(job.id).status == "succeeded" and again.jobs.get(job.id).attempts == 2


def test_a_job_that_breaks_while_the_runner_stops_is_given_back_not_failed(store):
    from facegate.gallery.errors import StoreUnavailableError

    started, go = threading.Event(), threading.Event()

    def run(ctx: JobContext) -> dict:
        ctx.progress(1, 3, force=True)
        started.set()
        assert go.wait(30)
        raise StoreUnavailableError("the store was closed under the job")  # as a shutdown may do

    cleaned: list[str] = []
    runner = JobRunner(store, {"k": JobKind(run, cleanup=lambda tx, job: cleaned.append(job.id))})
    job = runner.create("k", "staff", params={}, actor="a")
    stop_while_running(runner, started, go)
    back = runner.jobs.get(job.id)
    assert back.status == "queued" and back.error is None and cleaned == []  # its uploads are kept for the resume
