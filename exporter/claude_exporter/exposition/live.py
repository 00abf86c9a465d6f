"""Gauges computed at scrape time from live state: in flight, longest running, rate-limit headroom,
build info. The request path only stores references; the work happens here, once per scrape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import anthropic

from claude_exporter._version import __version__
from claude_exporter.exposition.collectors import ScrapeCollector
from claude_exporter.recording.recorder import Recorder

__all__ = ["RESOURCES", "RateLimits", "scrape_collector"]

RESOURCES = ("requests", "tokens", "input_tokens", "output_tokens")
_FIELDS = ("limit", "remaining", "reset")

Samples = Iterator[tuple[tuple[str, ...], float]]


class RateLimits:
    """The latest ``anthropic-ratelimit-*`` values, parsed from the responses seen since the last scrape."""

    def __init__(self, rec: Recorder) -> None:
        self._rec = rec
        self.values: dict[tuple[str, str], float] = {}

    def refresh(self) -> None:
        pending = self._rec.recent_headers
        while pending:
            try:
                headers = pending.popleft()
            except IndexError:  # another scrape drained it first
                return
            for resource in RESOURCES:
                prefix = "anthropic-ratelimit-" + resource.replace("_", "-") + "-"
                for field in _FIELDS:
                    raw = headers.get(prefix + field)
                    if raw is None:
                        continue  # a response without the header keeps the last known value
                    try:
                        self.values[(resource, field)] = _parse(field, raw)
                    except ValueError:
                        self._rec.fault("ratelimit_header")

    def samples(self, field: str) -> Samples:
        self.refresh()
        for resource in RESOURCES:
            value = self.values.get((resource, field))
            if value is not None:
                yield (resource,), value


def _parse(field: str, raw: str) -> float:
    if field != "reset":
        return float(raw)
    return datetime.fromisoformat(raw.strip().replace("Z", "+00:00")).timestamp()


def scrape_collector(rec: Recorder) -> ScrapeCollector:
    limits = RateLimits(rec)
    build = ((__version__, anthropic.__version__), 1.0)
    return ScrapeCollector(
        [
            ("claude_requests_in_flight", "Requests in progress.", ("agent",), rec.gauge_requests_in_flight),
            (
                "claude_executions_in_flight",
                "Executions in progress.",
                ("agent", "task"),
                rec.gauge_executions_in_flight,
            ),
            (
                "claude_execution_longest_running_seconds",
                "Age of the oldest running execution, 0 when none.",
                ("agent",),
                rec.gauge_longest_running,
            ),
            (
                "claude_ratelimit_limit",
                "From the anthropic-ratelimit-*-limit headers.",
                ("resource",),
                lambda: limits.samples("limit"),
            ),
            (
                "claude_ratelimit_remaining",
                "From the anthropic-ratelimit-*-remaining headers.",
                ("resource",),
                lambda: limits.samples("remaining"),
            ),
            (
                "claude_ratelimit_reset_timestamp_seconds",
                "From the anthropic-ratelimit-*-reset headers, as a Unix timestamp.",
                ("resource",),
                lambda: limits.samples("reset"),
            ),
            (
                "claude_exporter_build_info",
                "Always 1; the exporter and SDK versions as labels.",
                ("version", "anthropic_version"),
                lambda: iter([build]),
            ),
        ]
    )
