"""The test destination's answer styles (``tests/destination.py``, ``style=``): each really
enforces its quota and answers over-quota requests with the status and headers of the API it
imitates. Real HTTP over loopback; the invariants are read from the destination's own
timestamps, never from the wall time of the test."""

from __future__ import annotations

import math
import os
import sys
import time

import httpx
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from destination import (  # noqa: E402
    FIXED_WINDOW_STYLES,
    STYLES,
    Destination,
    max_in_window,
    per_second,
    windows_to_reach,
)

pytestmark = pytest.mark.timeout(60)

RATE = 20
TENANTS = ("a", "b")
#: every header any style uses to speak about its quota
QUOTA_HEADERS = (
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit",
    "ratelimit-policy",
    "x-shopify-shop-api-call-limit",
)


def options(style: str) -> dict:
    if style in ("usage", "bucket"):
        return {"burst": 6}
    if style in FIXED_WINDOW_STYLES:
        return {"window": 0.5}
    return {"burst": 3}


def hammer(dest: Destination, seconds: float, tenants=(None,)) -> list[tuple[str | None, httpx.Response]]:
    """POST as fast as one client can for ``seconds``, cycling through ``tenants``."""
    out = []
    end = time.monotonic() + seconds
    i = 0
    with httpx.Client(base_url=dest.url, timeout=10) as client:
        while time.monotonic() < end:
            tenant = tenants[i % len(tenants)]
            headers = {"X-Tenant": tenant} if tenant else {}
            out.append((tenant, client.post("/orders", json={"id": i}, headers=headers)))
            i += 1
    return out


def quota_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() in QUOTA_HEADERS}


def ietf_params(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split(";")[1:])


def check_headers(style: str, dest: Destination, response: httpx.Response) -> None:
    h = quota_headers(response)
    refused = response.status_code != 200
    limit = int(RATE * dest.window)
    if refused:
        assert response.status_code == 429, f"{style}: refused with {response.status_code}"
    if style == "leaky":
        assert h == ({"retry-after": h.get("retry-after")} if refused else {}), h
        if refused:
            assert h["retry-after"].isdigit() and int(h["retry-after"]) >= 1, h
    elif style == "bucket":
        assert h == ({"retry-after": "1"} if refused else {}), h
    elif style == "bare":
        assert h == {}, h
    elif style == "quota":
        assert h == ({"retry-after": h.get("retry-after")} if refused else {}), h
        if refused:
            assert h["retry-after"].isdigit() and 1 <= int(h["retry-after"]) <= math.ceil(dest.window), h
    elif style == "fixed-window":
        assert set(h) == {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}, h
        assert int(h["x-ratelimit-limit"]) == limit
        assert 0 <= int(h["x-ratelimit-remaining"]) < limit
        assert int(h["x-ratelimit-reset"]) >= time.time() - 1
        if refused:
            assert h["x-ratelimit-remaining"] == "0", h
    elif style == "usage":
        assert set(h) == (
            {"x-shopify-shop-api-call-limit", "retry-after"} if refused else {"x-shopify-shop-api-call-limit"}
        ), h
        used, size = (int(x) for x in h["x-shopify-shop-api-call-limit"].split("/"))
        assert size == dest.burst and 1 <= used <= size, h
        if refused:
            assert used == size and h["retry-after"] == "1.0", h
    elif style == "ietf":
        assert set(h) == {"ratelimit", "ratelimit-policy"}, h
        assert h["ratelimit-policy"] == f'"default";q={limit};w=0.5', h
        p = ietf_params(h["ratelimit"])
        assert h["ratelimit"].startswith('"default";') and 0 <= int(p["r"]) < limit and int(p["t"]) >= 1, h
        if refused:
            assert p["r"] == "0", h


def check_enforced(style: str, dest: Destination, tenant: str | None) -> None:
    """No window of accepted requests holds more than the quota (plus the burst), and the
    quota is really granted (the first window is full)."""
    times = dest.accepted_times(tenant)
    if style in FIXED_WINDOW_STYLES:
        anchor = min(r.at for r in dest.records() if r.tenant == tenant)
        counts = per_second(times, anchor, dest.window)
        limit = int(RATE * dest.window)
        assert max(counts) <= limit, f"{style}: windows held {counts}, quota {limit}"
        assert counts[0] == limit, f"{style}: the first window granted {counts[0]} of {limit}"
    elif style in ("usage", "bucket"):
        for width in (0.25, 0.5, 1.0):
            most = max_in_window(times, width)
            assert most <= RATE * width + dest.burst, f"{style}: {most} accepted in {width} s"
        assert max_in_window(times, 0.05) >= dest.burst - 1, "the bucket's size was not granted"
    else:
        most = max_in_window(times, dest.window)
        assert most <= dest.capacity, f"{style}: {most} accepted in one sliding window of {dest.capacity}"
        assert most >= dest.capacity - 1, f"{style}: only {most} of {dest.capacity} granted"


@pytest.mark.parametrize("style", STYLES)
def test_each_style_enforces_its_quota_per_tenant_and_answers_in_its_own_way(style):
    with Destination(rate=RATE, style=style, per_tenant=True, **options(style)) as dest:
        responses = hammer(dest, 1.3, TENANTS)
    stats = dest.stats()
    assert stats["refused"] > 0 and stats["accepted"] > 0, stats
    for tenant, response in responses:
        check_headers(style, dest, response)
    for tenant in TENANTS:
        check_enforced(style, dest, tenant)
    assert set(stats["tenants"]) == set(TENANTS)
    assert sum(t["accepted"] for t in stats["tenants"].values()) == stats["accepted"]
    assert sum(stats["accepted_per_second"]) == stats["accepted"]
    assert sum(stats["refused_per_second"]) == stats["refused"] == stats["rejected"]


def test_each_tenant_has_its_own_window_and_headers():
    # tenant a exhausts its window; tenant b's first answer still shows a full quota
    with (
        Destination(rate=10, window=1.0, style="fixed-window", per_tenant=True) as dest,
        httpx.Client(base_url=dest.url) as client,
    ):
        a = [client.post("/orders", json={"id": i}, headers={"X-Tenant": "a"}) for i in range(12)]
        b = client.post("/orders", json={"id": 99}, headers={"X-Tenant": "b"})
    assert [r.status_code for r in a] == [200] * 10 + [429] * 2
    assert b.status_code == 200 and b.headers["x-ratelimit-remaining"] == "9"


def test_fixed_window_can_answer_403_and_resets_at_the_announced_time():
    with (
        Destination(rate=4, window=1.0, style="fixed-window", exhausted_status=403) as dest,
        httpx.Client(base_url=dest.url) as client,
    ):
        first = [client.post("/orders", json={"id": i}) for i in range(5)]
        assert [r.status_code for r in first] == [200] * 4 + [403]
        assert [r.headers["x-ratelimit-remaining"] for r in first] == ["3", "2", "1", "0", "0"]
        reset = int(first[-1].headers["x-ratelimit-reset"])
        assert reset == math.ceil(dest.window_start() + dest.window)
        time.sleep(max(0.0, reset - time.time()) + 0.02)
        after = client.post("/orders", json={"id": 9})
    assert after.status_code == 200 and after.headers["x-ratelimit-remaining"] == "3"
    assert dest.stats()["refused_by_status"] == {403: 1}


def test_quota_retry_after_is_the_wait_to_the_window_end():
    with Destination(rate=2, window=2.0, style="quota") as dest, httpx.Client(base_url=dest.url) as client:
        ok = [client.post("/orders", json={"id": i}) for i in range(4)]
        refused = client.post("/orders", json={"id": 5})
        end = dest.window_start() + dest.window
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) == max(1, math.ceil(end - dest.records()[-1].at))
        time.sleep(max(0.0, end - time.time()) + 0.02)
        again = client.post("/orders", json={"id": 6})
    assert [r.status_code for r in ok] == [200] * 4 and again.status_code == 200


def test_a_rate_schedule_changes_the_quota_by_itself():
    with Destination(rate=40, burst=0, style="leaky", rate_schedule=[(0.6, 10)]) as dest:
        hammer(dest, 1.8)
    first = dest.first_request
    assert dest.rate == 10 and dest.rate_changes == [(first + 0.6, 10.0)]
    accepted = dest.accepted_times()
    assert max_in_window(accepted[:50], 0.6) >= 20, "the first rate was not granted"
    late = [t for t in accepted if t >= first + 0.6]
    assert max_in_window(late, 1.0) <= 10, "the new, lower rate was not enforced"
    assert dest.stats()["rate_changes"] == [[first + 0.6, 10.0]]


def test_block_refuses_in_the_style_of_the_destination():
    with Destination(rate=100, style="ietf", window=1.0) as dest, httpx.Client(base_url=dest.url) as client:
        dest.block(None, count=1, retry_after=3)
        blocked = client.post("/orders", json={"id": 1})
        fine = client.post("/orders", json={"id": 2})
    assert blocked.status_code == 429
    assert ietf_params(blocked.headers["ratelimit"]) == {"r": "0", "t": "3"}
    assert fine.status_code == 200


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="style"):
        Destination(style="sliding")
    with pytest.raises(ValueError, match="burst"):
        Destination(style="usage", burst=0)
    with pytest.raises(ValueError, match="exhausted_status"):
        Destination(style="fixed-window", exhausted_status=500)
    with pytest.raises(ValueError, match="rate_schedule"):
        Destination(rate_schedule=[(1, 0)])


def test_windows_to_reach_counts_windows_until_the_rate_settles():
    start = 100.0
    # 10/s wanted: window 1 too fast (refusals), window 2 too slow, window 3 right
    accepted = (
        [start + i / 10 for i in range(10)]
        + [start + 1 + i / 5 for i in range(5)]
        + [start + 2 + i / 10 for i in range(10)]
    )
    refused = [start + 0.05 + i / 10 for i in range(5)]
    assert windows_to_reach(accepted, refused, start, 10) == 3
    assert windows_to_reach(accepted, refused, start, 10, end=start + 2) is None
    assert windows_to_reach(accepted[:10], [], start, 10) == 1
    # 13 in a window is too many for 10/s, unless the destination takes a burst of 3 more
    more = [start + i / 13 for i in range(13)]
    assert windows_to_reach(more, [], start, 10) is None
    assert windows_to_reach(more, [], start, 10, extra=3) == 1
