"""Property tests and fuzzing of floodway's boundaries (hypothesis, bounded examples).

What tests/test_jobs.py, test_units.py, test_retry.py and test_limits.py already cover is not
repeated here; this adds:

- the transition table as the *store* applies it: random sequences of enqueue, claim, finish
  (any outcome), expired leases and rescues, cancel, retry and stale writes against a real
  SQLite store — every recorded event is an allowed edge, timelines chain, complete is final;
- GCRA: ``retry_at`` is exact (admitted at it, refused just before), cost > 1, ``remaining``
  agrees with back-to-back admissions, and the window bound holds for mixed costs;
- parsers fed arbitrary objects, not only text: durations, instants, rates, limit specs and
  retry policies give a value or ``ConfigError``, nothing else; ``str(rate)`` parses back;
- retry schedules: finite, never negative, capped, jitter within [1, 2) x, round trip;
- ``floodway.http.parse_quota_headers`` with arbitrary header dicts: never raises, sane output;
- configuration: ``load_settings(env=..., pyproject=False)`` with random ``FLOODWAY_*``
  values gives ``Settings`` or ``ConfigError``;
- the CLI: ``floodway.cli.main`` with random argument lists against a temporary SQLite database
  exits 0, 1 or 2, never with a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import shutil
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from floodway import Retry
from floodway.config import Settings, load_settings
from floodway.errors import ConfigError, TransitionError
from floodway.http import QuotaInfo, parse_quota_headers
from floodway.jobs import TRANSITIONS, NewJob, Status, can_transition
from floodway.limits import LimitSpec, Rate, gcra, remaining
from floodway.retry import CEILING
from floodway.store import Outcome
from floodway.store.sqlite import SQLiteStore
from floodway.units import parse_duration, parse_instant

FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: anything a user might pass where a value is expected
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=10),
    st.timedeltas(),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


# -- the transition table, as the store applies it ---------------------------------------------

FAR = 10**7  # seconds: a run_at that never comes during a test


class StoreWalk(RuleBasedStateMachine):
    """Random operations on a real SQLite store; after each, every timeline is checked."""

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="floodway-fuzz-")
        self.store = SQLiteStore(f"sqlite:///{self.dir}/walk.db")
        self.ids: list[str] = []
        self.completed: set[str] = set()
        self.running: dict[str, tuple[str, int]] = {}  # job id -> (worker, attempt) as claimed

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(target=jobs, later=st.booleans(), attempts=st.integers(min_value=1, max_value=3))
    def enqueue(self, later: bool, attempts: int) -> str:
        job_id = uuid.uuid4().hex[:12]
        run_at = time.time() + (FAR if later else -1)
        self.store.enqueue(
            [
                NewJob(
                    id=job_id,
                    task="t",
                    args_json="{}",
                    queue="default",
                    priority=0,
                    max_attempts=attempts,
                    retry_json=json.dumps({"attempts": attempts - 1}),
                    run_at=run_at,
                    status=Status.SCHEDULED if later else Status.WAITING,
                )
            ]
        )
        self.ids.append(job_id)
        return job_id

    @rule(worker=st.sampled_from(["w1", "w2"]), n=st.integers(min_value=1, max_value=4), expired=st.booleans())
    def claim(self, worker: str, n: int, expired: bool) -> None:
        # an expired lease stands for a worker that died right after claiming
        for job in self.store.claim(worker, queues=None, limit=n, lease=-1.0 if expired else 60.0):
            assert job.id not in self.completed
            self.running[job.id] = (worker, job.attempt)

    @rule(
        data=st.data(),
        status=st.sampled_from(sorted(TRANSITIONS[Status.RUNNING], key=str)),
        spend=st.booleans(),
        due=st.booleans(),
    )
    def finish(self, data: st.DataObject, status: Status, spend: bool, due: bool) -> None:
        if not self.running:
            return
        job_id = data.draw(st.sampled_from(sorted(self.running)))
        worker, attempt = self.running.pop(job_id)
        run_at = time.time() + (-1 if due else FAR) if status in (Status.RETRYING, Status.SCHEDULED) else None
        written = self.store.finish(
            worker, [Outcome(job_id, attempt, status, result_json="1", run_at=run_at, spend_attempt=spend)]
        )
        if written and status is Status.COMPLETE:
            self.completed.add(job_id)

    @rule(data=st.data(), status=st.sampled_from(sorted(TRANSITIONS[Status.RUNNING], key=str)))
    def stale_finish(self, data: st.DataObject, status: Status) -> None:
        """A run that lost its job (wrong worker or attempt) writes nothing."""
        if not self.ids:
            return
        job_id = data.draw(st.sampled_from(self.ids))
        before = self.store.get_job(job_id)
        assert self.store.finish("w-stale", [Outcome(job_id, before.attempt + 7, status)]) == []
        assert self.store.get_job(job_id).status is before.status

    @rule()
    def rescue(self) -> None:
        for job_id in self.store.rescue_expired():
            self.running.pop(job_id, None)

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        before = self.store.get_job(job_id).status
        try:
            after = self.store.cancel(job_id)
        except TransitionError:
            assert not can_transition(before, Status.CANCELLED)
            return
        assert after in (Status.CANCELLED, Status.RUNNING)

    @rule(job_id=jobs)
    def retry_now(self, job_id: str) -> None:
        before = self.store.get_job(job_id).status
        try:
            assert self.store.retry_now(job_id) is Status.WAITING
        except TransitionError:
            assert before in (Status.COMPLETE, Status.RUNNING, Status.SCHEDULED, Status.WAITING)
        else:
            assert before in (Status.FAILED, Status.CANCELLED, Status.RETRYING)
            self.running.pop(job_id, None)

    @invariant()
    def timelines_follow_the_table(self) -> None:
        for job_id in self.ids:
            job = self.store.get_job(job_id)
            previous = None
            for event in self.store.events(job_id):
                assert event.from_status == previous, (job_id, event)
                assert can_transition(event.from_status, event.to_status), (job_id, event)
                assert previous is not Status.COMPLETE, f"job {job_id} left complete: {event}"
                previous = event.to_status
            assert previous is job.status, (job_id, previous, job.status)
            if job_id in self.completed:
                assert job.status is Status.COMPLETE


TestStoreWalk = StoreWalk.TestCase
TestStoreWalk.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@SOME
@given(st.lists(st.sampled_from(list(Status)), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_walks_along_allowed_edges_only_reach_reachable_statuses(path, rnd):
    """A walk that follows only the table's edges never leaves complete and reaches only
    statuses reachable from a new job; complete has no way out, every other status has one."""
    current = rnd.choice(sorted(TRANSITIONS[None], key=str))
    for _ in path:
        choices = sorted(TRANSITIONS[current], key=str)
        if current is Status.COMPLETE:
            assert not choices
            break
        assert choices, f"{current} is a dead end"
        current = rnd.choice(choices)
    assert current in set().union(*TRANSITIONS.values())


# -- GCRA ---------------------------------------------------------------------------------------

rates = st.builds(
    Rate,
    count=st.integers(min_value=1, max_value=5000).map(float),
    period=st.sampled_from([0.001, 0.5, 1.0, 60.0, 3600.0]),
)


@SOME
@given(
    rate=rates,
    burst=st.integers(min_value=1, max_value=50),
    cost=st.integers(min_value=1, max_value=5),
    backlog=st.floats(min_value=-100, max_value=100),
    now=st.floats(min_value=1e6, max_value=2e9),
)
def test_gcra_retry_at_is_exact_for_any_state_and_cost(rate, burst, cost, backlog, now):
    assume(cost <= burst)  # a costlier request is refused up front (limits.check_cost)
    tat = now + backlog * rate.interval
    ok, new_tat, retry_at = gcra(tat, now, rate, burst, cost)
    if ok:
        assert retry_at == now
        assert new_tat == pytest.approx(max(tat, now) + rate.interval * cost)
        return
    assert new_tat == tat and retry_at > now
    assert gcra(tat, retry_at, rate, burst, cost)[0], "refused at its own retry_at"
    earlier = retry_at - max(rate.interval * 1e-3, abs(retry_at) * 1e-12, 1e-6)
    if earlier > now:
        assert not gcra(tat, earlier, rate, burst, cost)[0], "admitted before its retry_at"


@SOME
@given(cost=ANYTHING, burst=st.integers(min_value=1, max_value=100))
def test_check_cost_gives_a_cost_the_limit_can_admit_or_config_error(cost, burst):
    from floodway.limits import check_cost

    try:
        checked = check_cost(cost, burst)
    except ConfigError:
        return
    assert isinstance(checked, int) and 1 <= checked <= burst


def test_a_request_costing_more_than_the_burst_is_refused_or_admitted_at_its_retry_at(tmp_path):
    """(Found by the GCRA property test: a cost above the burst was never admitted, yet acquire
    promised a retry_at, so ctx.acquire(cost=N > burst) spun forever; fixed in 19de942.)"""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'cost.db'}")
    try:
        store.declare_limit(LimitSpec.build("api", rate="20/s", burst=1))
        try:
            ok, retry_at = store.acquire("api", "", 3)
        except ConfigError:
            return  # refused with a clear error: fine
        if not ok:
            while time.time() < retry_at:  # bounded: retry_at is at most 3 intervals (150 ms) away
                time.sleep(max(retry_at - time.time(), 0.001))
            ok, again = store.acquire("api", "", 3)
            assert ok, f"refused again at its own retry_at (next: {again - retry_at:+.3f}s)"
    finally:
        store.close()


@SOME
@given(rate=rates, burst=st.integers(min_value=1, max_value=30), backlog=st.floats(min_value=0, max_value=40))
def test_remaining_is_what_back_to_back_admissions_get(rate, burst, backlog):
    now = 1_000_000.0
    tat = now + backlog * rate.interval
    expected = remaining(tat, now, rate, burst)
    admitted = 0
    while admitted <= burst + 1:
        ok, new_tat, _ = gcra(tat, now, rate, burst)
        if not ok:
            break
        tat, admitted = new_tat, admitted + 1
    assert admitted in (expected, expected + 1) if backlog else admitted == expected == burst


@SOME
@given(
    count=st.integers(min_value=1, max_value=40),
    burst=st.integers(min_value=1, max_value=8),
    arrivals=st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.3), st.integers(min_value=1, max_value=3)),
        min_size=1,
        max_size=200,
    ),
    window=st.floats(min_value=0.05, max_value=4),
)
def test_gcra_window_bound_holds_for_weighted_requests(count, burst, arrivals, window):
    """Costs count as that many requests: in any window W at most burst + W / interval units."""
    rate = Rate(count, 1.0)
    tat, t, admitted = 0.0, 1000.0, []
    for gap, cost in arrivals:
        t += gap
        ok, new_tat, _ = gcra(tat, t, rate, burst, cost)
        if ok:
            tat = new_tat
            admitted.append((t, cost))
    bound = max(burst, max((c for _, c in admitted), default=0)) + window / rate.interval + 1e-6
    for i, (start, _) in enumerate(admitted):
        units = sum(c for at, c in admitted[i:] if at < start + window)
        assert units <= bound + 2, (units, bound)


# -- parsers with arbitrary input ------------------------------------------------------------------


@SOME
@given(ANYTHING)
def test_parse_duration_gives_a_finite_non_negative_number_or_config_error(value):
    try:
        seconds = parse_duration(value)
    except ConfigError:
        return
    assert isinstance(seconds, float) and math.isfinite(seconds) and seconds >= 0


@SOME
@given(st.one_of(ANYTHING, st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())))
def test_parse_instant_gives_a_timestamp_or_config_error(value):
    try:
        ts = parse_instant(value)
    except ConfigError:
        return
    assert isinstance(ts, float) and math.isfinite(ts)


@SOME
@given(ANYTHING)
def test_rate_parse_of_anything_gives_a_rate_or_config_error(value):
    try:
        rate = Rate.parse(value)
    except ConfigError:
        return
    assert rate.count > 0 and rate.period > 0 and math.isfinite(rate.per_second)


@SOME
@given(count=st.integers(min_value=1, max_value=10**6), period=st.sampled_from([1, 60, 2, 10, 3600, 0.5]))
def test_str_of_a_rate_parses_back(count, period):
    rate = Rate(float(count), float(period))
    again = Rate.parse(str(rate))
    assert again.per_second == pytest.approx(rate.per_second)


@SOME
@given(
    rate=st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["5/s", "10/min", "0/s", "1/0s"])),
    burst=ANYTHING,
    concurrency=ANYTHING,
    key=st.one_of(st.none(), st.text(max_size=12)),
    adaptive=st.booleans(),
)
def test_limit_spec_build_gives_a_spec_or_config_error(rate, burst, concurrency, key, adaptive):
    try:
        spec = LimitSpec.build("x", rate=rate, burst=burst, concurrency=concurrency, key=key, adaptive=adaptive)
    except ConfigError:
        return
    assert spec.rate is not None or spec.concurrency is not None or spec.adaptive  # an adaptive limit learns its rate
    assert spec.burst >= 1


@SOME
@given(
    attempts=ANYTHING,
    backoff=st.one_of(st.sampled_from(["exponential", "fixed"]), ANYTHING),
    initial=ANYTHING,
    max_=ANYTHING,
    factor=ANYTHING,
    jitter=st.booleans(),
)
def test_retry_policies_are_built_or_refused_with_config_error(attempts, backoff, initial, max_, factor, jitter):
    try:
        policy = Retry(attempts=attempts, backoff=backoff, initial=initial, max=max_, factor=factor, jitter=jitter)
    except ConfigError:
        return
    assert policy.max_attempts >= 1
    assert Retry.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy


# -- retry schedules -----------------------------------------------------------------------------

policies = st.builds(
    Retry,
    attempts=st.integers(min_value=0, max_value=20),
    backoff=st.sampled_from(["exponential", "fixed"]),
    initial=st.floats(min_value=0, max_value=10**7),
    max=st.one_of(st.none(), st.floats(min_value=0, max_value=10**8)),
    factor=st.floats(min_value=1, max_value=100),
    jitter=st.booleans(),
)


@SOME
@given(policy=policies, n=st.integers(min_value=1, max_value=10**6), seed=st.integers())
def test_retry_delays_are_finite_non_negative_capped_and_jitter_is_one_to_two(policy, n, seed):
    import random

    delay = policy.delay(n, random.Random(seed))
    plain = Retry(
        attempts=policy.attempts, backoff=policy.backoff, initial=policy.initial, max=policy.max, factor=policy.factor
    ).delay(n)
    assert math.isfinite(delay) and delay >= 0
    assert plain <= CEILING and (policy.max is None or plain <= policy.max)
    if policy.jitter:
        assert plain <= delay <= 2 * plain
    else:
        assert delay == plain
    if policy.backoff == "fixed":
        assert plain == min(policy.initial, policy.max if policy.max is not None else math.inf, CEILING)


@FEW
@given(policy=policies)
def test_retry_schedule_is_monotone_over_the_whole_run(policy):
    no_jitter = Retry(
        attempts=policy.attempts, backoff=policy.backoff, initial=policy.initial, max=policy.max, factor=policy.factor
    )
    delays = [no_jitter.delay(n) for n in range(1, policy.max_attempts + 3)]
    assert delays == sorted(delays)
    with pytest.raises(ValueError):
        no_jitter.delay(0)


# -- rate-limit headers ----------------------------------------------------------------------------

HEADER_NAMES = [
    "Retry-After",
    "X-RateLimit-Reset",
    "RateLimit-Reset",
    "X-Rate-Limit-Reset",
    "X-RateLimit-Remaining",
    "RateLimit-Remaining",
    "X-Rate-Limit-Remaining",
    "X-RateLimit-Limit",
    "RateLimit-Limit",
    "X-Rate-Limit-Limit",
    "RateLimit",
    "RateLimit-Policy",
    "X-RateLimit-Window",
    "retry-after",
    "RATELIMIT",
]
#: numbers as text, kept below 300 digits (see test_huge_header_numbers_do_not_crash_the_parser)
numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.integers(min_value=0, max_value=10**15).map(lambda n: f" {n} "),
)
http_dates = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(timezone.utc)
).map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT"))
structured = st.lists(
    st.tuples(
        st.sampled_from(["limit", "remaining", "reset", "r", "t", "q", "w", "x", ""]),
        st.one_of(numbers, st.text(max_size=8)),
    ),
    max_size=4,
).map(lambda items: ", ".join(f"{k}={v}" for k, v in items))
header_values = st.one_of(
    st.text(max_size=40), numbers, http_dates, structured, structured.map(lambda s: '"default";' + s.replace(", ", ";"))
)


@settings(max_examples=400, deadline=None)
@given(
    headers=st.dictionaries(st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=12)), header_values, max_size=6),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_parse_quota_headers_never_raises_and_never_resets_in_the_past(headers, now):
    info = parse_quota_headers(headers, now=now)
    assert isinstance(info, QuotaInfo)
    assert info.reset_at is None or (info.reset_at >= now and not math.isnan(info.reset_at))
    assert info.remaining is None or (isinstance(info.remaining, int) and info.remaining >= 0)
    assert info.limit is None or (isinstance(info.limit, int) and info.limit >= 0)
    assert info.window is None or info.window >= 0


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RateLimit-Remaining": "9" * 400},
        {"X-RateLimit-Limit": "9" * 400},
        {"RateLimit": "limit=10, remaining=" + "9" * 400 + ", reset=5"},
    ],
    ids=["x-ratelimit-remaining", "x-ratelimit-limit", "ratelimit-field"],
)
def test_huge_header_numbers_do_not_crash_the_parser(headers):
    """(Found by fuzzing: a 309-digit number became inf and int(inf) raised OverflowError inside
    ctx.http; fixed in 19de942.)"""
    info = parse_quota_headers(headers, now=1000.0)
    assert isinstance(info, QuotaInfo)


@pytest.mark.parametrize("header", ["Retry-After", "X-RateLimit-Reset", "RateLimit-Reset"])
def test_huge_reset_values_give_a_reset_not_in_the_past(header):
    info = parse_quota_headers({header: "9" * 400}, now=1000.0)
    assert info.reset_at is not None and info.reset_at >= 1000.0


# -- configuration ---------------------------------------------------------------------------------

SETTING_VARS = [
    "FLOODWAY_DATABASE_URL",
    "FLOODWAY_MAX_PAYLOAD_BYTES",
    "FLOODWAY_SEGMENT_BYTES",
    "FLOODWAY_WAIT_IN_PLACE",
    "FLOODWAY_GLOBAL_CONCURRENCY",
    "FLOODWAY_GLOBAL_RATE_LIMIT_EXECUTIONS",
    "FLOODWAY_GLOBAL_RATE_LIMIT_PERIOD_MS",
    "FLOODWAY_GLOBAL_RETRY_ATTEMPTS",
    "FLOODWAY_GLOBAL_RETRY_DELAY_MS",
    "FLOODWAY_GLOBAL_RETRY_BACKOFF",
    "FLOODWAY_ALERT_THROTTLING_OVERHEAD_MS",
    "FLOODWAY_ALERT_RETRIES",
    "FLOODWAY_ALERT_QUEUE_DEPTH",
    "FLOODWAY_ALERT_WEBHOOK_URL",
    "FLOODWAY_KIND_HTTP_REQUEST__CONCURRENCY",
    "FLOODWAY_KIND_X__RETRY_BACKOFF",
    "FLOODWAY_KIND_SANDBOX_SYNC__RATE_LIMIT_PERIOD_MS",
    "FLOODWAY_KIND_A__NOPE",
    "FLOODWAY_KIND___RETRY_ATTEMPTS",
    "FLOODWAY_UNKNOWN",
    "FLOODWAY_",
    "PATH",
]
setting_values = st.one_of(
    st.text(max_size=20),
    numbers,
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "1",
            "-1",
            "1e309",
            "nan",
            "inf",
            "5s",
            "250ms",
            "fixed",
            "exponential",
            "9" * 5000,
            "sqlite:///x.db",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    env=st.dictionaries(
        st.one_of(st.sampled_from(SETTING_VARS), st.text(max_size=15).map(lambda s: "FLOODWAY_" + s.upper())),
        setting_values,
        max_size=6,
    )
)
def test_load_settings_gives_settings_or_a_config_error_naming_the_variable(env):
    try:
        found = load_settings(env=env, pyproject=False)
    except ConfigError as exc:
        assert any(var in str(exc) for var in env), f"{exc} names none of {sorted(env)}"
        return
    assert isinstance(found, Settings)
    assert found.max_payload_bytes >= 1 and found.global_concurrency >= 1
    assert math.isfinite(found.wait_in_place) and found.wait_in_place >= 0


# -- the CLI ----------------------------------------------------------------------------------------

CLI_APP = """
import floodway

app = floodway.App()
app.limit("api", rate="100/s", burst=5)


@app.task(limits=["api"])
async def ping(n: int = 0) -> int:
    return n


@app.task(retry=0)
def boom() -> None:
    raise RuntimeError("boom")
"""

COMMANDS = [
    "enqueue",
    "enqueue-file",
    "status",
    "result",
    "events",
    "flow",
    "jobs",
    "retry",
    "cancel",
    "purge",
    "queues",
    "workers",
    "limits",
    "pause",
    "resume",
    "stats",
    "schedules",
    "migrate",
    "worker",
    "nope",
    "",
]
TOKENS = [
    "ping",
    "boom",
    "nope",
    "--args",
    '{"n": 1}',
    '{"n": "x"}',
    "[1]",
    "{",
    "null",
    '{"zz": 1}',
    "--id",
    "j1",
    "--delay",
    "5s",
    "-1s",
    "soon",
    "--queue",
    "q",
    "--priority",
    "3",
    "x",
    "--tenant",
    "acme",
    "--status",
    "complete",
    "waiting",
    "--limit",
    "0",
    "5",
    "--older-than",
    "0s",
    "1e999",
    "--timeout",
    "0",
    "0.01",
    "nan",
    "set",
    "api",
    "--rate",
    "10/s",
    "fast",
    "--burst",
    "--concurrency",
    "-3",
    "--window",
    "0s",
    "--json",
    "--help",
    "-v",
    "JOBS",
    "FILE",
    "BADFILE",
    "--batch-size",
    "--all",
    "--lease",
    "0",
    "--queues",
    ",",
    "",
]


@pytest.fixture(scope="module")
def cli_home():
    home = Path(tempfile.mkdtemp(prefix="floodway-cli-fuzz-"))
    (home / "fuzzapp.py").write_text(textwrap.dedent(CLI_APP))
    (home / "jobs.jsonl").write_text('{"n": 1}\n\n{"n": 2}\n')
    (home / "bad.jsonl").write_text('{"n": 1}\nnot json\n')
    sys.path.insert(0, str(home))
    try:
        yield home
    finally:
        sys.path.remove(str(home))
        sys.modules.pop("fuzzapp", None)
        shutil.rmtree(home, ignore_errors=True)


def run_cli(argv: list[str]) -> tuple[int, str, str, list[logging.LogRecord]]:
    """``floodway.cli.main(argv)`` in this process: (exit code, stdout, stderr, logged errors)."""
    from floodway.cli import main

    out, err = io.StringIO(), io.StringIO()
    logged: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info or record.levelno >= logging.ERROR:
                logged.append(record)

    handler = Catch()
    logging.getLogger().addHandler(handler)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        logging.getLogger().removeHandler(handler)
    return code, out.getvalue(), err.getvalue(), logged


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    command=st.sampled_from(COMMANDS),
    tokens=st.lists(st.sampled_from(TOKENS), max_size=6),
    with_app=st.booleans(),
    as_json=st.booleans(),
)
def test_cli_with_random_arguments_exits_0_1_or_2_without_a_traceback(cli_home, command, tokens, with_app, as_json):
    words = [
        {
            "JOBS": str(cli_home / "jobs.jsonl"),
            "FILE": str(cli_home / "jobs.jsonl"),
            "BADFILE": str(cli_home / "bad.jsonl"),
        }.get(t, t)
        for t in tokens
    ]
    if command == "worker":
        words.append("--burst")  # a worker without --burst runs until a signal
    argv = ["--database", f"sqlite:///{cli_home / 'cli.db'}"] + (["--app", "fuzzapp:app"] if with_app else [])
    argv += ["--json"] if as_json else []
    argv += [command, *words] if command else words
    code, out, err, logged = run_cli(argv)
    assert code in (0, 1, 2), (argv, code, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out, (argv, err[-3000:])
    assert not logged, (argv, [r.getMessage() for r in logged])
    if code == 2:
        assert err.strip(), f"{argv}: exit 2 without saying why"
