"""Shaping across processes, on both backends: two processes debouncing the same keys at once
make one job per key, and a worker process runs each once with the last arguments."""

from __future__ import annotations

import subprocess
import sys
import time

from ..proc_helpers import SRC, LoadedApps, read_lines, wait_until

KEYS = 40
ROUNDS = 15

APP = """
app.close()
app = floodway.App({url!r})


@app.task(debounce="1.5s", debounce_key="{{contact_id}}")
async def refresh(contact_id: int, value: str) -> None:
    record("runs", f"{{contact_id}} {{value}}")
"""

ENQUEUER = """
import sys
sys.path.insert(0, {here!r})
import {module} as m
for r in range({rounds}):
    for k in range({keys}):
        m.refresh.enqueue({{"contact_id": k, "value": f"{tag}-{{r}}"}})
m.app.close()
"""


def test_two_processes_debouncing_the_same_keys_make_one_run_per_key(tmp_path, database_url, workers):
    apps = LoadedApps(tmp_path)
    try:
        name, module = apps.load(APP.format(url=database_url))
        scripts = []
        for tag in ("a", "b"):
            script = tmp_path / f"enqueue_{tag}.py"
            script.write_text(ENQUEUER.format(here=str(tmp_path), module=name, rounds=ROUNDS, keys=KEYS, tag=tag))
            scripts.append(script)
        env = {"PYTHONPATH": SRC}
        procs = [subprocess.Popen([sys.executable, str(s)], cwd=tmp_path, env=env) for s in scripts]
        for proc in procs:
            assert proc.wait(timeout=120) == 0
        # both streams folded into one pending job per key
        assert sum(module.app.store.count_jobs().values()) == KEYS
        # the last word is this process's: every key then runs once, with it
        for k in range(KEYS):
            module.refresh.enqueue({"contact_id": k, "value": "final"})
        assert sum(module.app.store.count_jobs().values()) == KEYS
        workers.start(name, "--concurrency", "20")
        runs = wait_until(
            lambda: (lines := read_lines(tmp_path, "runs")) and len(lines) >= KEYS and lines,
            "every key to run",
            workers=workers,
        )
        assert sorted(runs) == sorted(f"{k} final" for k in range(KEYS))
    finally:
        apps.close()


BATCH_APP = """
app.close()
app = floodway.App({url!r})


@app.task(batch=floodway.Batch(max_size=20, key="{{shop}}"))
async def upsert(ctx: floodway.Context, items: list[dict]) -> list[int]:
    shops = {{item["shop"] for item in items}}
    record("calls", f"{{os.getpid()}} {{len(items)}} {{len(shops)}}")
    for item in items:
        record("items", f"{{item['shop']}}:{{item['n']}}")
    await asyncio.sleep(0.01)
    return [item["n"] for item in items]
"""


def test_two_workers_claiming_batches_of_one_key_never_share_an_item(tmp_path, database_url, workers):
    apps = LoadedApps(tmp_path)
    try:
        name, module = apps.load(BATCH_APP.format(url=database_url))
        handles = module.upsert.enqueue_many([{"shop": f"s{n % 3}", "n": n} for n in range(600)])
        for label in ("w1", "w2"):
            workers.start(name, "--concurrency", "4", label=label)
        wait_until(
            lambda: (
                len(read_lines(tmp_path, "items")) >= 600 and all(h.status().value == "complete" for h in handles[-5:])
            ),
            "every item to run",
            workers=workers,
        )
        items = read_lines(tmp_path, "items")
        assert sorted(items) == sorted(f"s{n % 3}:{n}" for n in range(600))  # each once
        calls = [line.split() for line in read_lines(tmp_path, "calls")]
        assert all(int(size) <= 20 and shops == "1" for _, size, shops in calls)
        assert len({pid for pid, _, _ in calls}) == 2  # both workers ran batches
        assert [h.result(timeout=30) for h in handles] == list(range(600))
    finally:
        apps.close()


BULK_APP = """
app.close()
app = floodway.App({url!r})
app.queue("bulk", max_concurrency=None)
app.queue("other", max_concurrency=None)


@app.task(queue="bulk")
async def slow(n: int) -> None:
    await asyncio.sleep(0.2)


@app.task(queue="other")
async def quick(n: int) -> None:
    record("quick", str(n))
"""


def test_a_bulk_cancel_while_two_workers_run_stops_its_jobs_and_the_workers_go_on(tmp_path, database_url, workers):
    apps = LoadedApps(tmp_path)
    try:
        name, module = apps.load(BULK_APP.format(url=database_url))
        module.slow.enqueue_many([{"n": n} for n in range(3000)])
        for label in ("w1", "w2"):
            workers.start(name, "--concurrency", "10", label=label)
        store = module.app.store
        wait_until(lambda: store.count_jobs().get("running", 0) >= 10, "the workers to be busy", workers=workers)
        cancelled = module.app.bulk("cancel", queue="bulk")  # in chunks, while they claim
        cancel_returned = time.time()
        assert cancelled >= 2900
        module.quick.enqueue_many([{"n": n} for n in range(200)])
        wait_until(lambda: len(read_lines(tmp_path, "quick")) >= 200, "the workers to go on", workers=workers)
        wait_until(
            lambda: not ({"waiting", "running"} & {k for k, v in store.count_jobs().items() if v}),
            "every cancelled run to stop",
            workers=workers,
        )
        counts = store.count_jobs()
        assert counts["cancelled"] + counts["complete"] == 3200
        # a job cancelled before a worker took it never runs: every one that completed had
        # started before the cancel returned (the jobs the workers held while it ran in chunks,
        # asked to stop, may finish before their worker's next renewal sees the request). How
        # many that is depends on the machine's speed, not on the rule
        done = store.list_jobs(status=["complete"], queue="bulk", limit=3000)
        assert len(done) == 3000 - counts["cancelled"] < 300
        assert all(j.started_at is not None and j.started_at <= cancel_returned for j in done)
    finally:
        apps.close()
