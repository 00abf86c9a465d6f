"""Multiprocess mode, the read half: every worker's claude_* families merged from their mmap files.

The workers write through :mod:`claude_exporter.recording.storage.mmap`; whichever of them Prometheus
scrapes reads every process's files here, with prometheus_client's ``MultiProcessCollector.merge``:
counters and histograms summed over the workers, dead ones included, gauges combined by their family's
declared ``multiprocess_mode``. The oldest running start each process writes is turned into
``claude_execution_longest_running_seconds`` at scrape time.
"""

from __future__ import annotations

import glob
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from claude_exporter.exposition.flags import family_flags
from claude_exporter.families import BY_NAME, FAMILIES
from claude_exporter.recording.storage.mmap import OLDEST_START

__all__ = ["MultiprocessCollector"]


class MultiprocessCollector(Collector):
    """Every worker's claude_* families from the files in ``path``, with the agents' ``metrics:`` lists
    applied as the in-memory collector applies them. Other families in the directory (an application's
    own multiprocess metrics) are left to the application's own collector."""

    def __init__(
        self, path: str, enabled: Callable[[str, str], bool] | None = None, local: Any = None
    ) -> None:
        self._path = path
        self._enabled = enabled or (lambda agent, group: True)
        self._local = local  # this process's RecorderCollector, for what only it records

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with what the workers wrote; reading the files to list them is a scrape

    def collect(self) -> Iterable[Metric]:
        files = glob.glob(os.path.join(self._path, "*.db"))
        now = time.time()
        flags = family_flags(self._enabled)
        agents: set[str] = set()
        for metric in MultiProcessCollector.merge(files, accumulate=True):  # type: ignore[no-untyped-call]
            if metric.name == OLDEST_START:
                yield _longest_running(metric, now)
                continue
            family = _BY_BASE.get(metric.name)
            if family is None:
                continue
            if metric.name in ("claude_requests", "claude_executions"):
                agents.update(s.labels["agent"] for s in metric.samples if "agent" in s.labels)
            if family.enabled_by:
                metric.samples = [s for s in metric.samples if _on(flags, family.name, s.labels)]
            yield metric
        if self._local is not None:
            yield from self._local.claude_code_families(frozenset(agents))


_BY_BASE = {family.base: family for family in FAMILIES}
_TOKEN_FAMILIES = ("claude_tokens_total", "claude_execution_tokens")


def _on(flags: Callable[[str], dict[str, bool]], family: str, labels: dict[str, str]) -> bool:
    agent = labels.get("agent")
    if agent is None:
        return True
    on = flags(agent)
    if family in _TOKEN_FAMILIES:
        return on.get(labels.get("type", ""), True)
    return on[family]


def _longest_running(oldest: Metric, now: float) -> Metric:
    family = BY_NAME["claude_execution_longest_running_seconds"]
    out = GaugeMetricFamily(family.name, family.help, labels=family.labels)
    for sample in sorted(oldest.samples, key=lambda s: s.labels.get("agent", "")):
        start = sample.value
        out.add_metric((sample.labels["agent"],), max(0.0, now - start) if math.isfinite(start) else 0.0)
    return out
