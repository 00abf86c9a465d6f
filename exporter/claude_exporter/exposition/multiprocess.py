"""The claude_* families of every worker process, merged from prometheus_client's mmap files.

Registered instead of the in-memory collectors when ``instrument()`` runs in multiprocess mode
(:mod:`claude_exporter.recording.multiprocess`). It reads the files the way prometheus_client's own
``MultiProcessCollector`` does (counters and histograms summed, gauges by their mode), keeps only the
claude_* families, so an application's own multiprocess metrics are left to its own collector, and
turns the oldest running start time into ``claude_execution_longest_running_seconds``.
"""

from __future__ import annotations

import glob
import math
import os
import time
from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from claude_exporter.recording.multiprocess import OLDEST_START

__all__ = ["LONGEST_RUNNING", "MultiprocessClaudeCollector"]

LONGEST_RUNNING = (
    "claude_execution_longest_running_seconds",
    "Age of the oldest running execution, 0 when none.",
)


class MultiprocessClaudeCollector(Collector):
    """Every worker's claude_* families from the files in ``path``."""

    def __init__(self, path: str) -> None:
        self._path = path

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with what the workers wrote; reading the files to list them is a scrape

    def collect(self) -> Iterable[Metric]:
        files = glob.glob(os.path.join(self._path, "*.db"))
        now = time.time()
        for metric in MultiProcessCollector.merge(files, accumulate=True):  # type: ignore[no-untyped-call]
            if not metric.name.startswith("claude_"):
                continue
            if metric.name == OLDEST_START:
                yield _longest_running(metric, now)
            else:
                yield metric


def _longest_running(oldest: Metric, now: float) -> Metric:
    family = GaugeMetricFamily(*LONGEST_RUNNING, labels=("agent",))
    for sample in sorted(oldest.samples, key=lambda s: s.labels.get("agent", "")):
        start = sample.value
        family.add_metric((sample.labels["agent"],), max(0.0, now - start) if math.isfinite(start) else 0.0)
    return family
