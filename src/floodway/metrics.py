"""Prometheus metrics, read from the store at scrape time (so every worker's work counts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .app import App


class StoreCollector(Collector):
    """Exposes ``app.stats()`` as gauges labelled by queue, status and limit."""

    def __init__(self, app: "App", window: float = 60.0):
        self.app = app
        self.window = window

    def collect(self) -> Iterator[Metric]:
        stats = self.app.stats(self.window)
        jobs = GaugeMetricFamily("floodway_jobs", "Jobs per queue and status", labels=["queue", "status"])
        depth = GaugeMetricFamily("floodway_queue_depth", "Jobs waiting, scheduled or retrying", labels=["queue"])
        rate_in = GaugeMetricFamily("floodway_queue_rate_in", "Jobs enqueued per second", labels=["queue"])
        rate_out = GaugeMetricFamily("floodway_queue_rate_out", "Jobs finished per second", labels=["queue"])
        for name, q in stats["queues"].items():
            for status, count in q["counts"].items():
                jobs.add_metric([name, status], count)
            depth.add_metric([name], q["depth"])
            rate_in.add_metric([name], q["rate_in"])
            rate_out.add_metric([name], q["rate_out"])
        running = GaugeMetricFamily("floodway_limit_running", "Running jobs holding a limit", labels=["limit"])
        admitted = GaugeMetricFamily("floodway_limit_admitted", "Admissions through a limit", labels=["limit"])
        limited = GaugeMetricFamily("floodway_limit_rate_limited", "429s that paused a limit", labels=["limit"])
        paused = GaugeMetricFamily("floodway_limit_paused_keys", "Keys of a limit paused now", labels=["limit"])
        for name, lim in stats["limits"].items():
            running.add_metric([name], lim["running"])
            admitted.add_metric([name], lim["admitted"])
            limited.add_metric([name], lim["rate_limited"])
            paused.add_metric([name], len(lim["paused_keys"]))
        workers = GaugeMetricFamily("floodway_workers", "Live workers")
        workers.add_metric([], stats["workers"])
        yield from (jobs, depth, rate_in, rate_out, running, admitted, limited, paused, workers)


def registry_for(app: "App") -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(app))
    return registry


def exposition(app: "App") -> bytes:
    """The Prometheus text exposition of the app's metrics."""
    return generate_latest(registry_for(app))
