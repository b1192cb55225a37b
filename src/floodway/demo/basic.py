"""The basic demo (``floodway demo``): enqueue a few kinds of jobs, run a worker, show results.

It shows, in one throwaway SQLite file: a plain job, a job that fails twice and is retried,
a delayed job, and a bulk enqueue of 200 jobs in one transaction — all run by one worker
started in this process.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

from rich.console import Console
from rich.table import Table

from floodway import App, Context, Handle, Retry, Status

BULK = 200


def build_app(database_url: str) -> App:
    app = App(database_url)

    @app.task
    def greet(name: str) -> str:
        return f"hello, {name}"

    @app.task(retry=Retry(attempts=3, backoff="fixed", initial="100ms"))
    def flaky(ctx: Context, fails: int) -> str:
        if ctx.attempt <= fails:  # a flaky API: the first `fails` calls break
            raise ConnectionError(f"API unavailable on attempt {ctx.attempt}")
        return f"worked on attempt {ctx.attempt}"

    @app.task
    def remind(note: str) -> str:
        return f"reminder: {note}"

    @app.task
    async def square(x: int) -> int:
        return x * x

    return app


def run(database_url: str | None = None, *, console: Console | None = None) -> int:
    """Run the demo; 0 when every job ended as expected, else 1."""
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="floodway-demo-") as tmp:
        app = build_app(database_url or f"sqlite:///{os.path.join(tmp, 'demo.db')}")
        try:
            return _demo(app, console)
        finally:
            app.close()


def _demo(app: App, console: Console) -> int:
    console.print(f"[bold]floodway demo[/] on {app.database_url}")
    started = time.monotonic()
    greeting = app.enqueue("greet", {"name": "Ada"})
    flaky = app.enqueue("flaky", {"fails": 2})
    delayed = app.enqueue("remind", {"note": "stand up"}, delay="1s")
    bulk = app.enqueue_many("square", [{"x": x} for x in range(BULK)])
    handles = [greeting, flaky, delayed, *bulk]
    console.print(f"enqueued {len(handles)} jobs; running a worker with concurrency 20 ...")

    worker = app.worker(concurrency=20, poll_interval="50ms")
    thread = threading.Thread(target=worker.run, name="floodway-demo-worker", daemon=True)
    thread.start()
    try:
        finished = _wait_until_final(handles, timeout=30.0)
    finally:
        worker.stop()
        thread.join(timeout=30.0)
    elapsed = time.monotonic() - started

    g, f, d = greeting.job(), flaky.job(), delayed.job()
    squares = [h.job() for h in bulk]
    bulk_done = sum(j.status is Status.COMPLETE for j in squares)
    bulk_right = all(j.result == j.args["x"] ** 2 for j in squares)
    waited = (d.started_at or 0) - d.created_at

    table = Table(title="results")
    for column in ("job", "status", "attempts", "result"):
        table.add_column(column)
    table.add_row("greet", g.status.value, str(g.attempt), repr(g.result))
    table.add_row("flaky (fails twice)", f.status.value, str(f.attempt), repr(f.result))
    table.add_row("remind (delay 1s)", d.status.value, str(d.attempt), f"{d.result!r} after {waited:.1f}s")
    table.add_row(
        f"square x {BULK} (bulk)",
        f"{bulk_done}/{BULK} complete",
        str(max(j.attempt for j in squares)),
        f"sum = {sum(j.result or 0 for j in squares)}",
    )
    console.print(table)

    ok = (
        finished
        and g.status is Status.COMPLETE
        and g.result == "hello, Ada"
        and f.status is Status.COMPLETE
        and f.attempt == 3
        and d.status is Status.COMPLETE
        and waited >= 0.9
        and bulk_done == BULK
        and bulk_right
    )
    if ok:
        console.print(f"[green]all {len(handles)} jobs finished as expected in {elapsed:.1f}s[/]")
        console.print("next: [bold]floodway --help[/], or see the README for writing your own tasks")
        return 0
    console.print(f"[red]some jobs did not finish as expected after {elapsed:.1f}s[/]")
    return 1


def _wait_until_final(handles: list[Handle], timeout: float) -> bool:
    """Poll until every job is complete, failed or cancelled; False if ``timeout`` passes first."""
    pending, deadline = list(handles), time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [h for h in pending if not h.status().is_final]
        if pending:
            time.sleep(0.05)
    return not pending
