#!/usr/bin/env python
"""Drain through a rate-limited API: how close floodway gets to the API's own quota.

    .venv/bin/python benchmarks/drain.py                      # the whole matrix (long: ~1 hour)
    .venv/bin/python benchmarks/drain.py --quick              # N = 5 s of quota per cell
    .venv/bin/python benchmarks/drain.py --styles leaky --rates 50 --decls declared --backends sqlite
    .venv/bin/python benchmarks/drain.py --styles changing,keyed --decls unknown -n 500
    .venv/bin/python benchmarks/drain.py --styles leaky --decls declared,high --peers celery
    .venv/bin/python benchmarks/drain.py --json out.json      # machine-readable results too
    .venv/bin/python benchmarks/drain.py --styles leaky --rates 1000 --decls declared --bare-peer 10000
    .venv/bin/python benchmarks/drain.py --bare --backends sqlite,postgres   # the cost per HTTP job

``--bare`` instead measures what floodway itself costs per HTTP job: N = 20,000 jobs, each one
POST through a declared limit that never binds (nor does the destination), two worker
processes x 50 slots, beside ``peers/bare_httpx.py``: two processes of one plain
``httpx.AsyncClient`` each, 50 requests in flight, the same N POSTs to the same kind of
destination. Reported: jobs (requests) per second, from the enqueue and from the first request,
the ratio to the bare client and the CPU per job of the processes doing the work.

The matrix: kind x R x declaration x backend, one cell at a time.

* kind — how the destination (``tests/destination.py``: Starlette + uvicorn in a thread of this
  process) enforces and announces R requests per second (see ``KINDS``): ``leaky`` (sliding
  second, 429 + ``Retry-After``), ``bare`` (429, no header), ``bucket`` (a leaky bucket of 5
  leaking R/s that says nothing but 429 + ``Retry-After: 1``), ``fixed-window`` (GitHub:
  ``X-RateLimit-*`` on every response, windows of 4 s), ``usage`` (Shopify REST: a bucket of
  40 leaking R/s, ``X-Shopify-Shop-Api-Call-Limit``), ``quota`` (4 s windows, 429 +
  ``Retry-After`` to the window's end), ``ietf`` (``RateLimit`` / ``RateLimit-Policy``, 4 s
  windows), ``changing`` (``leaky`` whose quota falls to R/2 after 5 s and comes back to R
  after 10 s) and ``keyed`` (``leaky``, each of two tenants its own quota of R, the limit
  keyed by tenant, N per tenant). ``changing+STYLE`` and ``keyed+STYLE`` combine them with
  another style.
* R — 50 and 200 per second.
* declaration — the floodway limit: ``declared`` = ``rate=R``; ``high`` = ``rate=2R``;
  ``unknown`` = ``app.limit("api", adaptive=True)``, no rate; ``adaptive4x`` =
  ``rate=4R, adaptive=True`` (every declared one with ``burst=5``; keyed cells add
  ``key="{tenant}"``). A declaration the library refuses (a ``ConfigError`` at import of the
  app) is reported as that cell's error and the run goes on.
* backend — ``sqlite`` (a fresh file) or ``postgres`` (a fresh database per cell on the server
  named by ``FLOODWAY_BENCH_POSTGRES_URL`` / ``FLOODWAY_TEST_POSTGRES_URL``, else the one
  ``scripts/start-postgres.sh`` starts).

Each cell: two ``floodway worker`` processes (concurrency 50 each), started and idle before
the clock starts, and N = 20 s of quota (N = 20 x R; ``-n`` sets N) jobs that each make ONE POST
with the idiomatic

    async with ctx.http(base_url=..., limit="api") as client:
        await client.post("/orders", json=..., headers={"Idempotency-Key": ctx.job_id})

The clock runs from just before ``enqueue_many`` to the last job's ``finished_at``. Reported:

* drain ÷ ideal, ideal = N / R (keyed: per tenant; changing: the time the schedule needs to
  accept N): goal ≤ 1.03 declared, ≤ 1.10 high / unknown / adaptive4x;
* 429 share: refused ÷ all requests the destination saw (403s included): goal ≤ 1 % declared,
  ≤ 3 % unknown;
* lost / duplicated: finished jobs whose request the destination never accepted / job ids
  accepted more than once (the destination does not deduplicate here): both must be 0;
* for a changing quota, per change, how many of the destination's windows it took until a
  window accepted the new rate within 5 % (or up to the destination's burst above it: a sliding
  window takes its rate plus its burst in any second) with at most 5 % of it refused (``↓3 ↑5``: 3
  windows after the fall, 5 after the rise; ``-`` = never before the next change or the end);
* the limit's rate(s) at the end, read from the store, and the load average of the machine;
  a cell still running after ``--max-ratio`` x ideal (default 3) is stopped and reported with
  its progress; ``≈`` is then R ÷ the accept rate, the ratio it was heading for.

``--peers celery`` adds the same drain done the documented Celery way for the ``leaky`` kind
(R and declared / high from the filters): Celery's per-worker ``rate_limit`` of R/2 (or R for
``high``) on each of two worker processes, a 429 raised and retried by ``autoretry_for`` with
``retry_backoff``, one POST per task with ``httpx``; the broker is kombu's SQLAlchemy transport
on a SQLite file. Celery runs from its own venv (``benchmarks/.peers/celery-venv``, made on
first use with ``python -m venv`` + ``pip install celery httpx sqlalchemy``); its half is
``peers/celery_drain.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: the floodway under test: this tree's, or another's (``FLOODWAY_BENCH_SRC``: a commit before, beside)
SRC = Path(os.environ.get("FLOODWAY_BENCH_SRC") or ROOT / "src")
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(SRC))

from destination import Destination, max_in_window, windows_to_reach  # noqa: E402

DEST_BURST = 5
DECLARED_BURST = 5
CONCURRENCY = 50  # per worker process
WORKERS = 2
TENANTS = ("t0", "t1")
QUOTA_SECONDS = 20  # N = this many seconds of quota
QUICK_SECONDS = 5
GOAL_RATIO = {"declared": 1.03, "high": 1.10, "unknown": 1.10, "adaptive4x": 1.10}
GOAL_429 = {"declared": 0.01, "high": 0.03, "unknown": 0.03, "adaptive4x": 0.03}
SETTLE_TOLERANCE = 0.05

STYLES = ("leaky", "bare", "bucket", "fixed-window", "usage", "quota", "ietf")
KINDS = STYLES + ("changing", "keyed")
DECLS = ("declared", "high", "unknown", "adaptive4x")
BACKENDS = ("sqlite", "postgres")
#: the old ``--modes`` names
MODE_ALIASES = {"declared": "declared", "adaptive": "adaptive4x"}

PEERS = HERE / ".peers"
CELERY_VENV = PEERS / "celery-venv"
CELERY_PY = CELERY_VENV / "bin" / "python"
CELERY_SCRIPT = HERE / "peers" / "celery_drain.py"
CELERY_PACKAGES = ["celery", "httpx", "sqlalchemy"]
CELERY_CONCURRENCY = 4  # prefork children per Celery worker process

APP_TEMPLATE = """
import floodway

app = floodway.App({url!r})
{limit}
DEST = {dest!r}


@app.task(limits=["api"])
async def order(ctx: floodway.Context, n: int):
    headers = {{"Idempotency-Key": ctx.job_id}}
    if ctx.tenant:
        headers["X-Tenant"] = ctx.tenant
    async with ctx.http(base_url=DEST, limit="api", timeout=60) as client:
        response = await client.post("/orders", json={{"id": n}}, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"destination answered {{response.status_code}}")
    return n
"""


# -- the cells ----------------------------------------------------------------------------------


@dataclass
class Kind:
    """How the destination enforces and announces its quota in one kind of cell."""

    name: str
    style: str
    options: dict[str, Any] = field(default_factory=dict)
    changing: bool = False
    keyed: bool = False

    def destination(self, rate: int) -> Destination:
        options = dict(self.options)
        if self.changing:
            options["rate_schedule"] = schedule(rate)
        return Destination(rate=rate, style=self.style, per_tenant=self.keyed, **options)

    @property
    def window(self) -> float:
        return self.options.get("window", 1.0)


#: each style's destination: sliding styles allow a burst of 5 over R per second, and the bare
#: bucket holds 5; the fixed windows are 4 s (a scaled-down hourly or per-minute quota);
#: Shopify's bucket holds 40
STYLE_OPTIONS: dict[str, dict[str, Any]] = {
    "leaky": {"burst": DEST_BURST},
    "bare": {"burst": DEST_BURST},
    "bucket": {"burst": DEST_BURST},
    "fixed-window": {"window": 4.0},
    "usage": {"burst": 40},
    "quota": {"window": 4.0},
    "ietf": {"window": 4.0},
}


def schedule(rate: int) -> list[tuple[float, float]]:
    """The changing quota: R, R/2 from 5 s after the first request, R again from 10 s."""
    return [(5.0, rate / 2), (10.0, float(rate))]


def parse_kind(name: str) -> Kind:
    """``leaky``, ``changing`` (= ``changing+leaky``), ``keyed+usage``, ``changing+keyed+ietf``..."""
    parts = name.split("+")
    mods = {p for p in parts if p in ("changing", "keyed")}
    styles = [p for p in parts if p not in ("changing", "keyed")]
    unknown = [p for p in styles if p not in STYLES]
    if unknown or len(styles) > 1 or len(parts) != len(mods) + len(styles):
        raise SystemExit(f"drain.py: unknown kind {name!r} (kinds: {', '.join(KINDS)}, or changing+STYLE, keyed+STYLE)")
    style = styles[0] if styles else "leaky"
    return Kind(name, style, dict(STYLE_OPTIONS[style]), "changing" in mods, "keyed" in mods)


def limit_line(decl: str, rate: int, keyed: bool) -> str:
    key = ', key="{tenant}"' if keyed else ""
    if decl == "declared":
        return f'app.limit("api", rate="{rate}/s", burst={DECLARED_BURST}{key})'
    if decl == "high":
        return f'app.limit("api", rate="{2 * rate}/s", burst={DECLARED_BURST}{key})'
    if decl == "unknown":
        return f'app.limit("api", adaptive=True{key})'
    if decl == "nonbinding":  # drain.py --bare: a limit every job holds, far above the load
        return f'app.limit("api", rate="{NONBINDING}/s", burst=1000{key})'
    if decl == "adaptive4x":
        return f'app.limit("api", rate="{4 * rate}/s", burst={DECLARED_BURST}, adaptive=True{key})'
    raise SystemExit(f"drain.py: unknown declaration {decl!r} (one of {', '.join(DECLS)})")


def ideal_seconds(kind: Kind, rate: int, n: int) -> float:
    """How long the destination's quota alone needs to accept ``n`` requests."""
    per_budget = n / len(TENANTS) if kind.keyed else n
    if not kind.changing:
        return per_budget / rate
    t, current, left = 0.0, float(rate), per_budget
    for at, new in schedule(rate):
        if left <= current * (at - t):
            break
        left -= current * (at - t)
        t, current = at, new
    return t + left / current


# -- backends -----------------------------------------------------------------------------------


def postgres_server() -> str:
    url = os.environ.get("FLOODWAY_BENCH_POSTGRES_URL") or os.environ.get("FLOODWAY_TEST_POSTGRES_URL")
    if url:
        return url
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "start-postgres.sh")], check=True, capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("export FLOODWAY_TEST_POSTGRES_URL="):
            url = line.split("=", 1)[1].strip().strip("'\"")
            os.environ["FLOODWAY_BENCH_POSTGRES_URL"] = url
            return url
    raise SystemExit("drain.py: scripts/start-postgres.sh printed no URL")


class Database:
    """One cell's store: a SQLite file in the cell's directory, or a fresh PostgreSQL database."""

    def __init__(self, backend: str, tmp: Path):
        self.backend = backend
        if backend == "sqlite":
            self.url = f"sqlite:///{tmp / 'jobs.db'}"
            return
        import psycopg

        self.server = postgres_server()
        self.name = f"fw_drain_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}" TEMPLATE template0')
        p = urlsplit(self.server)
        self.url = urlunsplit((p.scheme, p.netloc, "/" + self.name, p.query, p.fragment))

    def rows(self, sql: str) -> list[tuple]:
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.url[len("sqlite:///") :])
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.url) as conn:
            return conn.execute(sql).fetchall()

    def drop(self) -> None:
        if self.backend == "postgres":
            import psycopg

            with psycopg.connect(self.server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# -- processes ----------------------------------------------------------------------------------


def _start_worker(tmp: Path, module: str, label: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp), str(SRC), env.get("PYTHONPATH", "")) if p)
    env.pop("FLOODWAY_DATABASE_URL", None)
    env.pop("FLOODWAY_APP", None)
    log = open(tmp / f"{label}.log", "wb")
    profile = os.environ.get("FLOODWAY_BENCH_PROFILE")
    if profile and label == "w0":  # one worker under cProfile (profile_worker.py)
        command = [sys.executable, str(HERE / "profile_worker.py"), str(Path(profile) / f"{label}.prof")]
    else:
        command = [sys.executable, "-m", "floodway"]
    try:
        return subprocess.Popen(
            [
                *command,
                "--app",
                f"{module}:app",
                "worker",
                "--concurrency",
                str(CONCURRENCY),
                "--poll-interval",
                "50ms",
            ],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def _backend_cpu_seconds(db: Database) -> float:
    """User + system CPU of the server processes connected to the cell's PostgreSQL database
    now (the workers' pooled connections; a connection closed earlier is not counted), read
    from /proc: the server runs on this machine."""
    pids = [row[0] for row in db.rows(f"SELECT pid FROM pg_stat_activity WHERE datname = '{db.name}'")]
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> float:
    """Signal, wait (SIGKILL after ``timeout``), and return the process's CPU seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return float("nan")
        if pid:
            proc.returncode = 0
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            deadline = float("inf")
        time.sleep(0.05)


#: a drain samples its workers' resident memory each time this many more jobs have finished
RSS_EVERY = 10_000
#: how often a drain of up to POLL_SCALE jobs reads its progress (its end is read from the
#: jobs afterwards); a larger drain reads it proportionally less often: each read is a COUNT
#: over every job, so at a fixed interval its server CPU per job would grow with N (on
#: PostgreSQL, 60-80 ms per read at 100,000 jobs: 0.6 ms per job every 0.25 s, a third of the
#: server's whole CPU per job), a cost of the harness and none of floodway's or the bare client's
POLL_EVERY = float(os.environ.get("FLOODWAY_BENCH_POLL", "0.25"))
POLL_SCALE = 25_000


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _limit_state(app) -> dict[str, Any]:
    """The limit as the store holds it at the end: its spec and each key's numbers."""
    infos = {i.spec.name: i for i in app.store.list_limits()}
    info = infos.get("api")
    if info is None:
        return {}
    spec = info.spec
    out: dict[str, Any] = {
        "rate_per_s": spec.rate.per_second if spec.rate else None,
        "adaptive": getattr(spec, "adaptive", None),
        "keys": {},
    }
    for key in info.keys:
        values = asdict(key) if hasattr(key, "__dataclass_fields__") else dict(vars(key))
        out["keys"][key.key] = {k: v for k, v in values.items() if isinstance(v, (int, float, str)) or v is None}
    return out


def _key_rates(state: dict[str, Any]) -> list[float]:
    """Per-key learned rates, if the store reports any (a numeric field naming a rate)."""
    rates = []
    for values in state.get("keys", {}).values():
        for name, value in values.items():
            if isinstance(value, float) and "rate" in name and name != "rate_limited":
                rates.append(value)
                break
    return rates


# -- one floodway cell --------------------------------------------------------------------------


def run_cell(kind: Kind, rate: int, decl: str, backend: str, n: int, keep: bool, max_ratio: float) -> dict:
    result: dict[str, Any] = {
        "system": "floodway",
        "kind": kind.name,
        "style": kind.style,
        "rate": rate,
        "decl": decl,
        "backend": backend,
        "n": n,
        "ideal_seconds": ideal_seconds(kind, rate, n),
    }
    tmp = Path(tempfile.mkdtemp(prefix="floodway-drain-"))
    module = f"drain_app_{uuid.uuid4().hex[:8]}"
    dest = db = app = None
    procs: list[subprocess.Popen] = []
    cpu = [float("nan")] * WORKERS
    try:
        db = Database(backend, tmp)
        dest = kind.destination(rate).start()
        (tmp / f"{module}.py").write_text(
            textwrap.dedent(APP_TEMPLATE.format(url=db.url, limit=limit_line(decl, rate, kind.keyed), dest=dest.url))
        )
        sys.path.insert(0, str(tmp))
        try:
            app = __import__(module).app
            app.store  # create and migrate the database before anything is timed
        except Exception as exc:  # noqa: BLE001 - a declaration the library refuses is a result
            result["error"] = f"{type(exc).__name__}: {exc}"
            return result
        procs = [_start_worker(tmp, module, f"w{i}") for i in range(WORKERS)]
        deadline = time.monotonic() + 60
        while len([w for w in app.store.list_workers() if w.stopped_at is None]) < WORKERS:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("workers did not start: " + (tmp / "w0.log").read_text()[-2000:])
            time.sleep(0.05)
        load_before = os.getloadavg()[0]
        t0 = time.time()
        if kind.keyed:
            handles = []
            chunk = max(50, rate)
            per = n // len(TENANTS)
            for start in range(0, per, chunk):
                for tenant in TENANTS:  # interleaved, as tenants' work arrives
                    handles += app.enqueue_many(
                        "order", [{"n": i} for i in range(start, min(per, start + chunk))], tenant=tenant
                    )
        else:
            handles = app.enqueue_many("order", [{"n": i} for i in range(n)])
        result["enqueue_seconds"] = time.time() - t0
        ids = {h.id for h in handles}
        total = len(ids)
        give_up = t0 + max(60.0, max_ratio * result["ideal_seconds"])
        rss: dict[int, list[float]] = {}  # the workers' resident memory (MB) every RSS_EVERY jobs
        polls = []  # the wall time of each progress read: a COUNT over every job, run by the server
        while True:
            polled = time.perf_counter()
            counts = app.store.count_jobs()
            polls.append(time.perf_counter() - polled)
            finished_now = counts["complete"] + counts["failed"] + counts["cancelled"]
            if finished_now // RSS_EVERY * RSS_EVERY not in rss and finished_now >= RSS_EVERY:
                rss[finished_now // RSS_EVERY * RSS_EVERY] = [_rss_mb(p.pid) for p in procs]
            if finished_now >= total:
                break
            if time.time() > give_up:
                result["stopped_after"] = time.time() - t0
                break
            time.sleep(POLL_EVERY * max(1.0, n / POLL_SCALE))
        result["progress_reads"] = (len(polls), round(sum(polls), 2))
        result["load_avg"] = (load_before, os.getloadavg()[0])
        result["rss_mb"] = rss
        if backend == "postgres":
            result["server_cpu_ms_per_job"] = 1000 * _backend_cpu_seconds(db) / n
        for i, p in enumerate(procs):
            cpu[i] = _stop_worker(p)
        dest.stop()

        finished = db.rows("SELECT MAX(finished_at) FROM jobs WHERE status = 'complete'")[0][0]
        ends = sorted(row[0] for row in db.rows("SELECT finished_at FROM jobs WHERE status = 'complete'"))
        fifth = len(ends) // 5
        if fifth > 1:  # the rate over each fifth of the drain: whether it falls as the drain goes on
            chunks = [ends[i * fifth : (i + 1) * fifth] for i in range(5)]
            result["rate_by_fifth"] = [round(len(c) / (c[-1] - c[0]), 1) for c in chunks if c[-1] > c[0]]
        claims = dict(db.rows("SELECT id, started_at FROM jobs WHERE started_at IS NOT NULL"))
        statuses = dict(db.rows("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
        attempts = dict(db.rows("SELECT attempt, COUNT(*) FROM jobs GROUP BY attempt"))
        final_ids = {
            row[0] for row in db.rows("SELECT id FROM jobs WHERE status IN ('complete', 'failed', 'cancelled')")
        }
        rescheduled = db.rows(
            "SELECT COUNT(*) FROM job_events WHERE from_status = 'running' AND to_status = 'scheduled'"
        )[0][0]
        state = _limit_state(app)

        records = dest.records()
        accepted = [r for r in records if r.status == 200]
        refused = [r for r in records if r.status != 200]
        seen = Counter(r.idempotency_key for r in accepted)
        lags = [r.at - claims[r.idempotency_key] for r in accepted if r.idempotency_key in claims]
        accept_times = sorted(r.at for r in accepted)
        stopped = "stopped_after" in result
        drain = result["stopped_after"] if stopped else (finished - t0 if finished else float("nan"))
        result.update(
            {
                "jobs": total,
                "drain_seconds": drain,
                "ratio": drain / result["ideal_seconds"],
                "requests": len(records),
                "refused": len(refused),
                "refused_by_status": dict(Counter(r.status for r in refused)),
                "share_429": len(refused) / len(records) if records else float("nan"),
                "done": len(final_ids),
                "unfinished": total - len(final_ids),
                "lost": len(final_ids - set(seen)),
                "duplicated": sum(1 for c in seen.values() if c > 1),
                "unknown_keys": len(set(seen) - ids),
                "statuses": statuses,
                "attempts": attempts,
                "rescheduled": rescheduled,
                "accept_rate": (len(accept_times) - 1) / (accept_times[-1] - accept_times[0])
                if len(accept_times) > 1
                else 0,
                "max_accepted_in_window": max_in_window(accept_times, kind.window),
                "first_accept_after": accept_times[0] - t0 if accept_times else float("nan"),
                "lag_p50": _pct(lags, 0.5),
                "lag_p95": _pct(lags, 0.95),
                "worker_cpu_seconds": sum(cpu),
                "cpu_ms_per_job": 1000 * sum(cpu) / max(len(final_ids), 1),
                "limit": state,
                "final_rate_per_s": state.get("rate_per_s"),
                "key_rates": _key_rates(state),
                "accepted_per_second": dest.stats()["accepted_per_second"],
                "refused_per_second": dest.stats()["refused_per_second"],
            }
        )
        if kind.changing:
            result["settle_windows"] = settle_windows(dest, kind, drain + t0)
        if kind.keyed:
            result["per_tenant_accepted"] = dict(Counter(r.tenant for r in accepted))
        return result
    except Exception as exc:  # noqa: BLE001 - one broken cell must not stop the matrix
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        for i, p in enumerate(procs):
            if p.returncode is None:
                cpu[i] = _stop_worker(p)
        if dest is not None:
            dest.stop()
        if app is not None:
            app.close()
        sys.modules.pop(module, None)
        if str(tmp) in sys.path:
            sys.path.remove(str(tmp))
        if db is not None:
            try:
                db.drop()
            except Exception as exc:  # noqa: BLE001
                print(f"drain.py: could not drop {getattr(db, 'name', '?')}: {exc}", file=sys.stderr)
        if keep:
            result["dir"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def settle_windows(dest: Destination, kind: Kind, end: float) -> list[dict[str, Any]]:
    """For each change of the quota: the destination's windows it took to settle on it."""
    records = dest.records()
    accepted = [r.at for r in records if r.status == 200]
    refused = [r.at for r in records if r.status != 200]
    changes = list(dest.rate_changes)
    out = []
    for i, (at, new_rate) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else end
        budgets = len(TENANTS) if kind.keyed else 1
        # a sliding window takes its rate plus its burst in any second: a window at that is on it
        extra = kind.options.get("burst", 0) * budgets if kind.style in ("leaky", "bare") else 0
        out.append(
            {
                "at": at - (dest.first_request or at),
                "rate": new_rate,
                "windows": windows_to_reach(
                    accepted, refused, at, new_rate * budgets, kind.window, SETTLE_TOLERANCE, end=until, extra=extra
                ),
            }
        )
    return out


# -- the Celery peer ----------------------------------------------------------------------------

# -- the cost per HTTP job (--bare) ----------------------------------------------------------------

#: the rate of the destination and of the declared limit in ``--bare``: neither ever binds
NONBINDING = 1_000_000
BARE_N = 20_000
BARE_SCRIPT = HERE / "peers" / "bare_httpx.py"


def run_bare_client(n: int) -> dict:
    """The same N POSTs from WORKERS processes of one plain httpx client each, CONCURRENCY in
    flight per process, against a destination like the floodway cell's."""
    dest = parse_kind("leaky").destination(NONBINDING).start()
    try:
        shares = [n // WORKERS + (1 if i < n % WORKERS else 0) for i in range(WORKERS)]
        procs = [
            subprocess.Popen(
                [sys.executable, str(BARE_SCRIPT), dest.url, str(k), str(CONCURRENCY)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for k in shares
        ]
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"bare_httpx.py exited {p.returncode}")
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        dest.stop()
    seconds = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    cpu = sum(o["cpu_seconds"] for o in outs)
    return {
        "system": "bare httpx",
        "n": n,
        "seconds": seconds,
        "per_second": n / seconds,
        "ok": sum(o["ok"] for o in outs),
        "errors": sum(o.get("errors", 0) for o in outs),
        "cpu_ms_per_request": 1000 * cpu / n,
    }


def run_bare(backends: list[str], n: int, keep: bool) -> list[dict]:
    """floodway's HTTP jobs through a limit that never binds, beside the bare client."""
    rows = []
    for backend in backends:
        r = run_cell(parse_kind("leaky"), NONBINDING, "nonbinding", backend, n, keep, max_ratio=1e9)
        if "error" not in r:
            from_first = r["drain_seconds"] - r["first_accept_after"]
            r.update({"per_second": n / r["drain_seconds"], "per_second_from_first_request": n / from_first})
        rows.append(r)
        # each cell's memory as soon as it is known: the bare client's run comes after
        print(f"floodway {backend}: {json.dumps(r.get('rss_mb') or r.get('error'))}", file=sys.stderr, flush=True)
    rows.append(run_bare_client(n))
    return rows


def print_bare(rows: list[dict]) -> None:
    bare = next(r for r in rows if r["system"] == "bare httpx")
    print("| system | backend | jobs (requests) / s | from the first request | ÷ bare httpx | CPU per job |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["system"] == "bare httpx":
            print(
                f"| bare httpx ({WORKERS} processes x {CONCURRENCY} in flight) | - | {r['per_second']:,.0f} | "
                f"{r['per_second']:,.0f} | 1.00 | {r['cpu_ms_per_request']:.2f} ms |"
            )
        elif "error" in r:
            print(f"| floodway | {r['backend']} | error: {r['error']} | | | |")
        else:
            print(
                f"| floodway ({WORKERS} workers x {CONCURRENCY}) | {r['backend']} | {r['per_second']:,.0f} | "
                f"{r['per_second_from_first_request']:,.0f} | "
                f"{r['per_second_from_first_request'] / bare['per_second']:.2f} | {r['cpu_ms_per_job']:.2f} ms |"
            )
    for r in rows:
        if r.get("server_cpu_ms_per_job") is not None:
            print(f"\nfloodway {r['backend']}: server CPU per job {r['server_cpu_ms_per_job']:.2f} ms")
        if r.get("rate_by_fifth"):
            print(f"floodway {r['backend']}: jobs/s in each fifth of the drain: {r['rate_by_fifth']}")
    for r in rows:
        if r.get("rss_mb"):
            samples = ", ".join(
                f"{done:,} jobs: {' / '.join(f'{mb:.0f}' for mb in mbs)} MB"
                for done, mbs in sorted(r["rss_mb"].items())
            )
            print(f"\nfloodway {r['backend']}, each worker's resident memory after {samples}")


def ensure_celery_venv() -> None:
    if CELERY_PY.exists():
        probe = subprocess.run([str(CELERY_PY), "-c", "import celery, httpx, sqlalchemy"], capture_output=True)
        if probe.returncode == 0:
            return
    print(
        f"creating the Celery venv in {CELERY_VENV} (python -m venv + pip install {' '.join(CELERY_PACKAGES)}) ...",
        file=sys.stderr,
        flush=True,
    )
    PEERS.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    if not CELERY_PY.exists():
        subprocess.run([base, "-m", "venv", str(CELERY_VENV)], check=True)
    subprocess.run([str(CELERY_PY), "-m", "pip", "install", "--quiet", *CELERY_PACKAGES], check=True)


def _celery(mode: str, tmp: Path, dest: str, rate_limit: str, *extra: str) -> list[str]:
    return [
        str(CELERY_PY),
        str(CELERY_SCRIPT),
        mode,
        "--dir",
        str(tmp),
        "--dest",
        dest,
        "--rate-limit",
        rate_limit,
        *extra,
    ]


def _celery_json(cmd: list[str]) -> dict:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd[1:3])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a Celery worker's process group (its prefork children)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_celery_cell(rate: int, decl: str, n: int, keep: bool, max_ratio: float) -> dict:
    kind = parse_kind("leaky")
    per_worker = rate / WORKERS * (2 if decl == "high" else 1)
    rate_limit = f"{per_worker:g}/s"
    result: dict[str, Any] = {
        "system": "celery",
        "kind": "leaky",
        "style": "leaky",
        "rate": rate,
        "decl": decl,
        "backend": "celery",
        "n": n,
        "ideal_seconds": n / rate,
        "celery_rate_limit": f"{rate_limit} x {WORKERS} workers",
    }
    tmp = Path(tempfile.mkdtemp(prefix="celery-drain-"))
    dest = kind.destination(rate).start()
    procs: list[subprocess.Popen] = []
    cpu = [float("nan")] * WORKERS
    try:
        # the workers are started on an empty queue, one after the other (two creating the
        # broker's tables in one SQLite file at once can leave one of them dead or stuck), and
        # the clock starts once both said ready
        for i in range(WORKERS):
            log = open(tmp / f"celery-w{i}.log", "wb")
            procs.append(
                subprocess.Popen(
                    _celery(
                        "worker", tmp, dest.url, rate_limit, "--name", f"w{i}", "--concurrency", str(CELERY_CONCURRENCY)
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
            deadline = time.monotonic() + 60
            while not (tmp / f"ready-w{i}").exists():
                if time.monotonic() > deadline or procs[i].poll() is not None:
                    raise RuntimeError(
                        f"celery worker w{i} did not start: " + (tmp / f"celery-w{i}.log").read_text()[-2000:]
                    )
                time.sleep(0.1)
        load_before = os.getloadavg()[0]
        t0 = time.time()
        enq = _celery_json(_celery("enqueue", tmp, dest.url, rate_limit, "-n", str(n)))
        result["enqueue_seconds"] = enq["seconds"]
        result["celery_version"] = enq.get("celery_version")
        give_up = t0 + max(60.0, max_ratio * n / rate)
        while True:
            res = _celery_json(_celery("results", tmp, dest.url, rate_limit))
            if res["success"] + res["failure"] >= n:
                break
            if time.time() > give_up:
                result["stopped_after"] = time.time() - t0
                break
            time.sleep(0.5)
        result["load_avg"] = (load_before, os.getloadavg()[0])
        for i, p in enumerate(procs):
            # the whole process group: the prefork children too
            os.killpg(p.pid, signal.SIGTERM)
            cpu[i] = _stop_worker(p, sig=signal.SIGTERM)
            _kill_group(p.pid)
        dest.stop()
        records = dest.records()
        accepted = [r for r in records if r.status == 200]
        refused = [r for r in records if r.status != 200]
        seen = Counter(r.idempotency_key for r in accepted)
        accept_times = sorted(r.at for r in accepted)
        stopped = "stopped_after" in result
        drain = result["stopped_after"] if stopped else res["last_done"] - t0
        done = res["success"] + res["failure"]
        result.update(
            {
                "jobs": n,
                "drain_seconds": drain,
                "ratio": drain / (n / rate),
                "requests": len(records),
                "refused": len(refused),
                "refused_by_status": dict(Counter(r.status for r in refused)),
                "share_429": len(refused) / len(records) if records else float("nan"),
                "done": done,
                "unfinished": n - done,
                # a task that gave up (max_retries spent) never reached the destination
                "lost": max(0, done - len(seen)),
                "failed": res["failure"],
                "duplicated": sum(1 for c in seen.values() if c > 1),
                "accept_rate": (len(accept_times) - 1) / (accept_times[-1] - accept_times[0])
                if len(accept_times) > 1
                else 0,
                "max_accepted_in_window": max_in_window(accept_times, kind.window),
                "worker_cpu_seconds": sum(cpu),
                "cpu_ms_per_job": 1000 * sum(cpu) / max(done, 1),
                "key_rates": [],
                "final_rate_per_s": None,
                "accepted_per_second": dest.stats()["accepted_per_second"],
                "refused_per_second": dest.stats()["refused_per_second"],
            }
        )
        return result
    except Exception as exc:  # noqa: BLE001
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        for p in procs:
            if p.returncode is None:
                _kill_group(p.pid)
                p.wait()
        dest.stop()
        if keep:
            result["dir"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# -- the report ---------------------------------------------------------------------------------

HEADER = (
    "| kind | R | declaration | backend | drain / ideal | ratio | 429 share (count) | lost / dup "
    "| accept rate | limit at end | windows to settle | goals |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _settle(r: dict) -> str:
    if "settle_windows" not in r:
        return ""
    arrows = []
    for change, before in zip(r["settle_windows"], [r["rate"]] + [c["rate"] for c in r["settle_windows"]]):
        arrow = "↓" if change["rate"] < before else "↑"
        arrows.append(f"{arrow}{change['windows'] if change['windows'] is not None else '-'}")
    return " ".join(arrows)


def _limit_at_end(r: dict) -> str:
    if r.get("system") == "celery":
        return r.get("celery_rate_limit", "")
    parts = []
    if r.get("final_rate_per_s") is not None:
        parts.append(f"{r['final_rate_per_s']:.1f}/s")
    if r.get("key_rates"):
        parts.append("keys " + ", ".join(f"{x:.1f}/s" for x in r["key_rates"]))
    return "; ".join(parts) or "-"


def fmt(r: dict) -> str:
    decl = r["decl"]
    backend = "celery, sqla+sqlite broker" if r["system"] == "celery" else r["backend"]
    kind = r["kind"]
    if "error" in r:
        return f"| {kind} | {r['rate']}/s | {decl} | {backend} | error: {r['error'][:160]} | | | | | | | |"
    goal = GOAL_RATIO[decl]
    verdicts = [f"ratio {'met' if r['ratio'] <= goal and not r['unfinished'] else 'not met'} (≤ {goal:.2f})"]
    if decl in GOAL_429:
        verdicts.append(
            f"429s {'met' if r['share_429'] <= GOAL_429[decl] else 'not met'} (≤ {100 * GOAL_429[decl]:.0f} %)"
        )
    if r["lost"] or r["duplicated"]:
        verdicts.append("RECORDS LOST OR DUPLICATED")
    if r["unfinished"]:
        drain = f"stopped at {r['drain_seconds']:.0f} s / {r['ideal_seconds']:.0f} s, {r['done']} of {r['jobs']} done"
        heading = (
            f" (≈ {r['rate'] / r['accept_rate']:.1f})"
            if r["accept_rate"] and not (kind.startswith("keyed") or "+keyed" in kind)
            else ""
        )
        ratio = f"> {r['ratio']:.1f}{heading}"
    else:
        drain = f"{r['drain_seconds']:.1f} s / {r['ideal_seconds']:.1f} s"
        ratio = f"{r['ratio']:.2f}"
    return (
        f"| {kind} | {r['rate']}/s | {decl} | {backend} | {drain} | **{ratio}** "
        f"| {100 * r['share_429']:.2f} % ({r['refused']}) | {r['lost']} / {r['duplicated']} "
        f"| {r['accept_rate']:.1f}/s | {_limit_at_end(r)} | {_settle(r)} | {'; '.join(verdicts)} |"
    )


def _csv(value: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    if allowed is not None:
        bad = [x for x in items if x not in allowed]
        if bad:
            raise SystemExit(f"drain.py: unknown {what} {', '.join(bad)} (one of {', '.join(allowed)})")
    return items


def _other_floodways() -> list[str]:
    """Entries of ``PYTHONPATH`` holding a floodway package other than the one under test: the
    workers would not run them (SRC comes first on their path), so an A/B made that way
    compares a tree with itself."""
    found = []
    for entry in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        path = Path(entry).resolve()
        if (path / "floodway" / "__init__.py").exists() and path != SRC.resolve():
            found.append(str(path))
    return found


def main(argv: list[str] | None = None) -> int:
    for other in _other_floodways():
        print(
            f"drain.py: PYTHONPATH names another floodway ({other}); the workers run {SRC}. "
            "Set FLOODWAY_BENCH_SRC to measure another tree.",
            file=sys.stderr,
        )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-n",
        type=int,
        default=None,
        help=f"jobs per cell (default {QUOTA_SECONDS} s of quota: {QUOTA_SECONDS} x R; keyed: per tenant)",
    )
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_SECONDS} s of quota")
    parser.add_argument(
        "--styles",
        default=",".join(KINDS),
        help=f"kinds of destination (default all: {','.join(KINDS)}; also changing+STYLE, keyed+STYLE)",
    )
    parser.add_argument("--rates", default="50,200")
    parser.add_argument("--decls", default=None, help=f"declarations (default all: {','.join(DECLS)})")
    parser.add_argument("--modes", default=None, help="the old name of --decls: declared, adaptive (= adaptive4x)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--peers", default="", help="peer systems to run too: celery")
    parser.add_argument("--no-floodway", action="store_true", help="run only the peers")
    parser.add_argument(
        "--bare-peer",
        type=int,
        default=0,
        metavar="N",
        help="after the cells, N POSTs from the bare httpx client (peers/bare_httpx.py) with no "
        "limit: whether the destination and a plain client can reach R on this machine at all",
    )
    parser.add_argument("--keep", action="store_true", help="keep each cell's directory (db, logs)")
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=3.0,
        help="stop a cell once it has taken this many times its ideal (default 3)",
    )
    parser.add_argument("--json", metavar="PATH", default=None)
    parser.add_argument(
        "--bare",
        action="store_true",
        help=f"instead of the matrix: the cost per HTTP job, N (default {BARE_N:,}) jobs through "
        f"a limit that never binds, beside a bare httpx client (--backends applies)",
    )
    args = parser.parse_args(argv)
    if args.bare:
        rows = run_bare(_csv(args.backends, BACKENDS, "backend"), args.n or BARE_N, args.keep)
        for r in rows:
            print(
                json.dumps(
                    {k: v for k, v in r.items() if k not in ("accepted_per_second", "refused_per_second", "limit")},
                    default=str,
                ),
                flush=True,
            )
        print_bare(rows)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
        return 0

    kinds = [parse_kind(k) for k in _csv(args.styles, None, "kind")]
    rates = [int(r) for r in _csv(args.rates, None, "rate")]
    if args.decls:
        decls = _csv(args.decls, DECLS, "declaration")
    elif args.modes:
        decls = [MODE_ALIASES.get(m, m) for m in _csv(args.modes, tuple(MODE_ALIASES), "mode")]
    else:
        decls = list(DECLS)
    backends = _csv(args.backends, BACKENDS, "backend")
    peers = _csv(args.peers, ("celery",), "peer")
    seconds = QUICK_SECONDS if args.quick else QUOTA_SECONDS

    def jobs(kind: Kind, rate: int) -> int:
        per = args.n or seconds * rate
        return per * len(TENANTS) if kind.keyed else per

    print(
        f"floodway drain benchmark: N = {'%d' % args.n if args.n else f'{seconds} s of quota'} per cell "
        f"(keyed: per tenant), {WORKERS} worker processes x concurrency {CONCURRENCY}, "
        f"floodway limit burst {DECLARED_BURST}",
        flush=True,
    )
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, load average at start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = []

    def done(r: dict) -> None:
        results.append(r)
        if "error" in r:
            print(f"# {r['kind']} R={r['rate']} {r['decl']} {r['backend']}: {r['error']}", flush=True)
        slim = {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in r.items()
            if k not in ("accepted_per_second", "refused_per_second", "limit")
        }
        print(json.dumps(slim, default=str), flush=True)

    if not args.no_floodway:
        for kind in kinds:
            for rate in rates:
                for decl in decls:
                    for backend in backends:
                        done(run_cell(kind, rate, decl, backend, jobs(kind, rate), args.keep, args.max_ratio))
    if "celery" in peers:
        ensure_celery_venv()
        for rate in rates:
            for decl in [d for d in decls if d in ("declared", "high")] or ["declared"]:
                done(run_celery_cell(rate, decl, args.n or seconds * rate, args.keep, args.max_ratio))
    if args.bare_peer:
        bare = run_bare_client(args.bare_peer)
        results.append(bare)
        print(json.dumps(bare, default=str), flush=True)
    print()
    print(HEADER)
    for r in results:
        if r["system"] == "bare httpx":
            continue
        print(fmt(r))
    if args.bare_peer:
        print(
            f"\nbare httpx ({WORKERS} processes x {CONCURRENCY} in flight, no limit), same run: "
            f"{bare['per_second']:,.0f} requests/s ({bare['n']:,} in {bare['seconds']:.1f} s, "
            f"{bare['cpu_ms_per_request']:.2f} ms CPU per request)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
