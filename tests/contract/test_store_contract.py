"""The store contract: every backend passes this suite unchanged (see ``conftest.BACKENDS``)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from floodway.errors import JobNotFound, TransitionError
from floodway.jobs import NewJob, Status
from floodway.store import Outcome

W1, W2 = "worker-1", "worker-2"


def new_job(
    job_id=None,
    *,
    task="t",
    queue="default",
    priority=0,
    run_at=None,
    max_attempts=3,
    status=None,
    args=None,
    tenant=None,
) -> NewJob:
    run_at = time.time() if run_at is None else run_at
    return NewJob(
        id=job_id or uuid.uuid4().hex,
        task=task,
        args_json=json.dumps(args or {}),
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        retry_json=json.dumps({"attempts": max_attempts - 1}),
        run_at=run_at,
        tenant=tenant,
        status=status or (Status.SCHEDULED if run_at > time.time() else Status.WAITING),
    )


def claim_all(store, worker=W1, limit=100, queues=None, lease=30.0):
    return store.claim(worker, queues=queues, limit=limit, lease=lease)


def test_fresh_store_is_migrated(store):
    assert store.schema_version() >= 1
    assert store.migrate() == []  # idempotent


def test_enqueue_and_read_back(store):
    [res] = store.enqueue([new_job("a", args={"x": 1}, tenant="acme")])
    assert res.id == "a" and res.created
    job = store.get_job("a")
    assert job.status is Status.WAITING and job.args == {"x": 1} and job.attempt == 0
    assert job.tenant == "acme"
    [enqueued] = store.events("a")
    assert (enqueued.from_status, enqueued.to_status, enqueued.attempt) == (None, Status.WAITING, 0)
    assert enqueued.reason == "enqueued" and enqueued.at == job.created_at
    assert store.get_job("missing") is None and store.events("missing") == []


def test_enqueue_is_idempotent_by_id(store):
    store.enqueue([new_job("same", args={"v": 1})])
    [res] = store.enqueue([new_job("same", args={"v": 2})])
    assert not res.created
    assert store.get_job("same").args == {"v": 1}
    assert len(store.events("same")) == 1


def test_bulk_enqueue_with_duplicates_inside_and_outside(store):
    store.enqueue([new_job("x-1")])
    results = store.enqueue([new_job("x-0"), new_job("x-1"), new_job("x-2"), new_job("x-0")])
    assert [(r.id, r.created) for r in results] == [("x-0", True), ("x-1", False), ("x-2", True), ("x-0", False)]
    assert store.count_jobs()["waiting"] == 3


#: enough jobs for a store's bulk path for new ids (PostgreSQL: COPY from 100 jobs up, in
#: chunks of 100)
MANY = 350


def test_bulk_enqueue_of_new_ids_stores_every_value_exactly(store):
    """Values a bulk writer must escape (tabs, newlines, backslashes, quotes, non-ASCII, NULLs)
    come back as they went in, on the path for generated ids too."""
    awkward = ["tab\there", "line\nbreak\r\n", "back\\slash \\N", 'quote"s', "ünïcødé ✓", "", "%s %(x)s"]
    jobs = []
    for i in range(MANY):
        text = awkward[i % len(awkward)]
        job = new_job(
            args={"s": text, "i": i},
            tenant=text or None if i % 3 else None,
            priority=i % 5,
            run_at=time.time() + (3600 if i % 10 == 0 else 0),
        )
        job.limits_json = json.dumps([["api", text]]) if i % 4 == 0 else None
        job.fair_key = f"tenant={text}" if i % 2 else ""
        job.shared_state = text if i % 6 == 0 else None
        job.segments = {"items": ['[1,"a\\tb"]', "[2]"]} if i % 7 == 0 else {}
        jobs.append(job)
    results = store.enqueue_new(iter(jobs), {"default": None})
    assert all(r.created for r in results) and [r.id for r in results] == [j.id for j in jobs]
    for job in jobs:
        got = store.get_job(job.id)
        assert got.args == json.loads(job.args_json) and got.tenant == job.tenant
        assert (got.priority, got.run_at, got.status) == (job.priority, job.run_at, job.status)
        assert got.limits == tuple(tuple(p) for p in json.loads(job.limits_json or "[]"))
        assert got.fair_key == job.fair_key
        assert [(e.from_status, e.to_status) for e in store.events(job.id)] == [(None, job.status)]
        for index, text in enumerate(job.segments.get("items", [])):
            assert store.load_segment(job.id, "items", index) == text
    counts = store.count_jobs()
    assert (counts["waiting"], counts["scheduled"]) == (MANY - MANY // 10, MANY // 10)
    # every fairness group the enqueue made ready is claimable
    claimed = {j.id for j in claim_all(store, limit=MANY)}
    assert claimed == {j.id for j in jobs if j.status is Status.WAITING}


def test_bulk_enqueue_of_new_ids_still_reports_a_clash(store):
    """An id said to be new that exists after all is reported and left alone; nothing is lost."""
    store.enqueue([new_job("taken", args={"v": "old"})])
    jobs = [new_job() for _ in range(MANY)]
    jobs[MANY // 2] = new_job("taken", args={"v": "new"})
    results = store.enqueue_new(jobs)
    assert [r.created for r in results] == [j.id != "taken" for j in jobs]
    assert store.get_job("taken").args == {"v": "old"}
    assert store.count_jobs()["waiting"] == MANY


def test_bulk_enqueue_of_new_ids_refused_mid_way_writes_nothing(store):
    """A job refused while the others are being written (the generator raises, or a job has a
    status no new job may have) leaves nothing behind, and the store goes on working."""

    class Refused(Exception):
        pass

    def made(bad_at: int):
        for i in range(MANY):
            if i == bad_at:
                raise Refused(f"item {i}")
            yield new_job(f"m-{bad_at}-{i}")

    for bad_at in (MANY - 1, 150, 5):
        with pytest.raises(Refused):
            store.enqueue_new(made(bad_at))
        assert sum(store.count_jobs().values()) == 0
    jobs = [new_job(f"s-{i}") for i in range(MANY)]
    jobs[-1].status = Status.RUNNING
    with pytest.raises(TransitionError):
        store.enqueue_new(jobs)
    assert sum(store.count_jobs().values()) == 0
    assert all(r.created for r in store.enqueue_new(new_job(f"ok-{i}") for i in range(MANY)))
    assert store.count_jobs()["waiting"] == MANY


def test_bulk_enqueue_is_all_or_nothing(store):
    jobs = [new_job(f"b-{i}") for i in range(10)]
    jobs[7].status = Status.RUNNING  # not a status a new job may have: refused mid-batch
    with pytest.raises(TransitionError):
        store.enqueue(jobs)
    assert sum(store.count_jobs().values()) == 0


def test_claim_marks_running_with_lease_and_event(store):
    store.enqueue([new_job("c")])
    [job] = claim_all(store, lease=10)
    assert job.id == "c" and job.status is Status.RUNNING and job.attempt == 1 and job.worker_id == W1
    stored = store.get_job("c")
    assert stored.status is Status.RUNNING and stored.lease_until > time.time() + 5
    assert store.events("c")[-1].to_status is Status.RUNNING
    assert claim_all(store) == []  # nothing left


def test_claim_order_priority_then_age(store):
    now = time.time()
    store.enqueue(
        [
            new_job("low-old", priority=0, run_at=now - 10),
            new_job("high", priority=5, run_at=now),
            new_job("low-new", priority=0, run_at=now - 1),
        ]
    )
    assert [j.id for j in claim_all(store, limit=3)] == ["high", "low-old", "low-new"]


def test_claim_respects_limit_and_bulk_order(store):
    store.enqueue([new_job(f"o-{i:03d}") for i in range(50)])
    first = claim_all(store, limit=20)
    assert [j.id for j in first] == [f"o-{i:03d}" for i in range(20)]


def test_claim_filters_queues(store):
    store.enqueue([new_job("q1", queue="one"), new_job("q2", queue="two")], {"one": None, "two": None})
    assert [j.id for j in claim_all(store, queues=["two"])] == ["q2"]


def test_scheduled_jobs_wait_for_run_at(store):
    store.enqueue([new_job("later", run_at=time.time() + 0.3)])
    assert store.get_job("later").status is Status.SCHEDULED
    assert claim_all(store) == []
    due = store.next_due(None)
    assert due is not None and due > time.time()
    deadline = time.time() + 10
    claimed = []
    while not claimed and time.time() < deadline:
        claimed = claim_all(store)
        time.sleep(0.02)
    assert [j.id for j in claimed] == ["later"]
    # the enqueue shows the status the job was enqueued in, though it has moved on since
    assert [(e.from_status, e.to_status) for e in store.events("later")] == [
        (None, Status.SCHEDULED),
        (Status.SCHEDULED, Status.WAITING),
        (Status.WAITING, Status.RUNNING),
    ]


def test_next_due(store):
    assert store.next_due(None) is None
    store.enqueue([new_job("n1", queue="a", run_at=time.time() + 100)], {"a": None})
    assert store.next_due(None) > time.time()
    store.enqueue([new_job("n2", queue="b")], {"b": None})
    assert store.next_due(None) == 0
    assert store.next_due(["a"]) > time.time()


def test_queue_cap_holds_across_workers(store):
    store.enqueue([new_job(f"cap-{i}", queue="narrow") for i in range(10)], {"narrow": 3})
    a = claim_all(store, W1, limit=2)
    b = claim_all(store, W2, limit=10)
    assert len(a) == 2 and len(b) == 1
    assert claim_all(store, W2) == []
    store.finish(W1, [Outcome(a[0].id, 1, Status.COMPLETE, result_json="null")])
    assert len(claim_all(store, W2)) == 1


def test_capped_queue_does_not_block_other_queues(store):
    store.enqueue([new_job(f"n-{i}", queue="narrow") for i in range(5)], {"narrow": 1})
    store.enqueue([new_job(f"w-{i}", queue="wide") for i in range(5)], {"wide": None})
    claimed = claim_all(store, limit=10)
    assert sorted(j.queue for j in claimed) == ["narrow"] + ["wide"] * 5


def test_first_declared_cap_wins_on_enqueue_and_set_queue_overrides(store):
    store.enqueue([new_job("d1", queue="q")], {"q": 2})
    store.enqueue([new_job("d2", queue="q")], {"q": 9})
    assert {q.name: q.max_concurrency for q in store.list_queues()}["q"] == 2
    store.set_queue("q", 4)
    info = {q.name: q for q in store.list_queues()}["q"]
    assert info.max_concurrency == 4 and info.counts["waiting"] == 2


def test_finish_complete(store):
    store.enqueue([new_job("f")])
    [job] = claim_all(store)
    assert store.finish(W1, [Outcome("f", job.attempt, Status.COMPLETE, result_json='{"ok": true}')]) == ["f"]
    done = store.get_job("f")
    assert done.status is Status.COMPLETE and done.result == {"ok": True} and done.finished_at
    # the worker that ran it stays on the row: the timeline's last run is read from it
    assert done.worker_id == W1 and done.lease_until is None


AWKWARD_TEXTS = [
    'say "hi"',
    "back\\slash",
    "{a,b}",
    "NULL",
    "",
    " padded ",
    "tab\tnew\nline\r",
    "é ✓ 🙂",
    '\\"',
    ",",
    "null",
]


def test_finish_batch_stores_awkward_results_and_errors_exactly(store):
    """A batch of completions goes to the server as arrays: every value that an array literal
    must quote or escape comes back as it was, each on its own job."""
    ids = [f"awk-{i}" for i in range(len(AWKWARD_TEXTS))]
    store.enqueue([new_job(i) for i in ids])
    jobs = {j.id: j for j in claim_all(store)}
    outcomes = []
    for n, (job_id, text) in enumerate(zip(ids, AWKWARD_TEXTS)):
        if n % 2:
            outcomes.append(Outcome(job_id, jobs[job_id].attempt, Status.COMPLETE, result_json=json.dumps(text)))
        else:
            err = {"type": "E", "message": text}
            outcomes.append(Outcome(job_id, jobs[job_id].attempt, Status.FAILED, error=err, reason=text))
    assert sorted(store.finish(W1, outcomes)) == sorted(ids)
    for n, (job_id, text) in enumerate(zip(ids, AWKWARD_TEXTS)):
        job = store.get_job(job_id)
        if n % 2:
            assert job.status is Status.COMPLETE and job.result == text
        else:
            assert job.status is Status.FAILED and job.error == {"type": "E", "message": text}
            assert store.events(job_id)[-1].reason == text


def test_finish_retrying_then_failed_keeps_error(store):
    store.enqueue([new_job("r", max_attempts=2)])
    [job] = claim_all(store)
    err = {"type": "ValueError", "message": "bad", "traceback": "tb"}
    store.finish(W1, [Outcome("r", 1, Status.RETRYING, error=err, run_at=time.time() - 1)])
    retrying = store.get_job("r")
    assert retrying.status is Status.RETRYING and retrying.error == err and retrying.attempt == 1
    [job] = claim_all(store)
    assert job.attempt == 2
    store.finish(W1, [Outcome("r", 2, Status.FAILED, error=err)])
    assert store.get_job("r").status is Status.FAILED
    # a retry that came due is ready again: retrying -> waiting -> running
    assert [e.to_status for e in store.events("r")] == [
        Status.WAITING,
        Status.RUNNING,
        Status.RETRYING,
        Status.WAITING,
        Status.RUNNING,
        Status.FAILED,
    ]
    assert store.events("r")[2].error == err


def stored_event_count(store, job_id: str) -> int:
    """Rows in ``job_events`` for a job: what the timeline is built from, less what the row holds."""
    mark = "?" if store.__class__.__name__.startswith("SQLite") else "%s"
    return store._read(f"SELECT count(*) FROM job_events WHERE job_id = {mark}", (job_id,))[0][0]


def test_timeline_of_a_plain_run_comes_from_the_row(store):
    store.enqueue([new_job("plain")])
    [job] = claim_all(store, W2)
    assert stored_event_count(store, "plain") == 0  # a claim stores no event
    started = store.get_job("plain").started_at
    running = store.events("plain")
    assert [(e.from_status, e.to_status, e.attempt, e.worker_id) for e in running] == [
        (None, Status.WAITING, 0, None),
        (Status.WAITING, Status.RUNNING, 1, W2),
    ]
    assert running[1].at == started
    store.finish(W2, [Outcome("plain", 1, Status.COMPLETE, result_json="1")])
    assert stored_event_count(store, "plain") == 0  # nor does a plain completion
    done = store.get_job("plain")
    events = store.events("plain")
    assert [(e.from_status, e.to_status, e.attempt, e.worker_id, e.reason) for e in events] == [
        (None, Status.WAITING, 0, None, "enqueued"),
        (Status.WAITING, Status.RUNNING, 1, W2, None),
        (Status.RUNNING, Status.COMPLETE, 1, W2, None),
    ]
    assert [e.at for e in events] == [done.created_at, started, done.finished_at]


def test_timeline_keeps_every_run_of_a_retried_job(store):
    store.enqueue([new_job("again", max_attempts=3)])
    claim_all(store, W1)
    first_start = store.get_job("again").started_at
    store.finish(W1, [Outcome("again", 1, Status.RETRYING, error={"type": "E"}, run_at=time.time() - 1)])
    claim_all(store, W2)
    second_start = store.get_job("again").started_at
    store.finish(W2, [Outcome("again", 2, Status.COMPLETE, result_json="2")])
    events = store.events("again")
    assert [(e.to_status, e.attempt, e.worker_id) for e in events] == [
        (Status.WAITING, 0, None),
        (Status.RUNNING, 1, W1),
        (Status.RETRYING, 1, W1),
        (Status.WAITING, 1, None),
        (Status.RUNNING, 2, W2),
        (Status.COMPLETE, 2, W2),
    ]
    assert events[1].at == first_start and events[4].at == second_start
    assert [e.at for e in events] == sorted(e.at for e in events)


def test_timeline_of_a_completion_with_a_reason_is_stored(store):
    store.enqueue([new_job("why")])
    claim_all(store)
    store.finish(W1, [Outcome("why", 1, Status.COMPLETE, result_json="1", reason="done early")])
    events = store.events("why")
    assert [(e.to_status, e.reason) for e in events] == [
        (Status.WAITING, "enqueued"),
        (Status.RUNNING, None),
        (Status.COMPLETE, "done early"),
    ]
    assert stored_event_count(store, "why") == 2  # stored, and not made up a second time


def test_timeline_of_a_rescued_run_has_its_start(store):
    store.enqueue([new_job("lost-run")])
    claim_all(store, W1, lease=0.01)
    started = store.get_job("lost-run").started_at
    time.sleep(0.05)
    assert store.rescue_expired() == ["lost-run"]
    events = store.events("lost-run")
    assert [(e.from_status, e.to_status, e.worker_id) for e in events] == [
        (None, Status.WAITING, None),
        (Status.WAITING, Status.RUNNING, W1),
        (Status.RUNNING, Status.WAITING, W1),
    ]
    assert events[1].at == started
    [again] = claim_all(store, W2)
    assert [(e.to_status, e.attempt, e.worker_id) for e in store.events("lost-run")][-1] == (Status.RUNNING, 2, W2)


def test_retrying_job_is_not_claimed_before_run_at(store):
    store.enqueue([new_job("later")])
    claim_all(store)
    store.finish(W1, [Outcome("later", 1, Status.RETRYING, error={"type": "E"}, run_at=time.time() + 60)])
    assert claim_all(store) == []


def test_release_gives_the_attempt_back(store):
    store.enqueue([new_job("rel")])
    claim_all(store)
    store.finish(W1, [Outcome("rel", 1, Status.WAITING, spend_attempt=False, reason="released")])
    job = store.get_job("rel")
    assert job.status is Status.WAITING and job.attempt == 0
    assert store.events("rel")[-1].reason == "released"


def test_outcome_of_a_lost_lease_is_dropped(store):
    store.enqueue([new_job("lost")])
    claim_all(store, W1, lease=0.01)
    time.sleep(0.05)
    assert store.rescue_expired() == ["lost"]
    [again] = claim_all(store, W2)
    assert again.attempt == 2
    assert store.finish(W1, [Outcome("lost", 1, Status.COMPLETE, result_json="1")]) == []
    assert store.get_job("lost").status is Status.RUNNING
    assert store.finish(W2, [Outcome("lost", 2, Status.COMPLETE, result_json="2")]) == ["lost"]
    assert store.get_job("lost").result == 2


def test_rescue_records_why_and_fails_on_last_attempt(store):
    store.enqueue([new_job("poison", max_attempts=1)])
    claim_all(store, lease=0.01)
    time.sleep(0.05)
    store.rescue_expired()
    job = store.get_job("poison")
    assert job.status is Status.FAILED and job.error["type"] == "WorkerLost"
    assert job.worker_id == W1  # a finished job names the worker that ran it last
    assert "lease" in store.events("poison")[-1].reason


def test_heartbeat_extends_lease_and_reports_cancellations(store):
    store.enqueue([new_job("hb1"), new_job("hb2")])
    claim_all(store, lease=0.2)
    assert store.heartbeat(W1, ["hb1", "hb2"], 60) == set()
    time.sleep(0.3)
    assert store.rescue_expired() == []
    assert store.cancel("hb2") is Status.RUNNING  # flagged; the worker stops it
    assert store.heartbeat(W1, ["hb1", "hb2"], 60) == {"hb2"}
    assert store.heartbeat(W2, ["hb1", "hb2"], 60) == set()  # not W2's jobs


def test_cancel_waiting_and_scheduled(store):
    store.enqueue([new_job("cw"), new_job("cs", run_at=time.time() + 100)])
    assert store.cancel("cw") is Status.CANCELLED
    assert store.cancel("cs") is Status.CANCELLED
    assert store.cancel("cs") is Status.CANCELLED  # idempotent
    assert claim_all(store) == []
    with pytest.raises(JobNotFound):
        store.cancel("nope")


def test_cancel_complete_is_refused(store):
    store.enqueue([new_job("done")])
    claim_all(store)
    store.finish(W1, [Outcome("done", 1, Status.COMPLETE, result_json="null")])
    with pytest.raises(TransitionError):
        store.cancel("done")


def test_retry_now_resets_attempts(store):
    store.enqueue([new_job("again", max_attempts=1)])
    claim_all(store)
    store.finish(W1, [Outcome("again", 1, Status.FAILED, error={"type": "E"})])
    assert store.retry_now("again") is Status.WAITING
    job = store.get_job("again")
    assert job.status is Status.WAITING and job.attempt == 0
    with pytest.raises(TransitionError):
        store.retry_now("again")  # waiting: nothing to retry
    with pytest.raises(JobNotFound):
        store.retry_now("nope")


def test_list_and_count(store):
    store.enqueue(
        [new_job(f"l-{i}", task="a" if i % 2 else "b", queue="q", tenant="t1" if i < 3 else None) for i in range(6)],
        {"q": None},
    )
    assert len(store.list_jobs()) == 6
    assert {j.task for j in store.list_jobs(task="a")} == {"a"}
    assert len(store.list_jobs(tenant="t1")) == 3
    assert len(store.list_jobs(status=["waiting"], limit=2)) == 2
    assert store.list_jobs(status=[Status.COMPLETE]) == []
    assert store.count_jobs()["waiting"] == 6 and store.count_jobs(queue="other")["waiting"] == 0


def test_purge_removes_old_finished_jobs_and_their_events(store):
    store.enqueue([new_job("p1"), new_job("p2")])
    claim_all(store)
    store.finish(W1, [Outcome("p1", 1, Status.COMPLETE, result_json="1")])
    assert store.purge(older_than=time.time() - 3600, statuses=["complete"]) == 0
    assert store.purge(older_than=time.time() + 1, statuses=["complete"]) == 1
    assert store.get_job("p1") is None and store.events("p1") == []
    assert store.get_job("p2") is not None


def test_workers_registry(store):
    from floodway.store import WorkerInfo

    now = time.time()
    store.register_worker(WorkerInfo(W1, "host", 123, ["a"], 5, now, now))
    store.enqueue([new_job("wj")])
    claim_all(store, W1)
    [info] = store.list_workers()
    assert info.id == W1 and info.queues == ["a"] and info.running == 1
    store.worker_stopped(W1)
    assert store.list_workers() == []
    assert len(store.list_workers(include_stopped=True)) == 1


def test_the_database_refuses_a_status_that_is_not_a_job_status(store):
    """The schema's own check (migration 0009), beneath the transition table: a write that
    bypassed floodway's rules could still not leave a job in a status nobody handles."""
    from floodway.errors import StoreError

    store.enqueue([new_job("guarded")])

    def bad(cur):
        cur.execute(store._q("UPDATE jobs SET status = 'paused' WHERE id = ?"), ("guarded",))

    with pytest.raises(StoreError):
        store._run(bad, what="test")
    assert store.get_job("guarded").status is Status.WAITING


def test_stats_rates_are_over_the_time_observed_not_the_whole_window(tmp_path, database_url):
    """A 10 s drain that just ended reads its own rate (10/s) in a 60 s window, not 100/60."""
    from floodway import App

    app = App(database_url)

    @app.task
    def noop() -> None: ...

    app.enqueue_many(noop, [{} for _ in range(100)])
    store = app.store
    now = time.time()

    def drained(cur):
        # finished one by one over the last ten seconds, as a worker would have
        for n, (job_id,) in enumerate(cur.execute("SELECT id FROM jobs ORDER BY id").fetchall()):
            at = now - 10 + n * 0.1
            cur.execute(
                store._q("UPDATE jobs SET status = 'complete', finished_at = ?, started_at = ? WHERE id = ?"),
                (at, at, job_id),
            )

    store._run(drained, what="test", pipeline=False)
    stats = app.stats(window=60)
    rate_out = stats["queues"]["default"]["rate_out"]
    assert 9.0 <= rate_out <= 10.5, rate_out
    quiet = app.stats(window=60)["queues"]["default"]["rate_in"]
    assert quiet >= 100 / 60  # all created within the last second or so: at least the window's average
    app.close()


def test_jobs_are_found_by_text_in_their_args_or_error(store):
    from floodway.store.base import Outcome

    def job(job_id: str, args: str) -> NewJob:
        return NewJob(
            id=job_id,
            task="t",
            args_json=args,
            queue="default",
            priority=0,
            max_attempts=1,
            retry_json="{}",
            run_at=time.time(),
        )

    store.enqueue([job("a", '{"email": "Ada@Example.com"}'), job("b", '{"note": "50%_off"}'), job("c", '{"n": 1}')])
    (claimed,) = store.claim("w", queues=None, limit=1, lease=30) or [None]
    store.finish(
        "w", [Outcome(claimed.id, claimed.attempt, Status.FAILED, error={"type": "E", "message": "Upstream said 422"})]
    )
    assert [j.id for j in store.list_jobs(text="ada@example")] == ["a"]  # any case
    assert [j.id for j in store.list_jobs(text="50%_")] == ["b"]  # % and _ are plain characters
    assert [j.id for j in store.list_jobs(text="%")] == ["b"]
    assert [j.id for j in store.list_jobs(text="said 422")] == [claimed.id]
    assert store.list_jobs(text="nowhere") == []
