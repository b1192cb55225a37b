#!/usr/bin/env python
"""The chaos drain: real worker processes drain jobs against a rate-limited loopback API
while the driver kills, stops and restarts things under them — then checks that nothing was
lost, nothing was applied twice, and the limit held.

    python chaos/run.py --backend postgres            # 4 workers, 100,000 jobs
    python chaos/run.py --backend sqlite              # 2 workers, 20,000 jobs
    make chaos                                        # both, PostgreSQL from scripts/start-postgres.sh

What happens:

1. a destination (``tests/destination.py``, in a process of its own) accepts POST /orders at
   ``--rate`` requests per second plus ``--burst`` in any sliding second, answers 429 beyond
   it, and records every request: when, its ``Idempotency-Key``, the record's id, the status.
   It does NOT deduplicate keys: a key delivered twice is recorded twice, so every repeat is
   counted;
2. ``--jobs`` jobs are enqueued, each one record: ``ctx.once(n, client.post, ...)`` through
   ``ctx.http(limit="destination")`` (``chaos/app.py``), the limit declared equal to the
   destination's rate and burst;
3. ``--workers`` ``floodway worker`` processes drain them, while the driver
   - SIGKILLs a random worker every ``--kill-every`` seconds and starts a new one in its place,
   - SIGSTOPs one worker once for longer than its lease (other workers rescue its jobs), then
     SIGCONTs it (it wakes up with runs it no longer owns),
   - restarts PostgreSQL once (``--backend postgres``);
4. when every job is final the workers get SIGTERM, and the checks run. Any violation makes
   the exit status 1:
   - every job ``complete``, none ``running`` (or anything else);
   - lost = 0: every record accepted by the destination at least once;
   - duplicate effects = 0: no record was accepted under two different Idempotency-Keys, and
     none without one (a destination honouring the key applies each record exactly once);
   - repeated deliveries (a key accepted more than once — what a destination that ignores
     Idempotency-Key would apply twice) within the design's bound: at most one call per
     running slot interrupted by the chaos (guarantee 2 in RELIABILITY.md). ``--strict-deliveries``
     demands zero;
   - the most requests accepted in any 1-second window <= rate + burst;
   - every status change in the job timelines is an edge of the transition table.

``--json FILE`` writes the figures; ``tests/test_chaos.py`` runs a short version of this.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "src"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from floodway.jobs import TRANSITIONS, Status  # noqa: E402

#: figures are meaningless if the drain finished before the chaos got going
MIN_KILLS = 2

DEFAULTS = {
    # backend: (jobs, workers, rate, burst)
    "postgres": (100_000, 4, 2000.0, 20),
    "sqlite": (20_000, 2, 500.0, 10),
}


def default_stop(backend: str, lease: float) -> float:
    """Long enough that the other workers can rescue the stopped one's runs: past its lease and,
    on PostgreSQL, past the time after which the server ends a transaction frozen with it
    (``idle_in_transaction_session_timeout``, floodway's IDLE_IN_TRANSACTION_MS), which holds
    the row locks a rescue needs until then."""
    stop = lease * 1.5 + 1.0
    if backend == "postgres":
        from floodway.store.postgres.connection import IDLE_IN_TRANSACTION_MS

        frozen = IDLE_IN_TRANSACTION_MS / 1000
        stop = max(stop, lease + frozen + 2.0)
    return stop


@dataclass
class Config:
    backend: str = "sqlite"
    jobs: int | None = None
    workers: int | None = None
    rate: float | None = None
    burst: int | None = None
    concurrency: int = 32
    lease: float = 5.0
    #: a random worker is SIGKILLed every uniform(*kill_every) seconds
    kill_every: tuple[float, float] = (3.0, 6.0)
    #: the SIGSTOP lasts this long (default: see default_stop)
    stop_for: float | None = None
    #: the SIGSTOP comes when this fraction of the jobs is done
    stop_at: float = 0.2
    #: PostgreSQL is restarted when this fraction of the jobs is done
    restart_at: float = 0.5
    #: PostgreSQL: the server to create a throwaway database on (default FLOODWAY_TEST_POSTGRES_URL)
    postgres_url: str | None = None
    #: PostgreSQL: the shell command that restarts the server (default FLOODWAY_TEST_POSTGRES_RESTART,
    #: else found from the server's data directory: pg_ctlcluster or pg_ctl)
    pg_restart: str | None = None
    #: appended to the chaos database's URL (PostgreSQL: libpq parameters, e.g.
    #: "options=-cidle_in_transaction_session_timeout%3D2000")
    database_options: str | None = None
    #: give up (and fail) when the drain has not finished after this many seconds
    timeout: float = 840.0
    strict_deliveries: bool = False
    seed: int | None = None
    workdir: str | None = None
    keep: bool = False
    progress_every: float = 5.0

    def resolved(self) -> "Config":
        jobs, workers, rate, burst = DEFAULTS[self.backend]
        out = Config(**{**asdict(self)})
        out.kill_every = tuple(self.kill_every)  # type: ignore[assignment]
        out.jobs = self.jobs or jobs
        out.workers = self.workers or workers
        out.rate = self.rate or rate
        out.burst = self.burst if self.burst is not None else burst
        out.stop_for = self.stop_for if self.stop_for is not None else default_stop(self.backend, self.lease)
        if out.seed is None:
            out.seed = random.SystemRandom().randrange(1 << 30)
        return out


@dataclass
class Report:
    backend: str
    jobs: int
    workers: int
    concurrency: int
    rate: float
    burst: int
    lease: float
    seed: int
    kills: int = 0
    restarts: int = 0  # worker processes started in place of killed ones
    stops: int = 0
    stop_seconds: float = 0.0
    stopped_worker_running: int = 0
    rescued_during_stop: int = 0
    still_running_at_cont: int = 0
    completed_during_stop: int = 0
    #: the stopped worker's runs were not rescued while it was stopped (a violation)
    stalled: bool = False
    #: SQLite: it was stopped holding the write lock, so every worker waited (a limitation)
    sqlite_write_lock_stall: bool = False
    #: PostgreSQL, when the stopped worker's runs were not rescued: the database sessions then
    #: (who holds what, who waits), how many of its runs were row-locked (rescue skips locked
    #: rows), and how many sessions sat in a transaction with a silent client for ~the stop
    sessions_during_stop: list[str] = field(default_factory=list)
    locked_runs_at_cont: int = 0
    frozen_sessions_at_cont: int = 0
    db_restarts: int = 0
    #: worker processes that exited by themselves because they started while the database
    #: restarted (a finding, not a violation: see RELIABILITY.md)
    worker_start_failures: list[str] = field(default_factory=list)
    duration: float = 0.0
    #: CPU seconds the worker processes used (killed ones included), for the throughput
    worker_cpu_seconds: float = 0.0
    #: the machine's 1-minute load average when the drain ended (other work slows the drain)
    load_average: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    complete: int = 0
    running: int = 0
    lost: int = 0
    #: jobs never finished because the drain timed out (not counted as lost)
    undrained: int = 0
    timed_out: bool = False
    lost_examples: list[Any] = field(default_factory=list)
    duplicate_effects: int = 0
    duplicate_examples: list[Any] = field(default_factory=list)
    unkeyed_requests: int = 0
    truncated_requests: int = 0
    requests: int = 0
    accepted: int = 0
    rejected_429: int = 0
    repeated_deliveries: int = 0
    repeated_delivery_bound: int = 0
    max_accepted_1s: int = 0
    max_sent_1s: int = 0
    limit_1s: float = 0.0
    rescues: int = 0
    attempts_spent_max: int = 0
    transitions: dict[str, int] = field(default_factory=dict)
    bad_transitions: dict[str, int] = field(default_factory=dict)
    #: jobs that did not complete: id, status, attempts and the error (with its stack frames)
    unfinished: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations


# -- processes ------------------------------------------------------------------------------


class Procs:
    """Every process the driver starts; ``close()`` SIGKILLs whatever is still alive."""

    def __init__(self) -> None:
        self.all: list[subprocess.Popen] = []

    def start(self, cmd: list[str], *, log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.all.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.all:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process dies only once running
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in self.all:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def _children_cpu() -> float:
    """CPU seconds of the child processes that have exited (workers, the destination)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("FLOODWAY_DATABASE_URL", None)
    env.pop("FLOODWAY_APP", None)
    env.update(extra)
    return env


def wait_for(condition: Callable[[], Any], what: str, timeout: float, interval: float = 0.05) -> Any:
    """Poll ``condition`` until truthy; raise ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- the destination ------------------------------------------------------------------------


def serve_destination(rate: float, burst: int, url_file: Path) -> None:
    """Run ``tests/destination.py``'s Destination (no deduplication) until SIGTERM; write its
    URL to ``url_file`` once it listens. Its records are read over ``GET /stats?records=1``."""
    from tests.destination import Destination

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    with Destination(rate, burst, idempotency=False, mode="retry-after", retry_after_format="float") as dest:
        tmp = url_file.with_suffix(".tmp")
        tmp.write_text(dest.url)
        tmp.rename(url_file)
        while not stop["now"]:
            time.sleep(0.2)


def fetch_records(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url + "/stats?records=1", timeout=120) as response:
        return json.load(response)["records"]


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any half-open window ``[t, t + window)`` (two pointers)."""
    ordered = sorted(times)
    best = j = 0
    for i, t in enumerate(ordered):
        while j < len(ordered) and ordered[j] < t + window:
            j += 1
        best = max(best, j - i)
    return best


# -- databases ------------------------------------------------------------------------------


def postgres_base_url(config: Config) -> str:
    url = config.postgres_url or os.environ.get("FLOODWAY_TEST_POSTGRES_URL")
    if not url:
        raise SystemExit(
            "--backend postgres needs a server: --postgres-url URL or FLOODWAY_TEST_POSTGRES_URL "
            "(`make chaos` starts one with scripts/start-postgres.sh)"
        )
    return url


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def create_postgres_database(base: str) -> tuple[str, Callable[[], None]]:
    import psycopg

    name = f"floodway_chaos_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        try:
            with psycopg.connect(base, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # the figures matter more than the clean-up
            print(f"chaos: could not drop database {name}: {exc}", file=sys.stderr)

    return _with_database(base, name), drop


def postgres_restart_command(config: Config, base: str) -> list[str]:
    """How to restart the server: --pg-restart, FLOODWAY_TEST_POSTGRES_RESTART (set by
    scripts/start-postgres.sh), else pg_ctlcluster or pg_ctl for the server's data directory."""
    text = config.pg_restart or os.environ.get("FLOODWAY_TEST_POSTGRES_RESTART")
    if text:
        return shlex.split(text)
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
        version = conn.execute("SHOW server_version_num").fetchone()[0][:-4]
    cluster = Path(f"/etc/postgresql/{version}")
    if shutil.which("pg_ctlcluster") and cluster.is_dir():
        for conf in cluster.glob("*/postgresql.conf"):
            if data_dir in conf.read_text():
                return ["pg_ctlcluster", version, conf.parent.name, "restart"]
    pg_ctl = shutil.which("pg_ctl") or f"/usr/lib/postgresql/{version}/bin/pg_ctl"
    command = [
        pg_ctl,
        "restart",
        "-D",
        data_dir,
        "-m",
        "fast",
        "-w",
        "-t",
        "60",
        "-l",
        str(Path(data_dir) / "server.log"),
    ]
    owner = Path(data_dir).owner()
    if os.geteuid() == 0 and owner != "root":
        command = ["runuser", "-u", owner, "--", *command]
    return command


def wait_for_postgres(url: str, timeout: float = 60.0) -> None:
    import psycopg

    def up() -> bool:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    wait_for(up, "PostgreSQL to accept connections again", timeout, interval=0.1)


def read_timeline_figures(url: str) -> tuple[Counter, int]:
    """(transition counts by "from->to", rescues) from every job's timeline, as floodway builds
    it (``store.events``: the stored events and those the job row holds)."""
    from floodway.store import open_store

    store = open_store(url, migrate=False)
    try:
        ids = [job.id for job in store.list_jobs(limit=max(1, sum(store.count_jobs().values())))]
        counts: Counter = Counter()
        rescues = 0
        for job_id in ids:
            for event in store.events(job_id):
                src = event.from_status.value if event.from_status else "new"
                counts[f"{src}->{event.to_status.value}"] += 1
                rescues += bool(
                    event.reason
                    and event.reason.startswith(("lease expired", "worker died", "worker silent", "worker lost"))
                )
    finally:
        store.close()
    return counts, rescues


# -- the run --------------------------------------------------------------------------------


class Chaos:
    def __init__(self, config: Config, out: Callable[[str], None] = print):
        self.config = config.resolved()
        self.out = out
        self.rng = random.Random(self.config.seed)
        self.procs = Procs()
        self.cleanups: list[Callable[[], None]] = []
        c = self.config
        self.report = Report(c.backend, c.jobs, c.workers, c.concurrency, c.rate, c.burst, c.lease, c.seed)
        self.slots: list[subprocess.Popen] = []
        self.logs: dict[int, Path] = {}
        self.started = 0
        #: (start, end) of the PostgreSQL restart, monotonic seconds
        self.db_restart_window: tuple[float, float] | None = None

    # -- set-up ---------------------------------------------------------------------------
    def _workdir(self) -> Path:
        if self.config.workdir:
            path = Path(self.config.workdir)
            path.mkdir(parents=True, exist_ok=True)
        else:
            path = Path(tempfile.mkdtemp(prefix=f"floodway-chaos-{self.config.backend}-"))
            if not self.config.keep:
                self.cleanups.append(lambda: shutil.rmtree(path, ignore_errors=True))
        return path

    def _start_destination(self) -> str:
        url_file = self.dir / "destination.url"
        self.dest_proc = self.procs.start(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve-destination",
                "--rate",
                repr(self.config.rate),
                "--burst",
                str(self.config.burst),
                "--url-file",
                str(url_file),
            ],
            log=self.dir / "destination.log",
            env=_env({}),
            cwd=ROOT,
        )

        def ready() -> bool:
            if self.dest_proc.poll() is not None:
                raise RuntimeError(f"the destination exited: {(self.dir / 'destination.log').read_text()[-2000:]}")
            return url_file.exists()

        wait_for(ready, "the destination to listen", 30)
        return url_file.read_text().strip()

    def _start_worker(self, slot: int) -> subprocess.Popen:
        self.started += 1
        c = self.config
        log = self.dir / f"worker-{slot}-{self.started}.log"
        proc = self.procs.start(
            [
                sys.executable,
                "-m",
                "floodway",
                "--app",
                "chaos.app:app",
                "worker",
                "--concurrency",
                str(c.concurrency),
                "--lease",
                f"{c.lease}s",
                "--grace",
                "2s",
                "--poll-interval",
                "50ms",
            ],
            log=log,
            env=self.worker_env,
            cwd=ROOT,
        )
        self.logs[proc.pid] = log
        return proc

    # -- the drain ------------------------------------------------------------------------
    def run(self) -> Report:
        c, r = self.config, self.report
        try:
            self.dir = self._workdir()
            r.workdir = str(self.dir)
            dest_url = self._start_destination()
            if c.backend == "postgres":
                base = postgres_base_url(c)
                self.db_url, drop = create_postgres_database(base)
                if c.database_options:
                    self.db_url += ("&" if "?" in self.db_url else "?") + c.database_options
                if not c.keep:
                    self.cleanups.append(drop)
                self.restart_cmd = postgres_restart_command(c, base)
            else:
                self.db_url = f"sqlite:///{self.dir / 'chaos.db'}"
            self.worker_env = _env(
                {
                    "CHAOS_DATABASE_URL": self.db_url,
                    "CHAOS_DEST_URL": dest_url,
                    "CHAOS_RATE": repr(c.rate),
                    "CHAOS_BURST": str(c.burst),
                }
            )
            from chaos.app import make_app

            self.app = make_app(self.db_url, dest_url, c.rate, c.burst)
            self.out(
                f"chaos: {c.backend}, {c.jobs:,} jobs, {c.workers} workers x {c.concurrency}, "
                f"limit {c.rate:g}/s burst {c.burst}, lease {c.lease:g}s, seed {c.seed}, in {self.dir}"
            )
            self._enqueue()
            cpu_before = _children_cpu()
            self._drain()
            self._stop_workers()
            r.worker_cpu_seconds = round(_children_cpu() - cpu_before, 1)
            r.load_average = round(os.getloadavg()[0], 1)
            self._check(dest_url)
        finally:
            self.procs.close()
            if hasattr(self, "app"):
                self.app.close()
            for cleanup in reversed(self.cleanups):
                cleanup()
        return r

    def _enqueue(self) -> None:
        n, chunk = self.config.jobs, 5000
        began = time.monotonic()
        for start in range(0, n, chunk):
            self.app.enqueue_many("deliver", [{"n": i} for i in range(start, min(start + chunk, n))])
        self.out(f"chaos: enqueued {n:,} jobs in {time.monotonic() - began:.1f}s")

    def _done(self) -> tuple[int, dict[str, int]]:
        counts = self.app.store.count_jobs()
        return sum(counts.get(s.value, 0) for s in Status if s.is_final), counts

    def _drain(self) -> None:
        c, r = self.config, self.report
        self.slots = [self._start_worker(i) for i in range(c.workers)]
        began = time.monotonic()
        deadline = began + c.timeout
        next_kill = began + self.rng.uniform(*c.kill_every)
        next_progress = began + c.progress_every
        stopped: tuple[int, float, str | None] | None = None  # (slot, until, worker id)
        stop_done = False
        stop_began_done = 0
        rescued_before_stop = 0
        restart_done = c.backend != "postgres"
        last_done, last_t = 0, began
        last_seen: tuple[int, dict[str, int]] = (0, {})
        while True:
            now = time.monotonic()
            try:
                done, counts = self._done()
            except Exception as exc:  # the database is restarting, or locked by the stopped worker:
                # the chaos goes on (the SIGCONT above all), with the last count
                self.out(f"chaos: could not count jobs ({type(exc).__name__}: {exc})")
                done, counts = last_seen
            last_seen = (done, counts)
            if done >= c.jobs and stopped is None:
                break
            if now > deadline:
                r.violations.append(f"the drain did not finish within {c.timeout:.0f}s: {counts}")
                r.timed_out = True
                break
            # a worker process that exited on its own is replaced, and is a violation unless it
            # was starting while the database restarted (reported apart: see worker_start_failures)
            for slot, proc in enumerate(self.slots):
                if proc.poll() is not None and (stopped is None or stopped[0] != slot):
                    self._exited(slot, proc)
                    self.slots[slot] = self._start_worker(slot)
            # SIGSTOP one worker once, for longer than its lease; then SIGCONT it
            if not stop_done and done >= c.stop_at * c.jobs and stopped is None:
                victim = self._busy_worker()
                if victim is not None:  # else: no worker has registered and taken jobs yet
                    slot, worker_id, running = victim
                    proc = self.slots[slot]
                    rescued_before_stop = self._rescued_from(worker_id)
                    os.kill(proc.pid, signal.SIGSTOP)
                    stopped = (slot, now + c.stop_for, worker_id)
                    stop_began_done = done
                    r.stops += 1
                    r.stopped_worker_running = running
                    stop_done = True
                    self.out(
                        f"chaos: SIGSTOP worker pid {proc.pid} ({running} running jobs) for "
                        f"{c.stop_for:.1f}s (lease {c.lease:g}s)"
                    )
            if stopped is not None and now >= stopped[1]:
                slot, _, worker_id = stopped
                proc = self.slots[slot]
                r.rescued_during_stop = self._rescued_from(worker_id) - rescued_before_stop
                r.still_running_at_cont = self._running_of(worker_id)
                r.completed_during_stop = done - stop_began_done
                if r.still_running_at_cont and c.backend == "postgres":
                    r.sessions_during_stop = self._sessions()
                    r.locked_runs_at_cont = self._locked_runs(worker_id)
                    r.frozen_sessions_at_cont = self._frozen_sessions(c.stop_for * 0.8)
                os.kill(proc.pid, signal.SIGCONT)
                r.stop_seconds = round(c.stop_for, 1)
                self.out(
                    f"chaos: SIGCONT worker pid {proc.pid}; meanwhile the others finished "
                    f"{r.completed_during_stop} jobs and rescued {r.rescued_during_stop} of its runs; "
                    f"{r.still_running_at_cont} were still its own"
                )
                for line in r.sessions_during_stop:
                    self.out(f"chaos:   {line}")
                if r.still_running_at_cont:
                    self._stalled(c, r)
                stopped = None
            # restart PostgreSQL once
            if not restart_done and done >= c.restart_at * c.jobs:
                restart_done = True
                self._restart_postgres()
            # SIGKILL a random worker that is up (registered: past its start-up), and start
            # another in its place; on a slow machine a worker killed while it starts never works
            victim_slot = (
                self._live_worker(exclude=None if stopped is None else stopped[0]) if now >= next_kill else None
            )
            if victim_slot is not None:
                slot = victim_slot
                victim = self.slots[slot]
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait(timeout=30)
                r.kills += 1
                self.slots[slot] = self._start_worker(slot)
                r.restarts += 1
                next_kill = time.monotonic() + self.rng.uniform(*c.kill_every)
            if now >= next_progress:
                rate = (done - last_done) / max(now - last_t, 1e-9)
                last_done, last_t = done, now
                self.out(
                    f"chaos: [{now - began:6.1f}s] {done:,}/{c.jobs:,} final ({rate:,.0f}/s), "
                    f"running {counts.get('running', 0)}, kills {r.kills}, stops {r.stops}, "
                    f"db restarts {r.db_restarts}"
                )
                next_progress = now + c.progress_every
            time.sleep(0.1)
        r.duration = round(time.monotonic() - began, 1)
        if r.kills < MIN_KILLS:
            r.violations.append(
                f"only {r.kills} kill(s) happened before the drain ended (want >= {MIN_KILLS}): "
                "run more jobs or kill more often"
            )
        if not stop_done:
            r.violations.append("the SIGSTOP never happened")
        if not restart_done:
            r.violations.append("the PostgreSQL restart never happened")

    def _exited(self, slot: int, proc: subprocess.Popen) -> None:
        r = self.report
        tail = [line for line in self.logs[proc.pid].read_text(errors="replace").splitlines() if line.strip()][-3:]
        last = " | ".join(tail)[-400:]
        restart = self.db_restart_window
        if (
            restart is not None
            and time.monotonic() - restart[1] < 15.0
            and ("connection" in last or "PostgreSQL" in last)
        ):
            r.worker_start_failures.append(f"pid {proc.pid} exited {proc.returncode}: {last}")
            self.out(
                f"chaos: worker pid {proc.pid} exited with {proc.returncode} while the database restarted; "
                "started another"
            )
        else:
            r.violations.append(f"worker slot {slot} (pid {proc.pid}) exited by itself with {proc.returncode}: {last}")

    def _stalled(self, c: Config, r: Report) -> None:
        """The stopped worker's runs outlived their lease without being rescued."""
        what = (
            f"a worker SIGSTOPped for {c.stop_for:g}s (lease {c.lease:g}s) still held {r.still_running_at_cont} "
            f"runs when it resumed: nobody rescued them (the others finished {r.completed_during_stop} jobs "
            f"and rescued {r.rescued_during_stop} of its runs meanwhile)"
        )
        in_flight = c.workers * c.concurrency
        if c.backend == "sqlite" and r.completed_during_stop <= in_flight:
            # it was stopped inside a write transaction: SQLite's one write lock is its until it
            # runs again, so every process waits (nothing floodway can take over); a limitation
            r.sqlite_write_lock_stall = True
            self.out(f"chaos: {what} — it held SQLite's write lock (a limitation of one SQLite file)")
            return
        r.stalled = True
        why = ""
        if c.backend == "postgres" and r.frozen_sessions_at_cont > 0:
            why = (
                f"; {r.frozen_sessions_at_cont} of its sessions sat frozen inside a transaction, "
                f"{r.locked_runs_at_cont} of its runs were row-locked (rescue_expired skips locked rows), "
                f"{sum('wait=Lock' in line for line in r.sessions_during_stop)} other sessions waited on locks"
            )
        r.violations.append(f"stall: {what}{why}")

    def _live_worker(self, exclude: int | None) -> int | None:
        """A random slot whose worker has registered (finished starting), or None."""
        try:
            pids = {info.pid for info in self.app.store.list_workers()}
        except Exception:
            return None
        live = [i for i, p in enumerate(self.slots) if i != exclude and p.poll() is None and p.pid in pids]
        return self.rng.choice(live) if live else None

    def _busy_worker(self) -> tuple[int, str, int] | None:
        """(slot, worker id, running jobs) of a random registered worker that runs jobs."""
        try:
            infos = {info.pid: info for info in self.app.store.list_workers()}
        except Exception:
            return None
        busy = [
            (slot, infos[p.pid].id, infos[p.pid].running)
            for slot, p in enumerate(self.slots)
            if p.poll() is None and p.pid in infos and infos[p.pid].running > 0
        ]
        return self.rng.choice(busy) if busy else None

    def _sessions(self) -> list[str]:
        """PostgreSQL: each session of the chaos database that is in a transaction or waiting."""
        if self.config.backend != "postgres":
            return []
        import psycopg

        try:
            with psycopg.connect(self.db_url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pid, state, wait_event_type, wait_event, now() - xact_start, left(query, 160) "
                    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND (xact_start IS NOT NULL OR wait_event_type = 'Lock') ORDER BY xact_start"
                ).fetchall()
        except Exception as exc:
            return [f"could not read pg_stat_activity: {exc}"]
        return [
            f"backend {pid} {state} wait={wtype}/{wevent} for {age}: {query!r}"
            for pid, state, wtype, wevent, age, query in rows
        ]

    def _running_of(self, worker_id: str) -> int:
        try:
            return sum(
                1 for job in self.app.store.list_jobs(status=["running"], limit=100_000) if job.worker_id == worker_id
            )
        except Exception:
            return -1

    def _rescued_from(self, worker_id: str) -> int:
        """How many runs of the stopped worker other workers rescued (lease expired)."""
        try:
            return self._count_rescue_events(worker_id)
        except Exception:
            return 0

    def _count_rescue_events(self, worker_id: str) -> int:
        sql = "SELECT COUNT(*) FROM job_events WHERE reason LIKE 'lease expired%' AND worker_id = "
        if self.config.backend == "sqlite":
            import sqlite3
            from urllib.parse import urlsplit

            conn = sqlite3.connect(urlsplit(self.db_url).path[1:], timeout=60)
            try:
                return conn.execute(sql + "?", (worker_id,)).fetchone()[0]
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.db_url) as conn:  # with parameters, psycopg reads % as a placeholder
            return conn.execute(sql.replace("%", "%%") + "%s", (worker_id,)).fetchone()[0]

    def _locked_runs(self, worker_id: str) -> int:
        """PostgreSQL: how many of the worker's running jobs have their row locked by another
        transaction right now (rescue_expired claims rows FOR UPDATE SKIP LOCKED: it skips them)."""
        import psycopg

        try:
            with psycopg.connect(self.db_url) as conn:
                mine = [
                    row[0]
                    for row in conn.execute(
                        "SELECT id FROM jobs WHERE status = 'running' AND worker_id = %s", (worker_id,)
                    )
                ]
                free = {
                    row[0]
                    for row in conn.execute("SELECT id FROM jobs WHERE id = ANY(%s) FOR UPDATE SKIP LOCKED", (mine,))
                }
                conn.rollback()
            return len(set(mine) - free)
        except Exception:
            return -1

    def _frozen_sessions(self, frozen_for: float) -> int:
        """PostgreSQL: sessions inside a transaction whose client has not spoken for about as long
        as the stop (idle in transaction, or mid-pipeline: 'active' waiting on ClientRead)."""
        import psycopg

        try:
            with psycopg.connect(self.db_url, autocommit=True) as conn:
                return conn.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND wait_event = 'ClientRead' "
                    "AND state IN ('active', 'idle in transaction') "
                    "AND now() - state_change > make_interval(secs => %s)",
                    (frozen_for,),
                ).fetchone()[0]
        except Exception:
            return -1

    def _restart_postgres(self) -> None:
        self.out(f"chaos: restarting PostgreSQL: {' '.join(self.restart_cmd)}")
        began = time.monotonic()
        done = subprocess.run(self.restart_cmd, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            self.report.violations.append(
                f"restarting PostgreSQL failed ({done.returncode}): {done.stdout[-500:]}{done.stderr[-500:]}"
            )
            return
        wait_for_postgres(self.db_url)
        self.db_restart_window = (began, time.monotonic())
        self.report.db_restarts += 1
        self.out(f"chaos: PostgreSQL is back after {time.monotonic() - began:.1f}s")

    def _stop_workers(self) -> None:
        for proc in self.slots:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for slot, proc in enumerate(self.slots):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.report.violations.append(f"worker pid {proc.pid} did not stop within 60s of SIGTERM")
                proc.kill()
                proc.wait(timeout=10)

    # -- the checks -----------------------------------------------------------------------
    def _check(self, dest_url: str) -> None:
        c, r = self.config, self.report
        counts = self.app.store.count_jobs()
        r.statuses = {k: v for k, v in counts.items() if v}
        r.complete = counts.get("complete", 0)
        r.running = counts.get("running", 0)
        jobs = self.app.store.list_jobs(limit=c.jobs + 10)
        by_n = {job.args["n"]: job for job in jobs}
        r.attempts_spent_max = max((job.attempt for job in jobs), default=0)
        if r.complete != c.jobs:
            r.violations.append(f"{c.jobs - r.complete} job(s) are not complete: {r.statuses}")
            for job in jobs:  # after a timeout, only the ones that ended badly
                if (
                    job.status is not Status.COMPLETE
                    and (job.status.is_final or not r.timed_out)
                    and len(r.unfinished) < 20
                ):
                    error = job.error or {}
                    frames = [
                        line.strip()
                        for line in (error.get("traceback") or "").splitlines()
                        if line.strip().startswith("File ")
                    ]
                    r.unfinished.append(
                        {
                            "n": job.args.get("n"),
                            "id": job.id,
                            "status": job.status.value,
                            "attempt": job.attempt,
                            "max_attempts": job.max_attempts,
                            "error_type": error.get("type"),
                            "error": (error.get("message") or "")[:300],
                            "frames": frames,
                        }
                    )
        if r.running and not r.timed_out:  # after a timeout they are in the "undrained" count
            r.violations.append(f"{r.running} job(s) are left running")
        if len(by_n) != c.jobs:
            r.violations.append(f"the store holds {len(by_n)} jobs, {c.jobs} were enqueued")

        records = fetch_records(dest_url)
        if c.keep:
            (self.dir / "destination-records.json").write_text(json.dumps(records))
        # a worker SIGKILLed while sending leaves a request without its body; the destination
        # answers 200 to the empty body (its id is None): no record was delivered by it
        truncated = [rec for rec in records if rec["status"] == 200 and rec["id"] is None]
        r.truncated_requests = len(truncated)
        accepted = [rec for rec in records if rec["status"] == 200 and rec["id"] is not None]
        r.requests = len(records)
        r.accepted = len(accepted)
        r.rejected_429 = sum(1 for rec in records if rec["status"] == 429)
        r.unkeyed_requests = sum(1 for rec in records if not rec["idempotency_key"])
        keys_per_record: dict[Any, set[str]] = {}
        deliveries = Counter(rec["idempotency_key"] for rec in accepted)
        for rec in accepted:
            keys_per_record.setdefault(rec["id"], set()).add(rec["idempotency_key"])
        # lost: a job that ended (complete, failed or cancelled) without its record delivered;
        # after a timeout, jobs that never ran are counted apart (undrained), not as lost
        ended = {n for n, job in by_n.items() if job.status.is_final}
        r.undrained = c.jobs - len(ended)
        lost = [n for n in range(c.jobs) if n not in keys_per_record and (n in ended or not r.timed_out)]
        r.lost = len(lost)
        r.lost_examples = lost[:10]
        doubled = {n: sorted(k or "" for k in keys) for n, keys in keys_per_record.items() if len(keys) > 1}
        r.duplicate_effects = len(doubled) + sum(1 for rec in accepted if not rec["idempotency_key"])
        r.duplicate_examples = list(doubled.items())[:5]
        strangers = set(keys_per_record) - set(range(c.jobs))
        if strangers:
            r.violations.append(f"the destination accepted records no job sent: {sorted(strangers)[:10]}")
        r.repeated_deliveries = sum(n - 1 for n in deliveries.values() if n > 1)
        # guarantee 2 (RELIABILITY.md): without an idempotent destination "at most one call per running
        # slot can repeat after a crash"; a SIGKILL, a SIGSTOP past the lease and a database
        # restart each interrupt at most every slot of the workers they hit
        r.repeated_delivery_bound = (r.kills + r.stops) * c.concurrency + r.db_restarts * c.workers * c.concurrency
        r.max_accepted_1s = max_in_window([rec["at"] for rec in records if rec["status"] == 200])
        r.max_sent_1s = max_in_window([rec["at"] for rec in records])
        r.limit_1s = c.rate + c.burst
        if r.lost:
            r.violations.append(f"{r.lost} record(s) never reached the destination, e.g. {r.lost_examples}")
        if r.duplicate_effects:
            r.violations.append(
                f"{r.duplicate_effects} record(s) would be applied twice even by a destination "
                f"honouring Idempotency-Key (two keys, or none), e.g. {r.duplicate_examples}"
            )
        if c.strict_deliveries and r.repeated_deliveries:
            r.violations.append(f"{r.repeated_deliveries} repeated deliveries (--strict-deliveries)")
        elif r.repeated_deliveries > r.repeated_delivery_bound:
            r.violations.append(
                f"{r.repeated_deliveries} repeated deliveries, over the design's bound of "
                f"{r.repeated_delivery_bound} (one per running slot interrupted)"
            )
        if r.max_accepted_1s > r.limit_1s:
            r.violations.append(
                f"{r.max_accepted_1s} requests accepted in one second, over rate + burst = {r.limit_1s:g}"
            )
        edges, r.rescues = read_timeline_figures(self.db_url)
        r.transitions = dict(sorted(edges.items()))
        for edge, n in edges.items():
            src, dst = edge.split("->")
            allowed = TRANSITIONS.get(None if src == "new" else Status(src), frozenset())
            if Status(dst) not in allowed:
                r.bad_transitions[edge] = n
        if r.bad_transitions:
            r.violations.append(f"status changes outside the transition table: {r.bad_transitions}")


def render(r: Report) -> str:
    verdict = "PASS" if r.ok else "FAIL"
    rows = [
        ("backend", r.backend),
        ("jobs", f"{r.jobs:,}"),
        ("workers", f"{r.workers} x concurrency {r.concurrency}, lease {r.lease:g}s"),
        ("worker kills (SIGKILL)", f"{r.kills} (each replaced: {r.restarts} restarts)"),
        (
            "worker stops (SIGSTOP)",
            f"{r.stops} for {r.stop_seconds:g}s with {r.stopped_worker_running} running jobs; "
            f"others finished {r.completed_during_stop} jobs and rescued "
            f"{r.rescued_during_stop} of its runs meanwhile ({r.still_running_at_cont} not)"
            + ("; it held SQLite's write lock, so everyone waited (a limitation)" if r.sqlite_write_lock_stall else ""),
        ),
        (
            "database restarts",
            str(r.db_restarts)
            + (
                f"; {len(r.worker_start_failures)} worker start-up(s) failed during it (exit 2)"
                if r.worker_start_failures
                else ""
            ),
        ),
        ("rescues (lease expired, worker dead)", f"{r.rescues:,}"),
        (
            "duration",
            f"{r.duration:g}s ({r.jobs / r.duration if r.duration else 0:,.0f} jobs/s; "
            f"ideal at the limit {r.jobs / r.rate:,.1f}s)",
        ),
        (
            "worker CPU",
            f"{r.worker_cpu_seconds:g}s ({r.worker_cpu_seconds / max(r.jobs, 1) * 1000:.2f} ms per job, "
            f"{os.cpu_count()} CPUs, load average {r.load_average:g} at the end)",
        ),
        ("complete", f"{r.complete:,} of {r.jobs:,}; statuses {r.statuses}"),
        ("left running", str(r.running)),
        ("lost", str(r.lost) + (f" ({r.undrained:,} not drained when the run timed out)" if r.timed_out else "")),
        ("duplicate effects", f"{r.duplicate_effects} (records accepted under two keys or none)"),
        (
            "repeated deliveries",
            f"{r.repeated_deliveries} (a key accepted again; bound "
            f"{r.repeated_delivery_bound}: one per interrupted slot)",
        ),
        (
            "requests",
            f"{r.requests:,}: {r.accepted:,} accepted, {r.rejected_429:,} answered 429, "
            f"{r.truncated_requests} cut off by a kill",
        ),
        ("max accepted in 1 s", f"{r.max_accepted_1s:,} (rate + burst = {r.limit_1s:g})"),
        ("max sent in 1 s", f"{r.max_sent_1s:,} (accepted or not)"),
        ("most attempts spent", str(r.attempts_spent_max)),
        ("transitions", ", ".join(f"{k} {v:,}" for k, v in r.transitions.items())),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"chaos {verdict} — {r.backend}"] + [f"  {k:<{width}}  {v}" for k, v in rows]
    for v in r.violations:
        lines.append(f"  VIOLATION: {v}")
    for job in r.unfinished[:5]:
        lines.append(
            f"  not complete: record {job['n']} (job {job['id']}) {job['status']} on attempt "
            f"{job['attempt']} of {job['max_attempts']}: {job['error_type']}: {job['error'][:160]}"
        )
        for frame in job["frames"][-4:]:
            lines.append(f"      {frame}")
    return "\n".join(lines)


def run_chaos(config: Config, out: Callable[[str], None] = print) -> Report:
    """Run one chaos drain; every process it starts is gone when it returns (or raises)."""
    return Chaos(config, out).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--jobs", type=int, help="jobs to drain (default 100,000 on PostgreSQL, 20,000 on SQLite)")
    parser.add_argument("--workers", type=int, help="worker processes (default 4 on PostgreSQL, 2 on SQLite)")
    parser.add_argument("--concurrency", type=int, default=32, help="jobs at once per worker (32)")
    parser.add_argument(
        "--rate",
        type=float,
        help="the destination's limit and the declared one, per second (2000 on PostgreSQL, 500 on SQLite)",
    )
    parser.add_argument("--burst", type=int, help="burst of both (20 on PostgreSQL, 10 on SQLite)")
    parser.add_argument("--lease", type=float, default=5.0, help="worker lease in seconds (5)")
    parser.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=(3.0, 6.0),
        metavar=("MIN", "MAX"),
        help="seconds between SIGKILLs, uniformly drawn (3 6)",
    )
    parser.add_argument(
        "--stop-for",
        type=float,
        help="SIGSTOP length in seconds (1.5 x lease + 1; on "
        "PostgreSQL at least lease + the frozen-transaction "
        "timeout + 2)",
    )
    parser.add_argument(
        "--postgres-url", help="server to create a throwaway database on (default FLOODWAY_TEST_POSTGRES_URL)"
    )
    parser.add_argument(
        "--pg-restart",
        help="shell command restarting PostgreSQL (default FLOODWAY_TEST_POSTGRES_RESTART, else pg_ctlcluster/pg_ctl)",
    )
    parser.add_argument(
        "--database-options",
        metavar="QUERY",
        help="appended to the chaos database URL, e.g. "
        "options=-cidle_in_transaction_session_timeout%%3D2000 (PostgreSQL)",
    )
    parser.add_argument("--timeout", type=float, default=840.0, help="fail if not drained after this (840 s)")
    parser.add_argument(
        "--strict-deliveries",
        action="store_true",
        help="fail on any repeated delivery, not only on more than the design's bound",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workdir", help="keep logs and the SQLite file here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and the database")
    parser.add_argument("--json", dest="json_out", help="write the figures to this file")
    parser.add_argument("--serve-destination", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_destination:
        serve_destination(args.rate, args.burst, Path(args.url_file))
        return 0
    # stopping the driver must stop what it started: SIGINT and SIGTERM unwind through the
    # clean-up (a shell starts background jobs with SIGINT ignored; restore it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = Config(
        backend=args.backend,
        jobs=args.jobs,
        workers=args.workers,
        rate=args.rate,
        burst=args.burst,
        concurrency=args.concurrency,
        lease=args.lease,
        kill_every=tuple(args.kill_every),
        stop_for=args.stop_for,
        postgres_url=args.postgres_url,
        pg_restart=args.pg_restart,
        timeout=args.timeout,
        database_options=args.database_options,
        strict_deliveries=args.strict_deliveries,
        seed=args.seed,
        workdir=args.workdir,
        keep=args.keep,
    )
    report = run_chaos(config, out=lambda line: print(line, flush=True))
    print(render(report), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
