"""Job ids floodway makes: their form, their order, and that no two are the same, across
threads of one process and across a fork (the random bytes behind them are drawn from the
operating system a few KiB at a time)."""

from __future__ import annotations

import os
import re
import threading

from floodway.options import new_job_ids

ID = re.compile(r"[0-9a-f]{32}")


def test_ids_are_32_hex_digits_and_a_batch_is_in_order():
    one = new_job_ids(1)
    many = new_job_ids(1000)
    assert len(one) == 1 and ID.fullmatch(one[0])
    assert all(ID.fullmatch(i) for i in many)
    assert many == sorted(many) and len(set(many)) == 1000


def test_single_ids_drawn_past_the_pool_of_random_bytes_never_repeat():
    # 4 KiB of random bytes serve 512 single ids: draw several pools' worth
    ids = [new_job_ids(1)[0] for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    # the random part differs between ids made in the same millisecond
    assert len({i[12:28] for i in ids}) == len(ids)


def test_threads_drawing_ids_at_once_never_share_one():
    found: list[list[str]] = []
    gate = threading.Barrier(20)

    def draw() -> None:
        gate.wait()
        found.append([new_job_ids(1)[0] for _ in range(500)])

    threads = [threading.Thread(target=draw) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for chunk in found for i in chunk]
    assert len(ids) == 10_000 and len(set(ids)) == 10_000


def test_a_forked_child_does_not_repeat_its_parents_next_ids():
    new_job_ids(1)  # the parent holds a pool partly handed out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.close(read)
            os.write(write, "".join(i[12:28] for i in (new_job_ids(1)[0] for _ in range(50))).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while True:
        chunk = os.read(read, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    child = {text[k : k + 16] for k in range(0, len(text), 16)}
    parent = {i[12:28] for i in (new_job_ids(1)[0] for _ in range(50))}
    assert len(child) == 50
    assert not child & parent
