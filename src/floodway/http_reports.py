"""What a worker process's responses said about each limit key, between two reports to the store."""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["REPORT_INTERVAL", "Reports", "reports_of"]

#: a worker process reports what responses said about a limit key at most this often (the
#: refusals themselves, and the first response of a new window, are reported at once): the
#: response path writes nothing in between. What a key accepted is read from these reports, and
#: up to this long of each process's latest acceptances are not in them yet: a longer interval
#: reads the accepted rate lower, and a quota's return (proved by what is accepted) later
REPORT_INTERVAL = 0.1
#: a stated reset this much later than the latest one seen is a new window's (a reset is
#: rounded to whole seconds: within one window it moves by less than that)
NEW_WINDOW = 1.0 - 1e-6


class Reports:
    """What this process's responses said about each limit key since its last report:
    accepted responses and the newest quota headers, written to the store at most every
    ``REPORT_INTERVAL`` (shared by every job of the process, sync ones on threads too)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: dict[tuple[str, str], int] = {}
        self.headers: dict[tuple[str, str], dict[str, Any]] = {}
        self.last: dict[tuple[str, str], float] = {}
        #: the first accepted response since the last report (a fixed window's reset came before it)
        self.first: dict[tuple[str, str], float] = {}
        #: the latest reset stated, and the first response of a new window since the last report
        self.reset: dict[tuple[str, str], float] = {}
        self.renewed: dict[tuple[str, str], tuple[float, float, float]] = {}
        #: refusals since the last accepted response (this process's answers, in the order they came)
        self.in_a_row: dict[tuple[str, str], int] = {}

    def add(self, pair: tuple[str, str], now: float, fields: dict[str, Any] | None) -> bool:
        """Count one accepted response; True when it is time to report."""
        with self.lock:
            self.accepted[pair] = self.accepted.get(pair, 0) + 1
            self.first.setdefault(pair, now)
            self.in_a_row.pop(pair, None)
            due = False
            if fields:
                self.headers[pair] = fields
                due = self._new_window(pair, now, fields.get("reset_at"))
            if due or now - self.last.get(pair, 0.0) >= REPORT_INTERVAL:
                self.last[pair] = now
                return True
            return False

    def _new_window(self, pair: tuple[str, str], now: float, reset: Any) -> bool:
        """Whether this response is the first of a new window (its end tells where the last one
        ended: see ``floodway.window_ends``)."""
        if isinstance(reset, bool) or not isinstance(reset, (int, float)):
            return False
        reset = float(reset)
        last = self.reset.get(pair)
        self.reset[pair] = reset if last is None else max(last, reset)
        if last is None or reset < last + NEW_WINDOW or pair in self.renewed:
            return False
        self.renewed[pair] = (now, reset, last)
        return True

    def refused(self, pair: tuple[str, str]) -> int:
        """Count one refusal; how many came in a row (this one included, none accepted between)."""
        with self.lock:
            self.in_a_row[pair] = n = self.in_a_row.get(pair, 0) + 1
            return n

    def take(self, pair: tuple[str, str], now: float) -> tuple[int, dict[str, Any], float | None]:
        """(accepted, the newest quota fields, the first accepted) since the last report; the
        fields carry ``renewed``, ``renewed_reset`` and ``renewed_from`` when a new window began meanwhile."""
        with self.lock:
            self.last[pair] = now
            fields = self.headers.pop(pair, {})
            renewed = self.renewed.pop(pair, None)
            if renewed is not None:
                fields = {**fields, "renewed": renewed[0], "renewed_reset": renewed[1], "renewed_from": renewed[2]}
            return self.accepted.pop(pair, 0), fields, self.first.pop(pair, None)


def reports_of(app: Any) -> Reports:
    reports = app.__dict__.get("_quota_reports")
    if reports is None:
        reports = app.__dict__.setdefault("_quota_reports", Reports())
    return reports
