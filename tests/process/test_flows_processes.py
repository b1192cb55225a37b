"""Flows across real worker processes: a SIGKILL mid-flow, and kind limits held across two
processes."""

from __future__ import annotations

import signal

from ..proc_helpers import load_app_module, read_gauge, read_lines, wait_until, write_app

FLOW_APP = """
@app.task(retry=3)
async def order(ctx: floodway.Context, n: int):
    async def step(name):
        record("steps.txt", f"{name} {ctx.attempt}")
        if name == "ship" and ctx.attempt == 1:
            touch("in-ship")
            await wait_for_file("never", cap=60)  # the worker is SIGKILLed here
        return name

    for name in ("validate", "charge", "ship", "notify"):
        await ctx.step(name, step, name, kind="data_transform" if name == "validate" else "http_request",
                       throttle={"rate": "100/s"})
    return "shipped"
"""

GAUGED_APP = """
@app.task
async def call(ctx: floodway.Context, n: int):
    async def work():
        gauge_enter("kind.gauge")
        try:
            await asyncio.sleep(0.05)
        finally:
            gauge_exit("kind.gauge")

    await ctx.step("call", work, kind="http_request", critical=True, throttle={"rate": "1000/s"})
"""

OPTS = ["--poll-interval", "20ms", "--grace", "1s"]


def test_a_flow_killed_mid_step_resumes_without_repeating_finished_steps(tmp_path, workers):
    name = write_app(tmp_path, FLOW_APP)
    module = load_app_module(tmp_path, name)
    job_id = module.app.enqueue("order", {"n": 1}).id
    first = workers.start(name, "--lease", "1s", *OPTS, label="doomed")
    wait_until(lambda: (tmp_path / "in-ship").exists(), "the flow to reach its third step", workers=workers)
    first.signal(signal.SIGKILL)
    workers.start(name, "--lease", "1s", *OPTS, label="rescuer")
    wait_until(
        lambda: module.app.store.get_job(job_id).status.value == "complete",
        "the rescued flow to complete",
        workers=workers,
    )
    runs = read_lines(tmp_path, "steps.txt")
    # validate and charge ran once (attempt 1); ship started twice; notify once, on attempt 2
    assert runs == ["validate 1", "charge 1", "ship 1", "ship 2", "notify 2"]
    steps = module.app.store.load_steps(job_id)
    assert [steps[s].status for s in ("validate", "charge", "ship", "notify")] == ["complete"] * 4
    module.app.close()


def test_kind_concurrency_holds_across_two_processes(tmp_path, workers):
    (tmp_path / "kind.gauge").write_text("0 0")
    name = write_app(tmp_path, GAUGED_APP)
    module = load_app_module(tmp_path, name)
    module.app.enqueue_many("call", [{"n": i} for i in range(30)])
    for label in ("a", "b"):
        workers.start(name, "--concurrency", "10", "--burst", *OPTS, label=label)
    wait_until(lambda: module.app.store.count_jobs()["complete"] == 30, "30 flows to complete", workers=workers)
    _, peak = read_gauge(tmp_path, "kind.gauge")
    assert 1 <= peak <= 2  # a critical http_request step: concurrency 2, across both processes
    module.app.close()
