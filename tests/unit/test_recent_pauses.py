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
