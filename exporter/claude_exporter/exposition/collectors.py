"""Every metric family of the contract, defined once and bound to a registry.

Families whose value is only known at scrape time (in-flight gauges, the longest-running execution, the
rate-limit gauges, build info) are produced by :class:`ScrapeCollector` from live state, so the request
path never touches them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "DURATION_BUCKETS",
    "METRIC_NAMES",
    "REQUEST_BUCKETS",
    "TOKEN_BUCKETS",
    "TTFT_BUCKETS",
    "Metrics",
    "ScrapeCollector",
    "duration_buckets",
]

# OpenTelemetry GenAI conventions: 0.01 s doubling to 81.92 s, then the long tail agents live in.
DURATION_BUCKETS: tuple[float, ...] = (*(round(0.01 * 2**i, 2) for i in range(14)), 120.0, 300.0, 600.0)
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TOKEN_BUCKETS: tuple[float, ...] = tuple(float(4**i) for i in range(13))  # 1 ... 16777216
REQUEST_BUCKETS: tuple[float, ...] = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)  # agent-loop turns

# Contract names (without the _total / _bucket suffixes the exposition adds).
METRIC_NAMES: tuple[str, ...] = (
    "claude_requests_total",
    "claude_request_duration_seconds",
    "claude_time_to_first_token_seconds",
    "claude_tokens_total",
    "claude_cost_usd_total",
    "claude_errors_total",
    "claude_stop_reasons_total",
    "claude_code_blocks_executed_total",
    "claude_retries_total",
    "claude_rate_limited_total",
    "claude_ratelimit_limit",
    "claude_ratelimit_remaining",
    "claude_ratelimit_reset_timestamp_seconds",
    "claude_requests_in_flight",
    "claude_executions_total",
    "claude_execution_duration_seconds",
    "claude_execution_tokens",
    "claude_execution_requests",
    "claude_executions_in_flight",
    "claude_execution_longest_running_seconds",
    "claude_exporter_build_info",
    "claude_exporter_label_overflow_total",
    "claude_exporter_unpriced_tokens_total",
    "claude_exporter_internal_errors_total",
    "claude_exporter_events_total",
)


def duration_buckets(extra_seconds: Iterable[float] = ()) -> tuple[float, ...]:
    """The duration buckets plus every configured timeout threshold, so the timeout alert is exact."""
    return tuple(sorted({*DURATION_BUCKETS, *(float(s) for s in extra_seconds if s > 0)}))


class Metrics:
    """The rarely-updated families, kept as prometheus_client counters on ``registry``.

    The request and execution families live in :mod:`.store` and are exposed by :mod:`.exposition`.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.label_overflow = Counter(
            "claude_exporter_label_overflow", "Label values folded into __overflow__.", ("label",), registry=r
        )
        self.unpriced_tokens = Counter(
            "claude_exporter_unpriced_tokens",
            "Tokens of models missing from the pricing table.",
            ("model",),
            registry=r,
        )
        self.internal_errors = Counter(
            "claude_exporter_internal_errors",
            "Faults inside the shim, swallowed so the caller's request is never affected.",
            ("stage",),
            registry=r,
        )
        self.events = Counter("claude_exporter_events", "Ingested events.", ("source", "result"), registry=r)

    def collectors(self) -> list[Any]:
        return [self.label_overflow, self.unpriced_tokens, self.internal_errors, self.events]


GaugeSamples = Callable[[], Iterable[tuple[tuple[str, ...], float]]]


class ScrapeCollector(Collector):
    """Gauges computed when Prometheus scrapes: each source yields ``(label values, value)`` pairs."""

    def __init__(self, gauges: Sequence[tuple[str, str, Sequence[str], GaugeSamples]]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        for name, documentation, labels, samples in self._gauges:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for values, value in samples():
                family.add_metric(values, value)
            yield family

    def describe(self) -> Iterable[Metric]:
        # Names only, so the registry can refuse duplicates without running the sources.
        for name, documentation, labels, _ in self._gauges:
            yield GaugeMetricFamily(name, documentation, labels=labels)
