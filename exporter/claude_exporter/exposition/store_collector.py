"""Metric families built from the store's series when Prometheus scrapes.

Each series is copied under its own lock, so a scrape sees every request either whole or not at all.
Histogram bucket bounds are written the way prometheus_client writes them (``le="30.0"``), so rules and
dashboards see one format whichever family they read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    return out, float(total)


def _noop(stage: str) -> None:
    """describe() has no recorder to count a fault in."""


class StoreCollector(Collector):
    """Exposes the recorder's request and execution series.

    Each family is built on its own: one that fails (a value that cannot be a float, a fault) is left out
    of that scrape and counted in ``claude_exporter_internal_errors_total{stage="scrape"}``, and the scrape
    serves the rest. Every value is made a float here, so rendering the exposition cannot fail on one.
    """

    def __init__(self, rec: Recorder) -> None:
        self._rec = rec

    def describe(self) -> Iterable[Metric]:
        return self._families([], [], _noop)

    def collect(self) -> Iterable[Metric]:
        rec = self._rec
        requests, executions = [], []
        for series in rec.request_series:
            try:
                requests.append(
                    (
                        series.agent,
                        series.model,
                        series.duration.bounds,
                        series.ttft.bounds,
                        series.snapshot(),
                    )
                )
            except Exception:
                rec.fault("scrape")
        for ex in list(rec.exec_series.values()):
            try:
                executions.append(
                    (
                        ex.agent,
                        ex.task,
                        ex.duration.bounds,
                        ex.tokens_in.bounds,
                        ex.requests.bounds,
                        ex.snapshot(),
                    )
                )
            except Exception:
                rec.fault("scrape")
        return self._families(requests, executions, rec.fault)

    def _families(
        self, requests: list[Any], executions: list[Any], fault: Callable[[str], None]
    ) -> list[Metric]:
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

        def totals(key: tuple[str, str], snap: dict[str, Any]) -> bool:
            # The overflow series exists only to hold open-label overflow; its totals stay hidden.
            return not (key[0] == key[1] == "__overflow__" and not any(snap["outcomes"]))

        def requests_(key: tuple[str, str], db: Any, tb: Any, snap: dict[str, Any]) -> None:
            if totals(key, snap):
                c_requests.add_metric((*key, "success"), float(snap["outcomes"][0]))
                c_requests.add_metric((*key, "error"), float(snap["outcomes"][1]))

        def duration(key: tuple[str, str], db: Any, tb: Any, snap: dict[str, Any]) -> None:
            if totals(key, snap):
                h_duration.add_metric(key, *_buckets(db, snap["duration"]))

        def ttft(key: tuple[str, str], db: Any, tb: Any, snap: dict[str, Any]) -> None:
            if any(snap["ttft"][0]):
                h_ttft.add_metric(key, *_buckets(tb, snap["ttft"]))

        def tokens(key: tuple[str, str], db: Any, tb: Any, snap: dict[str, Any]) -> None:
            if totals(key, snap):
                for kind, count in zip(TOKEN_TYPES, snap["tokens"], strict=True):
                    c_tokens.add_metric((*key, kind), float(count))

        def cost(key: tuple[str, str], db: Any, tb: Any, snap: dict[str, Any]) -> None:
            if totals(key, snap):
                c_cost.add_metric(key, float(snap["cost"]))

        def limited(key: tuple[str, str], db: Any, tb: Any, snap: dict[str, Any]) -> None:
            if totals(key, snap):
                c_limited.add_metric(key, float(snap["rate_limited"]))

        def by(family: CounterMetricFamily, field: str) -> Callable[..., None]:
            def add(key: tuple[str, str], db: Any, tb: Any, snap: dict[str, Any]) -> None:
                for label, count in snap[field].items():
                    family.add_metric(
                        (*key, *(label if isinstance(label, tuple) else (label,))), float(count)
                    )

            return add

        request_families: list[tuple[Metric, Callable[..., None]]] = [
            (c_requests, requests_), (h_duration, duration), (h_ttft, ttft), (c_tokens, tokens),
            (c_cost, cost), (c_errors, by(c_errors, "errors")), (c_stops, by(c_stops, "stops")),
            (c_code, by(c_code, "code")), (c_retries, by(c_retries, "retries")), (c_limited, limited),
        ]  # fmt: skip

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

        def execs(key: tuple[str, str], db: Any, tkb: Any, rb: Any, snap: dict[str, Any]) -> None:
            c_execs.add_metric((*key, "success"), float(snap["outcomes"][0]))
            c_execs.add_metric((*key, "error"), float(snap["outcomes"][1]))

        def exec_duration(key: tuple[str, str], db: Any, tkb: Any, rb: Any, snap: dict[str, Any]) -> None:
            h_exec.add_metric(key, *_buckets(db, snap["duration"]))

        def exec_tokens(key: tuple[str, str], db: Any, tkb: Any, rb: Any, snap: dict[str, Any]) -> None:
            h_tokens.add_metric((*key, "input"), *_buckets(tkb, snap["tokens_in"]))
            h_tokens.add_metric((*key, "output"), *_buckets(tkb, snap["tokens_out"]))

        def exec_turns(key: tuple[str, str], db: Any, tkb: Any, rb: Any, snap: dict[str, Any]) -> None:
            h_turns.add_metric(key, *_buckets(rb, snap["requests"]))

        exec_families: list[tuple[Metric, Callable[..., None]]] = [
            (c_execs, execs), (h_exec, exec_duration), (h_tokens, exec_tokens), (h_turns, exec_turns),
        ]  # fmt: skip

        out: list[Metric] = []
        for families, rows in ((request_families, requests), (exec_families, executions)):
            for family, add in families:
                try:
                    for first, second, *rest in rows:
                        add((first, second), *rest)
                except Exception:
                    fault("scrape")
                    continue
                out.append(family)
        return out
