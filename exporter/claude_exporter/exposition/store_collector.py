"""Metric families built from the store's series when Prometheus scrapes.

Each series is copied under its own lock, so a scrape sees every request either whole or not at all.
Histogram bucket bounds are written the way prometheus_client writes them (``le="30.0"``), so rules and
dashboards see one format whichever family they read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.series import TOKEN_TYPES

__all__ = ["StoreCollector"]

AM = ("agent", "model")
AT = ("agent", "task")


def _buckets(
    bounds: tuple[float, ...], snapshot: tuple[list[int], float]
) -> tuple[list[tuple[str, float]], float]:
    counts, total = snapshot
    cumulative, out = 0, []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += count
        out.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
    return out, total


class StoreCollector(Collector):
    """Exposes the recorder's request and execution series."""

    def __init__(self, rec: Recorder) -> None:
        self._rec = rec

    def describe(self) -> Iterable[Metric]:
        return self._families([], [])

    def collect(self) -> Iterable[Metric]:
        rec = self._rec
        requests = [
            (s.agent, s.model, s.duration.bounds, s.ttft.bounds, s.snapshot()) for s in rec.request_series
        ]
        executions = [
            (s.agent, s.task, s.duration.bounds, s.tokens_in.bounds, s.requests.bounds, s.snapshot())
            for s in list(rec.exec_series.values())
        ]
        return self._families(requests, executions)

    def _families(self, requests: list[Any], executions: list[Any]) -> list[Metric]:
        c_requests = CounterMetricFamily(
            "claude_requests", "Finished Messages API requests.", labels=(*AM, "outcome")
        )
        h_duration = HistogramMetricFamily(
            "claude_request_duration_seconds",
            "Request wall time, retries and the whole stream included.",
            labels=AM,
        )
        h_ttft = HistogramMetricFamily(
            "claude_time_to_first_token_seconds",
            "Streaming requests: time from the request start to the first content delta.",
            labels=AM,
        )
        c_tokens = CounterMetricFamily(
            "claude_tokens",
            "Tokens as the API bills them; input excludes cache tokens.",
            labels=(*AM, "type"),
        )
        c_cost = CounterMetricFamily(
            "claude_cost_usd", "Estimated cost from the pricing table, in USD.", labels=AM
        )
        c_errors = CounterMetricFamily(
            "claude_errors", "Failed requests by SDK exception class name.", labels=(*AM, "error_type")
        )
        c_stops = CounterMetricFamily(
            "claude_stop_reasons", "Finished requests by stop reason.", labels=(*AM, "stop_reason")
        )
        c_code = CounterMetricFamily(
            "claude_code_blocks_executed",
            "Code-execution tool results by tool and outcome.",
            labels=(*AM, "tool", "outcome"),
        )
        c_retries = CounterMetricFamily(
            "claude_retries",
            "Retried attempts by the status or failure that caused them.",
            labels=(*AM, "reason"),
        )
        c_limited = CounterMetricFamily("claude_rate_limited", "429 responses, every attempt.", labels=AM)
        for agent, model, duration_bounds, ttft_bounds, snap in requests:
            key = (agent, model)
            if agent == model == "__overflow__" and not any(snap["outcomes"]):
                pass  # the overflow series exists only to hold open-label overflow; its totals stay hidden
            else:
                c_requests.add_metric((*key, "success"), snap["outcomes"][0])
                c_requests.add_metric((*key, "error"), snap["outcomes"][1])
                h_duration.add_metric(key, *_buckets(duration_bounds, snap["duration"]))
                for kind, count in zip(TOKEN_TYPES, snap["tokens"], strict=True):
                    c_tokens.add_metric((*key, kind), count)
                c_cost.add_metric(key, snap["cost"])
                c_limited.add_metric(key, snap["rate_limited"])
            if any(snap["ttft"][0]):
                h_ttft.add_metric(key, *_buckets(ttft_bounds, snap["ttft"]))
            for reason, count in snap["stops"].items():
                c_stops.add_metric((*key, reason), count)
            for name, count in snap["errors"].items():
                c_errors.add_metric((*key, name), count)
            for reason, count in snap["retries"].items():
                c_retries.add_metric((*key, reason), count)
            for (tool, outcome), count in snap["code"].items():
                c_code.add_metric((*key, tool, outcome), count)

        c_execs = CounterMetricFamily("claude_executions", "Finished executions.", labels=(*AT, "outcome"))
        h_exec = HistogramMetricFamily("claude_execution_duration_seconds", "Execution wall time.", labels=AT)
        h_tokens = HistogramMetricFamily(
            "claude_execution_tokens",
            "Tokens per execution over all its requests; input includes cache writes and reads.",
            labels=(*AT, "type"),
        )
        h_turns = HistogramMetricFamily(
            "claude_execution_requests", "Requests per execution (agent-loop turns).", labels=AT
        )
        for agent, task, duration_bounds, token_bounds, request_bounds, snap in executions:
            key = (agent, task)
            c_execs.add_metric((*key, "success"), snap["outcomes"][0])
            c_execs.add_metric((*key, "error"), snap["outcomes"][1])
            h_exec.add_metric(key, *_buckets(duration_bounds, snap["duration"]))
            h_tokens.add_metric((*key, "input"), *_buckets(token_bounds, snap["tokens_in"]))
            h_tokens.add_metric((*key, "output"), *_buckets(token_bounds, snap["tokens_out"]))
            h_turns.add_metric(key, *_buckets(request_bounds, snap["requests"]))
        return [
            c_requests, h_duration, h_ttft, c_tokens, c_cost, c_errors, c_stops, c_code, c_retries, c_limited,
            c_execs, h_exec, h_tokens, h_turns,
        ]  # fmt: skip
