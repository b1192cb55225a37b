"""Reserved lanes: the share arithmetic (``rules.lane_pace``, ``lane_window``) and admission of
a claim batch against a key's lanes, in memory (``rules.Admission``)."""

from __future__ import annotations

import pytest

from floodway.errors import ConfigError
from floodway.limits import NO_LANE, LimitSpec, Rate, lane_key, split_lane
from floodway.store.rules import Admission, lane_active, lane_pace, lane_window

SHARES = {"interactive": 0.2, "backfill": 0.8}
RATE = Rate(100, 1.0)


def test_each_lane_gets_its_share_when_all_are_active():
    both = ["interactive", "backfill"]
    assert lane_pace(SHARES, "interactive", both, RATE, 1, 10).rate.per_second == pytest.approx(20)
    assert lane_pace(SHARES, "backfill", both, RATE, 1, 10).rate.per_second == pytest.approx(80)
    assert lane_pace(SHARES, "interactive", both, RATE, 1, 10).concurrency == 2
    assert lane_pace(SHARES, "backfill", both, RATE, 1, 10).concurrency == 8


def test_an_idle_lane_lends_its_share():
    alone = lane_pace(SHARES, "backfill", ["backfill"], RATE, 1, 10)
    assert alone.part == 1.0 and alone.rate.per_second == pytest.approx(100) and alone.concurrency == 10
    # the lane asking is active even when the list does not say so
    assert lane_pace(SHARES, "interactive", [], RATE, 1, 10).rate.per_second == pytest.approx(100)


def test_shares_are_lent_in_proportion():
    shares = {"a": 0.5, "b": 0.3, "c": 0.2}
    pace = lane_pace(shares, "b", ["a", "b"], RATE, 1, None)
    assert pace.part == pytest.approx(0.3 / 0.8) and pace.concurrency is None


def test_concurrency_is_at_least_one_slot_and_burst_at_least_two():
    pace = lane_pace({"tiny": 0.01, "big": 0.99}, "tiny", ["tiny", "big"], RATE, 10, 3)
    assert pace.concurrency == 1
    assert pace.burst == 2
    assert lane_pace(SHARES, "backfill", ["backfill"], RATE, 10, 3).burst == 10


def test_no_rate_paces_nothing():
    assert lane_pace(SHARES, "backfill", ["backfill"], None, 1, 4).rate is None


def test_unknown_lane_is_refused():
    with pytest.raises(ConfigError, match="lane 'x'"):
        lane_pace(SHARES, "x", [], RATE, 1, None)


def test_window_is_two_lane_intervals_or_a_second():
    assert lane_window(RATE, 0.2) == 1.0  # 2 x 50 ms
    assert lane_window(Rate(1, 1.0), 0.5) == pytest.approx(4.0)
    assert lane_window(None, 0.5) == 1.0
    assert lane_active(99.5, 100.0, 1.0) and not lane_active(98.9, 100.0, 1.0)
    assert not lane_active(0.0, 0.5, 1.0)  # a lane never asked is idle


def test_lane_keys_round_trip_and_never_look_like_a_tenant():
    assert split_lane(lane_key("acme", "backfill")) == ("acme", "backfill")
    assert split_lane(lane_key("", NO_LANE)) == ("", "")
    assert split_lane("acme") == ("acme", None)


def test_spec_lanes_leave_a_rest_for_jobs_without_a_lane():
    spec = LimitSpec.build("h", rate="10/s", lanes={"interactive": 0.2, "backfill": 0.5})
    assert spec.lane_shares == pytest.approx({"interactive": 0.2, "backfill": 0.5, NO_LANE: 0.3})
    assert LimitSpec.build("h", rate="10/s", lanes=SHARES).lane_shares == SHARES
    assert LimitSpec.from_row("h", 10, 1, 1, None, None, False, spec.bounds) == spec


@pytest.mark.parametrize(
    "lanes, message",
    [
        ({"a": -0.1}, "share must be > 0"),
        ({"a": 0}, "share must be > 0"),
        ({"a": "0.5"}, "must be a number"),
        ({"a": True}, "must be a number"),
        ({"a": float("nan")}, "must be a number"),
        ({"a": 0.6, "b": 0.5}, "sum to 1.1, more than 1"),
        ({"": 0.5}, "lane name"),
        ({"a\nb": 0.5}, "control character"),
        ({}, "non-empty dict"),
        (["a"], "non-empty dict"),
    ],
)
def test_bad_lanes(lanes, message):
    with pytest.raises(ConfigError, match=message):
        LimitSpec.build("h", rate="10/s", lanes=lanes)


def _admission(now: float, spec: LimitSpec) -> Admission:
    adm = Admission({spec.name: spec}, now)
    return adm


def _seed(adm: Admission, spec: LimitSpec, key: str = "") -> None:
    for pair in adm.pairs(spec.name, lane_key(key, "backfill")):
        adm.states[pair] = [0.0, 0.0, 0, 0, None]


def test_admission_splits_a_contended_key_by_share():
    """Both lanes backlogged for 10 s of simulated claims every 5 ms: ~20/80 of 100/s."""
    spec = LimitSpec.build("h", rate="100/s", lanes=SHARES)
    now = 1000.0
    adm = _admission(now, spec)
    _seed(adm, spec)
    counts = {"interactive": 0, "backfill": 0}
    for step in range(2000):
        adm.now = now + step * 0.005
        for lane in ("interactive", "backfill"):  # one head of each lane's group per claim
            if adm.admit(f"{lane}-{step}", [("h", lane_key("", lane))]):
                counts[lane] += 1
    total = sum(counts.values())
    assert total == pytest.approx(1000, abs=5)  # the key's rate, never more
    assert counts["interactive"] / total == pytest.approx(0.2, abs=0.02)


def test_admission_lends_then_takes_back_within_an_interval():
    spec = LimitSpec.build("h", rate="100/s", lanes=SHARES)
    now = 1000.0
    adm = _admission(now, spec)
    _seed(adm, spec)
    admitted = 0
    for step in range(1000):  # 5 s of backfill alone
        adm.now = now + step * 0.005
        admitted += adm.admit(f"b{step}", [("h", lane_key("", "backfill"))])
    assert admitted == pytest.approx(500, abs=3)  # the whole rate
    # interactive demand arrives: admitted within one of its intervals (50 ms). Its group was
    # served least recently, so the claim's round-robin looks at it first
    start = adm.now
    waited = None
    for step in range(1, 40):
        adm.now = start + step * 0.005
        if adm.admit(f"i{step}", [("h", lane_key("", "interactive"))]):
            waited = adm.now - start
            break
        adm.admit(f"b-late{step}", [("h", lane_key("", "backfill"))])
    assert waited is not None and waited <= 0.05
    # and from then on backfill is paced at its 80 %
    counts = {"interactive": 0, "backfill": 0}
    for step in range(1, 1001):
        adm.now = start + 0.2 + step * 0.005
        for lane in ("backfill", "interactive"):
            counts[lane] += adm.admit(f"{lane}-{step}", [("h", lane_key("", lane))])
    assert counts["backfill"] / sum(counts.values()) == pytest.approx(0.8, abs=0.02)


def test_a_lane_below_its_share_lends_the_rest_and_never_waits():
    """Interactive jobs arriving at 10/s on a 20/s share, backfill backlogged, claims every
    5 ms for 20 s: backfill takes all the key leaves (90/s), and each interactive job passes
    at its first claim, on the slot of the key's burst kept while its lane is idle."""
    spec = LimitSpec.build("h", rate="100/s", burst=5, lanes=SHARES)
    now = 1000.0
    adm = _admission(now, spec)
    _seed(adm, spec)
    counts = {"interactive": 0, "backfill": 0}
    for step in range(4000):
        adm.now = now + step * 0.005
        if step % 20 == 0:  # one interactive job every 100 ms, looked at first (least served)
            assert adm.admit(f"i{step}", [("h", lane_key("", "interactive"))]), adm.now - now
            counts["interactive"] += 1
        for _ in range(3):  # backfill's heads, as many as the claim takes
            counts["backfill"] += adm.admit(f"b{step}", [("h", lane_key("", "backfill"))])
    assert counts["interactive"] == 200
    assert counts["backfill"] == pytest.approx(2000 - 200, abs=10)
    assert not lane_active(adm.states[("h", lane_key("", "interactive"))][1], adm.now, 1.0)


def test_admission_caps_each_lane_at_its_part_of_the_concurrency():
    spec = LimitSpec.build("h", concurrency=10, lanes=SHARES)
    adm = _admission(1000.0, spec)
    _seed(adm, spec)
    interactive = lane_key("", "interactive")
    backfill = lane_key("", "backfill")
    assert adm.admit("i0", [("h", interactive)])  # interactive active now: backfill gets 8
    got = sum(adm.admit(f"b{i}", [("h", backfill)]) for i in range(20))
    assert got == 8
    assert adm.admit("i1", [("h", interactive)]) and not adm.admit("i2", [("h", interactive)])
    assert adm.states[("h", backfill)][2] == 8 and adm.states[("h", interactive)][2] == 2
    assert adm.states[("h", "")][2] == 0  # slots are held on the lanes' rows


def test_a_paused_key_holds_every_lane():
    spec = LimitSpec.build("h", rate="100/s", lanes=SHARES)
    adm = _admission(1000.0, spec)
    _seed(adm, spec)
    adm.states[("h", "")][1] = 1060.0
    assert not adm.admit("i", [("h", lane_key("", "interactive"))])
    assert adm.wake_at == 1060.0
    assert ("h", lane_key("", "interactive")) in adm.demanded  # the demand is recorded all the same
