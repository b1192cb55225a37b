"""The test helper that freezes a worker process (``WorkerProc.freeze``) never leaves it frozen
inside a SQLite write transaction: a test that did would wait on the file's lock forever."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proc_helpers import WorkerProc  # noqa: E402

#: a process that takes the write lock, says so, holds it a while, then idles without it
WRITER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (1)")
    open(sys.argv[2], "w").close()
    time.sleep(0.5)
    conn.execute("COMMIT")
    time.sleep(3600)
    """
)


def test_a_freeze_waits_until_the_process_holds_no_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    setup = sqlite3.connect(db)
    setup.execute("CREATE TABLE t (x INTEGER)")
    setup.commit()
    setup.close()
    holding = tmp_path / "holding"
    with open(tmp_path / "writer.log", "wb") as log:
        popen = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(holding)], stdout=log, stderr=log)
    proc = WorkerProc(popen, tmp_path / "writer.log", "writer")
    try:
        deadline = time.monotonic() + 30
        while not holding.exists():
            assert time.monotonic() < deadline and popen.poll() is None, proc.log_tail()
            time.sleep(0.005)
        proc.freeze(f"sqlite:///{db}")
        # frozen, and the lock is free: another process writes at once
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (2)")
        conn.execute("COMMIT")
        assert [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")] == [1, 2]  # its write committed first
        conn.close()
        state = Path(f"/proc/{popen.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "T", state  # still frozen
    finally:
        popen.send_signal(signal.SIGKILL)
        popen.wait()
