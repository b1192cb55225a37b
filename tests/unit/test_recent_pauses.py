"""RecentPauses: one read of a key's pause serves a process's jobs for a short while."""

from __future__ import annotations

import time

from floodway.limits import RecentPauses


class Pauses:
    """A stand-in for the store's pauses that counts how often it is read."""

    def __init__(self) -> None:
        self.until: dict[tuple[str, str], float] = {}
        self.reads = 0

    def read(self, name: str, key: str) -> float:
        self.reads += 1
        return self.until.get((name, key), 0.0)


def test_one_read_serves_every_check_while_fresh_and_each_key_reads_its_own():
    store = Pauses()
    pauses = RecentPauses(store.read, fresh=60.0)
    assert [pauses.paused_until("api", "") for _ in range(100)] == [0.0] * 100
    assert store.reads == 1
    store.until[("api", "acme")] = 5.0
    assert pauses.paused_until("api", "acme") == 5.0
    assert store.reads == 2


def test_a_reading_older_than_fresh_is_read_again():
    store = Pauses()
    pauses = RecentPauses(store.read, fresh=0.01)
    pauses.paused_until("api", "")
    store.until[("api", "")] = 9.0
    time.sleep(0.02)
    assert pauses.paused_until("api", "") == 9.0
    assert store.reads == 2


def test_a_pause_this_process_records_is_seen_at_the_next_check():
    store = Pauses()
    pauses = RecentPauses(store.read, fresh=60.0)
    assert pauses.paused_until("api", "") == 0.0
    store.until[("api", "")] = 7.0
    pauses.forget("api", "")
    assert pauses.paused_until("api", "") == 7.0
    assert store.reads == 2


def test_a_read_begun_before_a_pause_of_this_process_is_not_shared():
    reads = []

    def read_while_pausing(name: str, key: str) -> float:
        reads.append(key)
        pauses.forget(name, key)  # the pause lands while the read is on its way
        return 0.0

    pauses = RecentPauses(read_while_pausing, fresh=60.0)
    pauses.paused_until("api", "")
    pauses.paused_until("api", "")
    assert len(reads) == 2


def test_fresh_answers_only_from_a_reading_still_fresh():
    store = Pauses()
    pauses = RecentPauses(store.read, fresh=0.01)
    assert pauses.fresh("api", "") is None  # never read
    store.until[("api", "")] = 4.0
    pauses.paused_until("api", "")
    assert pauses.fresh("api", "") == 4.0
    time.sleep(0.02)
    assert pauses.fresh("api", "") is None
    assert store.reads == 1


def test_a_held_key_reads_as_paused_a_moment_ahead_until_released_and_then_reads_the_store():
    store = Pauses()
    pauses = RecentPauses(store.read, fresh=60.0)
    assert pauses.paused_until("api", "") == 0.0  # a fresh reading: not paused
    pauses.hold("api", "")
    before = time.time()
    held = pauses.paused_until("api", "")
    assert before < held <= time.time() + 1.0
    assert pauses.fresh("api", "") is not None and pauses.fresh("api", "") > before
    assert pauses.held_until("api", "other") is None and pauses.paused_until("api", "other") == 0.0
    store.until[("api", "")] = 42.0  # what the refusal told the store
    pauses.release("api", "")
    assert pauses.held_until("api", "") is None
    assert pauses.paused_until("api", "") == 42.0  # read again, not the reading before the hold


def test_two_refusals_on_their_way_hold_the_key_until_both_are_told():
    pauses = RecentPauses(Pauses().read, fresh=60.0)
    pauses.hold("api", "k")
    pauses.hold("api", "k")
    pauses.release("api", "k")
    assert pauses.held_until("api", "k") is not None
    pauses.release("api", "k")
    assert pauses.held_until("api", "k") is None
    pauses.release("api", "k")  # one release too many leaves nothing held
    assert pauses.held_until("api", "k") is None


def test_a_read_begun_before_a_hold_is_not_kept_after_its_release():
    def read_while_holding(name: str, key: str) -> float:
        pauses.hold(name, key)  # a refusal arrives while the read is on its way
        pauses.release(name, key)
        return 0.0

    pauses = RecentPauses(read_while_holding, fresh=60.0)
    pauses.paused_until("api", "")
    assert pauses.fresh("api", "") is None
