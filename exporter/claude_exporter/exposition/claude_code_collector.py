"""Scrape-time exposition of the Claude-Code-only families and of ``claude_agent_info``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from claude_exporter.exposition.collectors import DURATION_BUCKETS
from claude_exporter.exposition.store_collector import _buckets
from claude_exporter.recording.claude_code_series import (
    AGENT_INFO,
    CC_FAMILIES,
    TOOL_DURATION,
    Snapshot,
)

if TYPE_CHECKING:
    from claude_exporter.ingest.claude_code import ClaudeCodeIngest

__all__ = ["ClaudeCodeCollector"]


class ClaudeCodeCollector(Collector):
    """Exposes the Claude-Code-only families (those with series) and ``claude_agent_info`` (every agent).

    Each scrape first ends the Claude Code turns that went quiet, so a finished turn shows without waiting
    for more telemetry.
    """

    def __init__(self, ingest: ClaudeCodeIngest, all_agents: Callable[[], Iterable[str]]) -> None:
        self._ingest = ingest
        self._all_agents = all_agents

    def describe(self) -> Iterable[Metric]:
        return self._families(({name: {} for name in CC_FAMILIES}, []), frozenset(), (), everything=True)

    def collect(self) -> Iterable[Metric]:
        self._ingest.sweep()
        claude_code = self._ingest.store.agents
        return self._families(self._ingest.store.snapshot(), claude_code, self._all_agents())

    def _families(
        self,
        snapshot: Snapshot,
        claude_code: frozenset[str],
        sdk: Iterable[str],
        everything: bool = False,
    ) -> list[Metric]:
        counters, durations = snapshot
        out: list[Metric] = []
        for name, family in CC_FAMILIES.items():
            if counters[name] or everything:
                metric = CounterMetricFamily(name, family.help, labels=family.labels)
                for labels, value in sorted(counters[name].items()):
                    metric.add_metric(labels, value)
                out.append(metric)
        if durations or everything:
            hist = HistogramMetricFamily(TOOL_DURATION.name, TOOL_DURATION.help, labels=TOOL_DURATION.labels)
            for key, counts, total in sorted(durations):
                hist.add_metric(key, *_buckets(DURATION_BUCKETS, (counts, total)))
            out.append(hist)
        info = GaugeMetricFamily(AGENT_INFO.name, AGENT_INFO.help, labels=AGENT_INFO.labels)
        for agent in sorted(claude_code.union(sdk)):
            info.add_metric((agent, "claude_code" if agent in claude_code else "sdk"), 1.0)
        out.append(info)
        return out
