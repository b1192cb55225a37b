"""Cost-weighted limits settled after the call (``floodway.limits.gcra_settle``,
``floodway.store.rules.settle_one``, ``floodway.cost``), without a database or a network."""

from __future__ import annotations

import logging
import math

import httpx
import pytest

from floodway.cost import ABSURD_BURSTS, Cost, Settlement, graphql_cost, read_sync
from floodway.errors import ConfigError
from floodway.limits import LimitSpec, Rate, gcra, gcra_settle
from floodway.quota import Learned, Observation, observe
from floodway.store.rules import settle_one

NOW = 1_000.0
RATE = Rate(10, 1.0)  # one token every 0.1 s


def test_a_debt_pushes_the_gcra_time_forward_from_now_or_from_what_is_outstanding():
    assert gcra_settle(NOW + 0.5, NOW, RATE, 3) == pytest.approx(NOW + 0.8)
    # an idle key (its time in the past) pays the debt from now: nothing is forgiven
    assert gcra_settle(NOW - 5, NOW, RATE, 3) == pytest.approx(NOW + 0.3)


def test_a_debt_beyond_the_burst_holds_the_next_admissions_until_it_is_paid():
    burst = 5
    ok, tat, _ = gcra(0.0, NOW, RATE, burst, cost=5)  # charged 5, really cost 12
    assert ok
    tat = gcra_settle(tat, NOW, RATE, 7)
    ok, _, retry_at = gcra(tat, NOW, RATE, burst, cost=1)
    assert not ok
    # 12 tokens spent with a bucket of 5: the next one fits once 8 have leaked
    assert retry_at == pytest.approx(NOW + 0.8)


def test_a_credit_moves_the_time_back_but_never_before_now():
    assert gcra_settle(NOW + 0.5, NOW, RATE, -2) == pytest.approx(NOW + 0.3)
    assert gcra_settle(NOW + 0.5, NOW, RATE, -50) == NOW
    assert gcra_settle(NOW - 3, NOW, RATE, -1) == NOW


def test_settling_keeps_the_key_exactly_at_what_was_really_spent():
    """Charge an estimate, settle the difference: the key ends where charging the actual
    costs up front would have left it."""
    burst, estimate = 50, 5
    actuals = [1, 9, 3, 10, 5, 2, 7]
    settled = exact = 0.0
    for actual in actuals:
        ok, settled, _ = gcra(settled, NOW, RATE, burst, estimate)
        assert ok
        settled = gcra_settle(settled, NOW, RATE, actual - estimate)
        ok, exact, _ = gcra(exact, NOW, RATE, burst, actual)
        assert ok
    assert settled == pytest.approx(exact) == pytest.approx(NOW + sum(actuals) * RATE.interval)


def test_settle_one_uses_the_keys_pace_and_changes_nothing_without_a_rate_or_a_difference():
    spec = LimitSpec("shop", rate=RATE, burst=50)
    assert settle_one(spec, NOW + 1, 10, None, NOW, 2) == pytest.approx(NOW + 1.2)
    assert settle_one(spec, NOW + 1, 10, None, NOW, 0) is None
    assert settle_one(LimitSpec("slots", concurrency=3), NOW, 0, None, NOW, 5) is None
    # a learned (slower) rate: the debt is worth more time
    learned = Learned(rate=2.0, source="headers", since=NOW, seen=NOW).dumps()
    assert settle_one(spec, NOW, 0, learned, NOW, 1) == pytest.approx(NOW + 0.5)


def _response(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("POST", "http://shop.test/graphql"))


SHOPIFY = {
    "data": {},
    "extensions": {
        "cost": {
            "requestedQueryCost": 12,
            "actualQueryCost": 7,
            "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 993, "restoreRate": 50.0},
        }
    },
}


def test_graphql_cost_reads_the_actual_cost_and_the_bucket():
    cost = graphql_cost(_response(SHOPIFY))
    assert cost == Cost(actual=7, maximum=1000.0, available=993, restore_rate=50.0)
    assert cost.usage() == (7.0, 1000.0, 50.0)
    assert graphql_cost(_response({"data": {}})) is None
    assert graphql_cost(httpx.Response(200, text="not json")) is None
    throttled = {"errors": [{"extensions": {"code": "THROTTLED"}}], "extensions": {"cost": {"actualQueryCost": None}}}
    assert graphql_cost(_response(throttled, 429)) == Cost(actual=None)


@pytest.mark.parametrize(
    "status",
    [
        {"maximumAvailable": 0, "currentlyAvailable": 0, "restoreRate": 50},
        {"maximumAvailable": 100, "currentlyAvailable": 101, "restoreRate": 50},
        {"maximumAvailable": 100, "currentlyAvailable": 5, "restoreRate": 0},
        {"maximumAvailable": "100", "currentlyAvailable": 5, "restoreRate": 50},
        {"maximumAvailable": 100, "currentlyAvailable": float("nan"), "restoreRate": 50},
    ],
)
def test_an_impossible_bucket_is_not_reported(status):
    assert Cost(1, status["maximumAvailable"], status["currentlyAvailable"], status["restoreRate"]).usage() is None


def test_a_stated_restore_rate_is_the_learned_leak_with_nothing_to_measure():
    spec = LimitSpec("shop", rate=Rate(100, 1.0), burst=100)
    obs = Observation(now=NOW, accepted=1, used=500.0, size=1000.0, leak=50.0)
    learned, changed = observe(spec, None, 0, obs)
    assert changed == "usage" and learned.leak == 50.0
    assert learned.rate == pytest.approx(50.0)  # half full: exactly the restore rate


def test_the_estimate_is_checked_when_the_client_is_made():
    assert Settlement("shop", 50, 5, None).cost == 5
    for bad in (0, -1, 2.5, "5", None, True, math.nan):
        with pytest.raises(ConfigError, match="cost must be an int >= 1"):
            Settlement("shop", 50, bad, None)
    with pytest.raises(ConfigError, match="can never pass a burst of 50"):
        Settlement("shop", 50, 51, None)
    with pytest.raises(ConfigError, match="actual_cost must be a function"):
        Settlement("shop", 50, 1, 7)
    with pytest.raises(ConfigError, match="need a limit"):
        Settlement(None, 1, 3, None)


def test_a_requests_own_cost_overrides_the_estimate_and_is_checked():
    costs = Settlement("shop", 50, 5, None)
    assert costs.estimate(httpx.Request("POST", "http://x/")) == 5
    assert costs.estimate(httpx.Request("POST", "http://x/", extensions={"floodway_cost": 9})) == 9
    with pytest.raises(ConfigError, match="can never pass"):
        costs.estimate(httpx.Request("POST", "http://x/", extensions={"floodway_cost": 500}))


@pytest.mark.parametrize("actual", [-1, math.nan, math.inf, "7", [7], True, ABSURD_BURSTS * 50 + 1])
def test_an_impossible_actual_cost_is_ignored_and_logged_once_per_limit(actual, caplog):
    costs = Settlement(f"shop-{actual!r}", 50, 5, lambda response: actual)
    with caplog.at_level(logging.WARNING, logger="floodway.cost"):
        for _ in range(5):
            assert costs.read(_response({}), 5) == (0.0, None)
    assert len(caplog.records) == 1


def test_a_reader_that_raises_is_ignored_and_logged_once(caplog):
    def boom(response):
        raise KeyError("extensions")

    costs = Settlement("shop-boom", 50, 5, boom)
    with caplog.at_level(logging.WARNING, logger="floodway.cost"):
        assert costs.read(_response({}), 5) == (0.0, None)
        assert costs.read(_response({}), 5) == (0.0, None)
    assert len(caplog.records) == 1


def test_a_reading_settles_the_difference_and_none_settles_nothing():
    assert Settlement("shop", 50, 5, lambda r: 8).read(_response({}), 5) == (3.0, None)
    assert Settlement("shop", 50, 5, lambda r: 0).read(_response({}), 5) == (-5.0, None)
    assert Settlement("shop", 50, 5, lambda r: None).read(_response({}), 5) == (0.0, None)
    assert Settlement("shop", 50, 5, graphql_cost).read(_response(SHOPIFY), 5) == (2.0, (7.0, 1000.0, 50.0))


def test_a_body_read_for_its_cost_is_handed_on_unread_and_still_decoded():
    import gzip

    raw = gzip.compress(b'{"extensions": {"cost": {"actualQueryCost": 3}}}')
    inner = httpx.Response(200, headers={"content-encoding": "gzip"}, stream=httpx.ByteStream(raw))
    request = httpx.Request("POST", "http://shop.test/graphql")
    handed, probe = read_sync(inner, request)
    assert graphql_cost(probe) == Cost(actual=3)
    handed.read()
    assert handed.json() == {"extensions": {"cost": {"actualQueryCost": 3}}}
